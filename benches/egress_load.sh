#!/usr/bin/env bash
# Egress under load, two builds of the sidecar in one run: the backend's `GET /bench`
# through the egress listener to JTL's API (the emulator's echo, one `dev` process shared
# by both), with `X-Tenant-ID` and the app's own token (ACT_AS=user:42 adds X-JTL-Act-As).
# Each build runs ROUNDS times, alternating, at the default config (log level info,
# stdout a pipe that `cat` reads); prints requests/s and the sidecar's CPU per request.
#
#   bash benches/egress_load.sh BEFORE_BINARY AFTER_BINARY
#   (DURATION=10s CONNECTIONS=32 ROUNDS=3; JTL_BIN: whose `dev` plays JTL, default AFTER)
#
# Installs wrk from Debian when missing. Only 127.0.0.1 is used.
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE="$(realpath "$1")"
AFTER="$(realpath "$2")"
JTL_BIN="$(realpath "${JTL_BIN:-$2}")"
DURATION="${DURATION:-10s}" CONNECTIONS="${CONNECTIONS:-32}" ROUNDS="${ROUNDS:-3}"
EGRESS_PORT=38081 INGRESS_PORT=38082 ADMIN_PORT=38083
EMULATOR_PORT=38090 JTL_INGRESS_PORT=38092 JTL_ADMIN_PORT=38093
source benches/lib.sh
need_debian wrk wrk
WORK="$(mktemp -d)"
SIDECAR_PID="" JTL_PID="" CAT_PID=""
stop_sidecar() {
  [ -n "$SIDECAR_PID" ] && { kill "$SIDECAR_PID" 2>/dev/null || true; wait "$SIDECAR_PID" 2>/dev/null || true; }
  [ -n "$CAT_PID" ] && { wait "$CAT_PID" 2>/dev/null || true; }
  SIDECAR_PID="" CAT_PID=""
  rm -f "$WORK/stdout"
}
cleanup() {
  stop_sidecar
  [ -n "$JTL_PID" ] && { kill "$JTL_PID" 2>/dev/null || true; wait "$JTL_PID" 2>/dev/null || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT

start_jtl "$JTL_BIN" "$EMULATOR_PORT" "$JTL_INGRESS_PORT" "$JTL_ADMIN_PORT" "http://127.0.0.1:1"
export EGRESS_LISTEN="127.0.0.1:$EGRESS_PORT"
sidecar_toml "$WORK/sidecar.toml" session "$INGRESS_PORT" "$ADMIN_PORT" "http://127.0.0.1:1" "$EMULATOR_PORT"
HEADERS=(-H "X-Tenant-ID: 0b4f7c2e-6a1d-4e8b-9c3f-2d5a7e9b1c40")
if [ -n "${ACT_AS:-}" ]; then HEADERS+=(-H "X-JTL-Act-As: $ACT_AS"); fi
URL="http://127.0.0.1:$EGRESS_PORT/bench"

# measure LABEL BINARY: one round of one build.
measure() {
  mkfifo "$WORK/stdout"
  cat "$WORK/stdout" >/dev/null &
  CAT_PID=$!
  "$2" run --config "$WORK/sidecar.toml" >"$WORK/stdout" 2>"$WORK/sidecar.err" &
  SIDECAR_PID=$!
  wait_ready "http://127.0.0.1:$ADMIN_PORT/readyz" "the sidecar ($1)"
  wrk -t1 -c"$CONNECTIONS" -d3s "${HEADERS[@]}" "$URL" >/dev/null
  local before after
  before="$(cpu_ticks "$SIDECAR_PID")"
  wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "${HEADERS[@]}" "$URL" >"$WORK/wrk.txt"
  after="$(cpu_ticks "$SIDECAR_PID")"
  if grep -q Non-2xx "$WORK/wrk.txt"; then
    echo "error: non-2xx answers ($1)" >&2
    cat "$WORK/wrk.txt" >&2
    exit 1
  fi
  local requests rps
  requests="$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")"
  rps="$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt")"
  awk -v label="$1" -v rps="$rps" -v t=$(( after - before )) -v hz="$(getconf CLK_TCK)" -v n="$requests" \
    'BEGIN {printf "%-8s %10s req/s   CPU/request %.1f µs\n", label, rps, t / hz * 1e6 / n}'
  stop_sidecar
}

for round in $(seq 1 "$ROUNDS"); do
  measure before "$BEFORE"
  measure after "$AFTER"
done
