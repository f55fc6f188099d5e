#!/usr/bin/env python3
"""Checks the Kubernetes example against what the sidecar needs (deploy/validate.sh step 3).

For every workload that runs the sidecar: the config it would read (the ConfigMap's
config.toml plus the container's JTL_SIDECAR_* env, secrets taken from the Secrets of
secrets.example.yaml) passes `jtl-auth-sidecar check` once the placeholder app id
`"<your app id>"` is replaced, and is refused while it is not; a ConfigMap may come in
variants of the same name (move-to-app-tokens/ over common/), which differ only in
[session], and each is checked; probes, security context,
resources, grace period and scrape annotations are as docs/operations.md says; the files the config
names (client secret, Redis password) come from a mounted Secret; a backend preStop that
drains sends the token of admin.drain_token_file from an emptyDir both containers mount;
and no Service
exposes anything but the ingress port. Usage: check_manifests.py BINARY MANIFEST_DIR
"""
import os
import pathlib
import posixpath
import subprocess
import sys
import tempfile

import yaml

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

binary, root = sys.argv[1], pathlib.Path(sys.argv[2])
problems = []
docs = []
for path in sorted(root.rglob("*.yaml")):
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            docs.append((path.relative_to(root), doc))

secrets = {d["metadata"]["name"]: d.get("stringData", {}) for _, d in docs if d["kind"] == "Secret"}
# name -> [(file, data)]: a ConfigMap of the same name in another directory is a variant
# applied over the first (move-to-app-tokens/ over common/).
configmaps = {}
for p, d in docs:
    if d["kind"] == "ConfigMap":
        configmaps.setdefault(d["metadata"]["name"], []).append((p, d.get("data", {})))
services = [(p, d) for p, d in docs if d["kind"] == "Service"]
pdbs = [d for _, d in docs if d["kind"] == "PodDisruptionBudget"]
# The environment of `check`: ours, without any JTL_SIDECAR_ variable of the caller.
base_env = {k: v for k, v in os.environ.items() if not k.startswith("JTL_SIDECAR_")}


def fail(where, what):
    problems.append(f"{where}: {what}")


# The examples ship the app id as a placeholder, which `check` refuses until it is
# replaced; the checks replace it with an id of JTL's shape (digits, as Zitadel's).
PLACEHOLDER_APP_ID = '"<your app id>"'
EXAMPLE_APP_ID = '"312909075212468632"'


def run_check(toml_text, env):
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(toml_text)
    try:
        return subprocess.run([binary, "check", "--config", f.name], env={**base_env, **env},
                              capture_output=True, text=True)
    finally:
        os.unlink(f.name)


def check_config(where, toml_text, env):
    names = ", ".join(sorted(env)) or "no env"
    if PLACEHOLDER_APP_ID in toml_text:
        # As shipped: refused, naming session.audience, so an unedited example never runs.
        run = run_check(toml_text, env)
        if run.returncode != 2 or "session.audience" not in run.stderr:
            fail(where, f"`jtl-auth-sidecar check` should refuse the placeholder session.audience "
                        f"{PLACEHOLDER_APP_ID} (exit 2, naming session.audience), but exited "
                        f"{run.returncode} ({names}):\n{run.stderr.strip()}")
        else:
            print(f"  placeholder refused: {where} ({names})")
        toml_text = toml_text.replace(PLACEHOLDER_APP_ID, EXAMPLE_APP_ID)
    run = run_check(toml_text, env)
    if run.returncode != 0:
        fail(where, f"`jtl-auth-sidecar check` failed ({names}):\n{run.stderr.strip()}")
    else:
        print(f"  check ok: {where} ({names})")


def without_session(toml_text):
    config = tomllib.loads(toml_text)
    config.pop("session", None)
    return config


def port_of(listen):
    return int(listen.rsplit(":", 1)[1])


for name, variants in configmaps.items():
    texts = [(p, data["config.toml"]) for p, data in variants if "config.toml" in data]
    for p, text in texts:
        check_config(f"ConfigMap {name} ({p})", text, {})
    # The policies below read the first variant (ports, files, grace); the others may
    # change only [session] (the token flow), so they hold for every variant.
    if tomllib and len(texts) > 1:
        first_path, first = texts[0]
        for p, text in texts[1:]:
            if without_session(text) != without_session(first):
                fail(f"ConfigMap {name} ({p})", f"differs from {first_path} outside [session]")

sidecar_ports = set()
ingress_ports = set()
for path, doc in docs:
    if doc["kind"] not in ("Deployment", "StatefulSet", "DaemonSet"):
        continue
    where = f"{path} {doc['kind']} {doc['metadata']['name']}"
    pod = doc["spec"]["template"]
    spec = pod["spec"]
    containers = spec.get("initContainers", []) + spec["containers"]
    for c in containers:
        sc = c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(where, f"{c['name']}: allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            fail(where, f"{c['name']}: readOnlyRootFilesystem must be true")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            fail(where, f"{c['name']}: capabilities must drop ALL")
        if "limits" not in c.get("resources", {}) or "requests" not in c.get("resources", {}):
            fail(where, f"{c['name']}: needs resource requests and limits")
    if spec.get("securityContext", {}).get("runAsNonRoot") is not True:
        fail(where, "pod securityContext.runAsNonRoot must be true")
    sidecars = [c for c in containers if "jtl-auth-sidecar" in c.get("image", "")]
    if not sidecars:
        continue
    if len(sidecars) != 1:
        fail(where, "expected one jtl-auth-sidecar container")
        continue
    sidecar = sidecars[0]
    native = sidecar in spec.get("initContainers", [])
    if native and sidecar.get("restartPolicy") != "Always":
        fail(where, "a sidecar in initContainers needs restartPolicy: Always")
    if not native and "no-native-sidecar" not in str(path):
        fail(where, "the sidecar should be a native sidecar (initContainers, restartPolicy: Always)")

    # The config the pod reads: the ConfigMap in its volumes (each variant of it), plus
    # the container's env.
    cm_names = []
    for v in spec.get("volumes", []):
        if "configMap" in v:
            cm_names.append(v["configMap"]["name"])
        for src in v.get("projected", {}).get("sources", []):
            if "configMap" in src:
                cm_names.append(src["configMap"]["name"])
    with_config = [n for n in cm_names
                   if any("config.toml" in data for _, data in configmaps.get(n, []))]
    if len(with_config) != 1:
        fail(where, f"expected one ConfigMap with config.toml among its volumes, found {len(with_config)}")
        continue
    variants = [(p, data["config.toml"]) for p, data in configmaps[with_config[0]]
                if "config.toml" in data]
    toml_texts = [variants[0][1]]
    env = {}
    for e in sidecar.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            if ref["key"] not in secrets.get(ref["name"], {}):
                fail(where, f"env {e['name']}: Secret {ref['name']} key {ref['key']} is not in secrets.example.yaml")
                continue
            env[e["name"]] = secrets[ref["name"]][ref["key"]]
    for p, text in variants:
        check_config(f"{where} with {p}", text, env)

    # Files the config names (the client secret, the Redis password) come from a Secret of
    # secrets.example.yaml mounted into the sidecar.
    mounted = {}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for m in sidecar.get("volumeMounts", []):
        v = volumes.get(m["name"], {})
        sources = [s["secret"] for s in v.get("projected", {}).get("sources", []) if "secret" in s]
        if "secret" in v:
            sources.append({"name": v["secret"]["secretName"], "items": v["secret"].get("items", [])})
        for src in sources:
            for item in src.get("items", []):
                mounted[f"{m['mountPath'].rstrip('/')}/{item['path']}"] = (src["name"], item["key"])
    file_config = tomllib.loads(toml_texts[0]) if tomllib else {}
    named = {
        "jtl.client_secret_file": file_config.get("jtl", {}).get("client_secret_file", ""),
        "shared_cache.redis_password_file": env.get(
            "JTL_SIDECAR_SHARED_CACHE__REDIS_PASSWORD_FILE",
            file_config.get("shared_cache", {}).get("redis_password_file", "")),
    }
    for key, file in named.items():
        if not file:
            continue
        if file not in mounted:
            fail(where, f"{key} {file} is not a file of a Secret mounted into the sidecar")
        elif mounted[file][1] not in secrets.get(mounted[file][0], {}):
            fail(where, f"{key} {file}: Secret {mounted[file][0]} key {mounted[file][1]} is not in secrets.example.yaml")
        else:
            print(f"  file ok: {where} {key} from Secret {mounted[file][0]} key {mounted[file][1]}")

    # Ports, probes, grace period: from the config, and the defaults of config/example.toml.
    config = tomllib.loads(toml_texts[0]) if tomllib else {}
    ingress_port = port_of(config.get("ingress", {}).get("listen", "0.0.0.0:8080"))
    admin_port = port_of(config.get("admin", {}).get("listen", "0.0.0.0:9090"))
    egress_listen = config.get("egress", {}).get("listen", "127.0.0.1:8081")
    grace = int(env.get("JTL_SIDECAR_SERVER__SHUTDOWN_GRACE_S",
                        config.get("server", {}).get("shutdown_grace_s", 20)))
    ports = {p.get("name"): p["containerPort"] for p in sidecar.get("ports", [])}
    sidecar_ports.update(ports.items())
    ingress_ports.add(ingress_port)
    if set(ports.values()) != {ingress_port, admin_port}:
        fail(where, f"sidecar ports {sorted(ports.values())} should be exactly ingress {ingress_port} and admin {admin_port}")
    if egress_listen and port_of(egress_listen) in ports.values():
        fail(where, "the egress port must not be a container port")

    def probe_target(probe_name):
        probe = sidecar.get(probe_name, {}).get("httpGet", {})
        port = probe.get("port")
        return probe.get("path"), ports.get(port, port)

    for probe_name, path_expected in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                                      ("startupProbe", "/healthz")):
        if probe_target(probe_name) != (path_expected, admin_port):
            fail(where, f"{probe_name} should GET {path_expected} on the admin port {admin_port}")
    delay = int(env.get("JTL_SIDECAR_SERVER__SHUTDOWN_DELAY_S",
                        config.get("server", {}).get("shutdown_delay_s", 0)))
    tgps = spec.get("terminationGracePeriodSeconds", 30)
    if tgps <= grace + delay:
        fail(where, f"terminationGracePeriodSeconds {tgps} must exceed server.shutdown_delay_s {delay} + shutdown_grace_s {grace}")
    # Rollouts behind a Service (which does not retry): keep-alive clients must be told to
    # leave before the backend stops. Native sidecars get SIGTERM after the backend exits,
    # so the backend's preStop must POST /drain; plain containers get SIGTERM at once and
    # need a shutdown delay.
    backends = [c for c in pod["spec"].get("containers", []) if c is not sidecar]
    pre_stops = [str(c.get("lifecycle", {}).get("preStop", {})) for c in backends]
    if native and not any("/drain" in p for p in pre_stops):
        fail(where, "with a native sidecar the backend's preStop must POST /drain to the sidecar's admin port")
    # POST /drain needs the token the sidecar writes to admin.drain_token_file: the
    # preStop sends it, read from a volume of this pod that both containers mount.
    drain_file = env.get("JTL_SIDECAR_ADMIN__DRAIN_TOKEN_FILE",
                         file_config.get("admin", {}).get("drain_token_file", ""))
    for backend in backends:
        pre_stop = str(backend.get("lifecycle", {}).get("preStop", {}))
        if "/drain" not in pre_stop:
            continue
        if not drain_file:
            fail(where, f"{backend['name']}: the preStop POSTs /drain, but admin.drain_token_file is not set, so every drain is refused")
            continue
        if "Authorization: Bearer" not in pre_stop or drain_file not in pre_stop:
            fail(where, f"{backend['name']}: the preStop must send Authorization: Bearer with the token read from {drain_file}")
        directory = posixpath.dirname(drain_file)

        def volume_at(container):
            for m in container.get("volumeMounts", []):
                if m["mountPath"].rstrip("/") == directory:
                    return m
            return None

        theirs, ours = volume_at(sidecar), volume_at(backend)
        if not theirs or theirs.get("readOnly"):
            fail(where, f"the sidecar must mount a writable volume at {directory} for admin.drain_token_file")
        elif not ours or ours["name"] != theirs["name"]:
            fail(where, f"{backend['name']}: must mount the sidecar's volume {theirs['name']} at {directory} to read the drain token")
        elif "emptyDir" not in volumes.get(theirs["name"], {}):
            fail(where, f"volume {theirs['name']} (the drain token) must be an emptyDir: only this pod's containers may read it")
        elif "fsGroup" not in spec.get("securityContext", {}):
            fail(where, "the pod needs securityContext.fsGroup, so the backend can read the drain token (mode 0640)")
        else:
            print(f"  drain ok: {where} {backend['name']} sends the token of {drain_file} (volume {theirs['name']})")
    if not native and delay == 0:
        fail(where, "with the sidecar as a plain container, server.shutdown_delay_s must be above 0")
    annotations = pod["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/port") != str(admin_port):
        fail(where, "pod needs prometheus.io/scrape \"true\" and prometheus.io/port of the admin port")
    labels = pod["metadata"]["labels"]
    if not any(all(labels.get(k) == v for k, v in p["spec"]["selector"]["matchLabels"].items()) for p in pdbs):
        fail(where, "no PodDisruptionBudget selects these pods")
    print(f"  policy ok: {where} ({'native sidecar' if native else 'plain container'}, grace {tgps}s > {grace}s)")

# Services in front of the sidecar: the ingress port only.
for path, svc in services:
    if svc["spec"]["selector"].get("app.kubernetes.io/name") != "jtl-app":
        continue
    before = len(problems)
    for p in svc["spec"]["ports"]:
        target = p.get("targetPort", p["port"])
        resolved = dict(sidecar_ports).get(target, target)
        if resolved not in ingress_ports:
            fail(f"{path} Service {svc['metadata']['name']}", f"port {p['port']} targets {target}: only the ingress port may be exposed")
    if len(problems) == before:
        print(f"  service ok: {path} Service {svc['metadata']['name']} (ingress port only)")

if problems:
    print("\n".join(["", "manifest problems:"] + problems), file=sys.stderr)
    sys.exit(1)
