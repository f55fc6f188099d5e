#!/usr/bin/env bash
# Anonymous memory per proxied connection pair (a client connection with its upstream
# connection), over loopback.
#
#   bash benches/memory.sh [BINARY...]     (default: target/release/jtl-auth-sidecar)
#
# For each binary: the sidecar (`run`, one reused session token, so every request is a
# verified-cache hit) in front of an nginx `return 200` backend, driven by wrk at 16, 64
# and 256 connections for DURATION each, one process for the three runs. RssAnon is
# sampled every 0.1 s; per-pair memory is the slope between the peaks at 16 and 256
# connections. Also prints the peak RSS (VmHWM). Extra environment for the sidecar (for
# example MALLOC_ARENA_MAX=1) passes through. Installs wrk and nginx from Debian when
# missing. Only 127.0.0.1 is used; ports 18880-18893.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-4s}"
BACKEND_PORT=18880 INGRESS_PORT=18882 ADMIN_PORT=18883 EMULATOR_PORT=18890
JTL_INGRESS_PORT=18892 JTL_ADMIN_PORT=18891

# shellcheck source=benches/lib.sh
source benches/lib.sh
need_debian wrk wrk
need_debian nginx nginx-light
if [ "$#" -eq 0 ]; then
  cargo build --release --locked --quiet
  set -- "$PWD/target/release/jtl-auth-sidecar"
fi

WORK="$(mktemp -d)"
JTL_PID="" SIDECAR_PID=""
cleanup() {
  [ -n "$SIDECAR_PID" ] && kill "$SIDECAR_PID" 2>/dev/null
  [ -n "$JTL_PID" ] && kill "$JTL_PID" 2>/dev/null
  nginx -p "$WORK" -c "$WORK/nginx.conf" -s stop 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

nginx_backend "$WORK" "$BACKEND_PORT" 1
start_jtl "$1" "$EMULATOR_PORT" "$JTL_INGRESS_PORT" "$JTL_ADMIN_PORT" "http://127.0.0.1:$BACKEND_PORT"
mint "$EMULATOR_PORT" 1 "$WORK/token"
sidecar_toml "$WORK/sidecar.toml" session "$INGRESS_PORT" "$ADMIN_PORT" "http://127.0.0.1:$BACKEND_PORT" "$EMULATOR_PORT"
tokens_lua "$WORK/token.lua"

anon_kb() { awk '/RssAnon/ {print $2}' "/proc/$SIDECAR_PID/status"; }
for binary in "$@"; do
  "$binary" run --config "$WORK/sidecar.toml" > "$WORK/sidecar.out" 2> "$WORK/sidecar.err" &
  SIDECAR_PID=$!
  wait_ready "http://127.0.0.1:$ADMIN_PORT/readyz" "the sidecar" || { cat "$WORK/sidecar.err" >&2; exit 1; }
  line="$(basename "$binary"): idle $(anon_kb) kB"
  declare -A peak=()
  for connections in 16 64 256; do
    TOKENS_FILE="$WORK/token" wrk -t2 -c"$connections" -d"$DURATION" -s "$WORK/token.lua" "http://127.0.0.1:$INGRESS_PORT/bench" > "$WORK/wrk.out" &
    wrk_pid=$! max=0
    while kill -0 "$wrk_pid" 2>/dev/null; do
      now="$(anon_kb)"; [ "$now" -gt "$max" ] && max="$now"; sleep 0.1
    done
    if grep -q Non-2xx "$WORK/wrk.out"; then
      echo "error: non-2xx answers at $connections connections" >&2; cat "$WORK/wrk.out" >&2
      curl -s -i -H "Authorization: Bearer $(cat "$WORK/token")" "http://127.0.0.1:$INGRESS_PORT/bench" >&2; exit 1
    fi
    peak[$connections]="$max"
    line="$line, $connections conns $max kB"
  done
  echo "$line; per connection pair $(( (peak[256] - peak[16]) / 240 )) kB;" \
    "peak RSS $(awk '/VmHWM/ {print $2}' "/proc/$SIDECAR_PID/status") kB;" \
    "$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.out") req/s at 256"
  kill "$SIDECAR_PID"; wait "$SIDECAR_PID" 2>/dev/null || true; SIDECAR_PID=""
  while curl -s "http://127.0.0.1:$ADMIN_PORT/healthz" >/dev/null 2>&1; do sleep 0.2; done
done
