#!/usr/bin/env bash
# The published comparison (issue 17): the sidecar and what a user would run instead of it,
# in one run, against the same nginx `return 200` backend and the same emulator-minted
# tokens, over loopback.
#
#   bash benches/peers/run.sh     (DURATION=10s CONNS="32 256" TOKENS=20000
#                                  RATE=1000 RATE_CONNS=32 RATE_DURATION=10s;
#                                  RING_ED25519_US=… RING_RSA_US=… skip the ring benchmark)
#
# Setups (each alone on the machine while measured):
#   backend_direct              wrk straight at the backend (the latency baseline)
#   nginx_proxy_pass            nginx forwarding with upstream keep-alive; checks nothing (the floor)
#   sidecar_cache_hit           the sidecar, one token over and over (verified-cache hit)
#   sidecar_full_verification   the sidecar, cache off, TOKENS distinct tokens
#   axum_jwt_authorizer         axum 0.7 + jwt-authorizer 0.15 (benches/peers/axum-jwt)
#   node_jose                   node:http + jose, the guide's code (benches/peers/node-jose)
#   haproxy_jwt_verify          HAProxy 2.6's jwt_verify (app-token flow only: it has no EdDSA)
# in both flows: session tokens (EdDSA) and app tokens (RS256). Every setup but the
# sidecar's cache hit gets TOKENS distinct tokens, so each request is fully verified;
# before it is measured, each verifying setup must answer a valid token 200 and the same
# token with a broken signature 401.
#
# Per setup: wrk -t2 at each of CONNS for DURATION after a 2 s warm-up (requests/s, p50,
# p99, CPU per request of the setup's own processes from /proc/PID/stat (and of it the
# user-space part; the rest is the kernel's loopback TCP), peak RSS from
# VmHWM reset before the run, and of it the file-backed pages: the binary and libraries
# mapped), then oha at a fixed RATE with --latency-correction (one
# token: oha sends one fixed header, so the sidecar's full-verification setup verifies
# that token every time with its cache off). Also one core's ring verify times (criterion).
#
# Writes benches/peers/results/{runs.jsonl,meta.json} and, through report.py,
# results.md and the SVG plots. Installs wrk, nginx, haproxy (Debian), oha (crates.io),
# jose (npm) and matplotlib (PyPI) when missing. Ports 19100-19112 on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/lib.sh
source benches/lib.sh

DURATION="${DURATION:-10s}" CONNS="${CONNS:-32 256}" TOKENS="${TOKENS:-20000}"
RATE="${RATE:-1000}" RATE_CONNS="${RATE_CONNS:-32}" RATE_DURATION="${RATE_DURATION:-10s}"
OUT="${OUT:-benches/peers/results}"
BACKEND_PORT=19100 PROXY_PORT=19101 ADMIN_PORT=19102
EMULATOR_PORT=19110 JTL_INGRESS_PORT=19111 JTL_ADMIN_PORT=19112
EMULATOR="http://127.0.0.1:$EMULATOR_PORT" BACKEND="http://127.0.0.1:$BACKEND_PORT"
PROXY="http://127.0.0.1:$PROXY_PORT"
APP_ID=312909075212468632

need_debian wrk wrk
need_debian nginx nginx-light
need_debian haproxy haproxy
need_debian node nodejs npm
TOOLS="$PWD/target/peers/tools"
OHA="$(command -v oha || echo "$TOOLS/bin/oha")"
if [ ! -x "$OHA" ]; then
  echo "== installing oha from crates.io"
  cargo install --quiet --locked oha --version '^1.16' --root "$TOOLS"
fi

echo "== building the sidecar and the peers"
cargo build --release --locked --quiet --bin jtl-auth-sidecar
BIN="$PWD/target/release/jtl-auth-sidecar"
cargo build --release --locked --quiet --manifest-path benches/peers/axum-jwt/Cargo.toml \
  --target-dir target/peers/axum-jwt
AXUM="$PWD/target/peers/axum-jwt/release/peer-axum-jwt"
[ -d benches/peers/node-jose/node_modules/jose ] || (cd benches/peers/node-jose && npm ci --no-audit --no-fund --silent)

ring_verify_times

WORK="$(mktemp -d)"
JTL_PID="" SETUP_PIDS=() SETUP_KIND=""
cleanup() {
  stop_setup
  if [ -n "$JTL_PID" ]; then kill "$JTL_PID" 2>/dev/null || true; fi
  nginx -p "$WORK/backend" -c "$WORK/backend/nginx.conf" -s stop 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

nginx_backend "$WORK/backend" "$BACKEND_PORT" 1
start_jtl "$BIN" "$EMULATOR_PORT" "$JTL_INGRESS_PORT" "$JTL_ADMIN_PORT" "$BACKEND"
tokens_lua "$WORK/tokens.lua"
for flow in session app-token; do
  kind=session-token; [ "$flow" = app-token ] && kind=app-token
  mint "$EMULATOR_PORT" 1 "$WORK/$flow-one.txt" "$kind"
  mint "$EMULATOR_PORT" "$TOKENS" "$WORK/$flow-many.txt" "$kind"
  sidecar_toml "$WORK/sidecar-$flow.toml" "$flow" "$PROXY_PORT" "$ADMIN_PORT" "$BACKEND" "$EMULATOR_PORT"
done

# HAProxy's jwt_verify takes one PEM key, no key set: the app tokens' signing key, from the
# emulator's Zitadel key set (the JWK whose kid the tokens carry), and the access token
# fetched once, as the Rust peer does.
python3 - "$EMULATOR/oauth/v2/keys" "$(cut -d. -f1 "$WORK/app-token-one.txt")" > "$WORK/app-key.pem" <<'PY'
import base64, json, sys, urllib.request
def b64(s): return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
def der(tag, body):
    n = len(body)
    size = bytes([n]) if n < 128 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + size + body
def integer(b): return der(0x02, b"\x00" + b if b[0] & 0x80 else b)
kid = json.loads(b64(sys.argv[2]))["kid"]
key = next(k for k in json.load(urllib.request.urlopen(sys.argv[1]))["keys"] if k.get("kid") == kid)
rsa = der(0x30, integer(b64(key["n"])) + integer(b64(key["e"])))
spki = der(0x30, der(0x30, der(0x06, bytes.fromhex("2a864886f70d010101")) + b"\x05\x00") + der(0x03, b"\x00" + rsa))
text = base64.b64encode(spki).decode()
print("-----BEGIN PUBLIC KEY-----\n" + "\n".join(text[i:i + 64] for i in range(0, len(text), 64)) + "\n-----END PUBLIC KEY-----")
PY
APP_ACCESS_TOKEN="$(curl -sf -u emulated-client:emulated-secret -d grant_type=client_credentials -d scope=openid \
  "$EMULATOR/oauth/v2/token" | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')"

# The same checks as the sidecar's app-token flow where HAProxy 2.6 has them: alg RS256,
# iss, aud (its first entry: json_query has no "contains"), exp, the signature; then the
# identity headers and the access token, to a keep-alive backend.
DENY="http-request return status 401 content-type application/json string '{\"error\":\"invalid_token\"}'"
cat > "$WORK/haproxy.cfg" <<HAPROXY
global
  nbthread 2
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend ingress
  bind 127.0.0.1:$PROXY_PORT
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
  http-request set-var(txn.iss) var(txn.bearer),jwt_payload_query('\$.iss')
  http-request set-var(txn.aud) var(txn.bearer),jwt_payload_query('\$.aud[0]')
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
  http-request set-var(txn.now) date()
  $DENY unless { var(txn.alg) -m str RS256 } { var(txn.iss) -m str $EMULATOR } { var(txn.aud) -m str $APP_ID }
  $DENY if { var(txn.exp),sub(txn.now) -m int lt 1 }
  $DENY unless { var(txn.bearer),jwt_verify(txn.alg,"$WORK/app-key.pem") -m int 1 }
  http-request set-header X-Tenant-ID %[var(txn.bearer),jwt_payload_query('\$.urn:jtl:tenant_id')]
  http-request set-header X-User-ID %[var(txn.bearer),jwt_payload_query('\$.sub')]
  http-request set-header Authorization "Bearer $APP_ACCESS_TOKEN"
  default_backend app
backend app
  http-reuse always
  server backend 127.0.0.1:$BACKEND_PORT
HAPROXY
haproxy -c -q -f "$WORK/haproxy.cfg"

# start_setup NAME FLOW: starts the setup on PROXY_PORT (backend_direct: nothing) and sets
# SETUP_PIDS to the processes whose CPU and memory are its cost.
start_setup() {
  local name="$1" flow="$2" mode=session audience=()
  [ "$flow" = app-token ] && mode=app-token audience=("$APP_ID")
  SETUP_PIDS=() SETUP_KIND="$name"
  case "$name" in
    backend_direct) return 0 ;;
    nginx_proxy_pass)
      nginx_proxy "$WORK/nginx-proxy" "$PROXY_PORT" "$BACKEND_PORT"
      wait_ready "$PROXY/" nginx
      mapfile -t SETUP_PIDS < <(pgrep -P "$(cat "$WORK/nginx-proxy/nginx.pid")")
      return 0 ;;
    sidecar_cache_hit | sidecar_full_verification)
      local entries=100000
      [ "$name" = sidecar_full_verification ] && entries=0
      JTL_SIDECAR_SESSION__VERIFIED_CACHE_ENTRIES="$entries" \
        "$BIN" run --config "$WORK/sidecar-$flow.toml" > "$WORK/setup.out" 2> "$WORK/setup.err" &
      SETUP_PIDS=($!)
      wait_ready "http://127.0.0.1:$ADMIN_PORT/readyz" "$name" ;;
    axum_jwt_authorizer)
      "$AXUM" "$mode" "127.0.0.1:$PROXY_PORT" "$BACKEND" "$EMULATOR" "${audience[@]}" > "$WORK/setup.out" 2> "$WORK/setup.err" &
      SETUP_PIDS=($!) ;;
    node_jose)
      node benches/peers/node-jose/server.mjs "$mode" "$PROXY_PORT" "$BACKEND" "$EMULATOR" "${audience[@]}" \
        > "$WORK/setup.out" 2> "$WORK/setup.err" &
      SETUP_PIDS=($!) ;;
    haproxy_jwt_verify)
      haproxy -db -f "$WORK/haproxy.cfg" > "$WORK/setup.out" 2> "$WORK/setup.err" &
      SETUP_PIDS=($!) ;;
  esac
  # Ready when a valid token passes; and it must refuse the same token with a broken
  # signature, or it is not verifying.
  local token bad code _
  token="$(cat "$WORK/$flow-one.txt")"
  # A character ten from the end: the last one may carry only padding bits.
  local c="${token: -10:1}"
  bad="${token:0:${#token}-10}$([ "$c" = A ] && echo B || echo A)${token: -9}"
  for _ in $(seq 1 100); do
    code="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$PROXY/bench" || true)"
    [ "$code" = 200 ] && break
    sleep 0.1
  done
  if [ "$code" != 200 ]; then
    echo "error: $name ($flow) answered a valid token $code" >&2; cat "$WORK/setup.err" >&2; return 1
  fi
  code="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $bad" "$PROXY/bench")"
  if [ "$code" != 401 ]; then
    echo "error: $name ($flow) answered a token with a broken signature $code, not 401" >&2; return 1
  fi
}

stop_setup() {
  case "$SETUP_KIND" in
    "" | backend_direct) ;;
    nginx_proxy_pass) nginx -p "$WORK/nginx-proxy" -c "$WORK/nginx-proxy/nginx.conf" -s stop 2>/dev/null || true ;;
    *) kill "${SETUP_PIDS[@]}" 2>/dev/null || true; wait "${SETUP_PIDS[@]}" 2>/dev/null || true ;;
  esac
  SETUP_KIND="" SETUP_PIDS=()
  while curl -s -o /dev/null "$PROXY/" 2>/dev/null; do sleep 0.1; done
}

reset_peaks() { local pid; for pid in "${SETUP_PIDS[@]}"; do echo 5 > "/proc/$pid/clear_refs"; done; }
# status_kb FIELD: the sum of /proc/PID/status FIELD (VmHWM, RssFile, ...) over the setup's processes.
status_kb() {
  local total=0 pid
  for pid in "${SETUP_PIDS[@]}"; do total=$(( total + $(awk -v f="$1:" '$1 == f {print $2}' "/proc/$pid/status") )); done
  echo "$total"
}
# wrk's "1.23ms", "812.00us" or "1.02s", in ms.
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /[0-9]s$/ && v !~ /ms$/) n *= 1000; printf "%.3f", n }'; }

# measure NAME FLOW URL TOKENS_FILE: the wrk runs and the fixed-rate run of one setup,
# appended to runs.jsonl.
measure() {
  local name="$1" flow="$2" url="$3" tokens="$4" conns out before after before_user after_user requests errors
  for conns in $CONNS; do
    TOKENS_FILE="$tokens" wrk -t2 -c"$conns" -d2s -s "$WORK/tokens.lua" "$url" > /dev/null
    [ "${#SETUP_PIDS[@]}" -gt 0 ] && reset_peaks && before="$(cpu_ticks "${SETUP_PIDS[@]}")" \
      && before_user="$(CPU_FIELDS=14 cpu_ticks "${SETUP_PIDS[@]}")"
    out="$(TOKENS_FILE="$tokens" wrk -t2 -c"$conns" -d"$DURATION" --latency -s "$WORK/tokens.lua" "$url")"
    local cpu_us=null user_us=null rss_mb=null file_mb=null
    if [ "${#SETUP_PIDS[@]}" -gt 0 ]; then
      after="$(cpu_ticks "${SETUP_PIDS[@]}")"
      requests="$(awk '/requests in/ {print $1}' <<<"$out")"
      cpu_us="$(awk -v t=$(( after - before )) -v hz="$(getconf CLK_TCK)" -v n="$requests" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')"
      after_user="$(CPU_FIELDS=14 cpu_ticks "${SETUP_PIDS[@]}")"
      user_us="$(awk -v t=$(( after_user - before_user )) -v hz="$(getconf CLK_TCK)" -v n="$requests" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')"
      rss_mb="$(awk -v kb="$(status_kb VmHWM)" 'BEGIN {printf "%.1f", kb / 1024}')"
      file_mb="$(awk -v kb="$(status_kb RssFile)" 'BEGIN {printf "%.1f", kb / 1024}')"
    fi
    errors="$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}' <<<"$out")"
    local rps p50 p99
    rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
    p50="$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")"
    p99="$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")"
    printf '{"kind":"wrk","flow":"%s","setup":"%s","connections":%s,"rps":%s,"p50_ms":%s,"p99_ms":%s,"cpu_us_per_request":%s,"user_cpu_us_per_request":%s,"peak_rss_mb":%s,"rss_file_mb":%s,"errors":%s}\n' \
      "$flow" "$name" "$conns" "$rps" "$p50" "$p99" "$cpu_us" "$user_us" "$rss_mb" "$file_mb" "$errors" >> "$OUT/runs.jsonl"
    printf '  %-9s %-26s %4s conns %9s req/s  p50 %7s ms  p99 %7s ms  CPU %6s µs/req  peak RSS %6s MB  errors %s\n' \
      "$flow" "$name" "$conns" "$rps" "$p50" "$p99" "$cpu_us" "$rss_mb" "$errors"
  done
  "$OHA" -z "$RATE_DURATION" -c "$RATE_CONNS" -q "$RATE" --latency-correction --no-tui --output-format json \
    -H "Authorization: Bearer $(head -n 1 "$tokens")" "$url" > "$WORK/oha.json"
  python3 - "$flow" "$name" "$RATE" "$RATE_CONNS" "$WORK/oha.json" >> "$OUT/runs.jsonl" <<'PY'
import json, sys
flow, name, rate, conns, path = sys.argv[1:]
report = json.load(open(path))
ms = {k: round(v * 1000, 4) for k, v in report["latencyPercentiles"].items() if v is not None}
codes = report.get("statusCodeDistribution", {})
print(json.dumps({"kind": "fixed_rate", "flow": flow, "setup": name, "rate": int(rate), "connections": int(conns),
                  "rps": round(report["summary"]["requestsPerSec"], 1), "percentiles_ms": ms,
                  "non_200": sum(n for code, n in codes.items() if code != "200"),
                  # Requests still in flight when oha's -z deadline passes are not the setup's errors.
                  "errors": sum(n for kind, n in report.get("errorDistribution", {}).items() if "deadline" not in kind)}))
PY
  tail -n 1 "$OUT/runs.jsonl" | python3 -c '
import json, sys
r = json.load(sys.stdin)
p = r["percentiles_ms"]
print("  %-9s %-26s at %s req/s: p50 %s ms  p99 %s ms  p99.9 %s ms  non-200 %s"
      % (r["flow"], r["setup"], r["rate"], p["p50"], p["p99"], p["p99.9"], r["non_200"]))' 
}

mkdir -p "$OUT"
: > "$OUT/runs.jsonl"
echo "== $(nproc) cores; wrk -t2 at $CONNS connections for $DURATION; oha at $RATE req/s over $RATE_CONNS connections"
# run_setup NAME FLOW: start, measure, stop. The cache hit sends one token; every other
# setup sends TOKENS distinct tokens.
run_setup() {
  local url="$PROXY/bench" tokens="$WORK/${2/none/session}-many.txt"
  [ "$1" = backend_direct ] && url="$BACKEND/bench"
  [ "$1" = sidecar_cache_hit ] && tokens="$WORK/$2-one.txt"
  start_setup "$1" "$2"
  measure "$1" "$2" "$url" "$tokens"
  stop_setup
}
run_setup backend_direct none
run_setup nginx_proxy_pass none
for setup in sidecar_cache_hit sidecar_full_verification axum_jwt_authorizer node_jose; do
  run_setup "$setup" session
done
for setup in sidecar_cache_hit sidecar_full_verification axum_jwt_authorizer node_jose haproxy_jwt_verify; do
  run_setup "$setup" app-token
done

python3 - "$OUT/meta.json" <<PY
import json, platform, subprocess, sys
def out(*cmd):
    """What the command printed: stdout, or stderr where it prints its version there (nginx)."""
    try:
        run = subprocess.run(cmd, capture_output=True, text=True)
    except OSError:
        return ""
    return (run.stdout or run.stderr).strip()
def word(text, index):
    words = text.split()
    return words[index] if len(words) > index else ""
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
json.dump({
    "date": out("date", "-u", "+%Y-%m-%d %H:%M UTC"), "commit": out("git", "rev-parse", "--short", "HEAD"),
    "cpu": cpu, "cores": int(out("nproc")), "kernel": platform.release(),
    "duration": "$DURATION", "connections": "$CONNS".split(), "tokens": $TOKENS,
    "rate": $RATE, "rate_connections": $RATE_CONNS, "rate_duration": "$RATE_DURATION",
    "ring_ed25519_verify_us": $RING_ED25519_US, "ring_rsa2048_verify_us": $RING_RSA_US,
    "versions": {"nginx": out("nginx", "-v").split("/")[-1], "haproxy": word(out("haproxy", "-v"), 2),
                 "node": out("node", "-v"), "wrk": word(out("wrk", "-v"), 1),
                 "oha": word(out("$OHA", "--version"), -1)},
}, open(sys.argv[1], "w"), indent=2)
PY
VENV="$PWD/target/peers/venv"
if ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
  echo "== installing matplotlib from PyPI"
  python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet matplotlib
fi
"$VENV/bin/python" benches/peers/report.py "$OUT"
