#!/usr/bin/env bash
# What the access log costs on the CPU: the sidecar `run` in the session-token flow with
# one token (every request a verified-cache hit) in front of an nginx backend, its stdout
# a pipe read by `cat` (to /dev/null), at `log.level = "error"` (no access log) and at
# `info` (one JSON line per request), alternating ROUNDS times in one run. Each run is
# `wrk -tTHREADS -cCONNECTIONS` for DURATION after a 2 s warm-up; CPU per request is the
# sidecar's user + system time over wrk's request count.
#
#   bash benches/access_log.sh BINARY   (DURATION=10s CONNECTIONS=32 THREADS=1 ROUNDS=3)
#
# STDOUT=null sends stdout to /dev/null instead of the pipe. VARIANTS (default
# "error info") names what each round measures: a log level, or `otlp`, which is `info`
# with spans exported (`tracing.otlp_endpoint`) to an OTLP/HTTP receiver started here, so
# `VARIANTS="info otlp"` gives what exporting traces costs.
#
# Prints one "LEVEL req/s CPU/request" line per run. CPU time, unlike callgrind's
# instruction counts, moves with whatever else the machine runs: compare runs of one
# invocation only. Installs wrk and nginx-light from Debian when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$(realpath "$1")"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-1}"
ROUNDS="${ROUNDS:-3}"
BACKEND_PORT=38080 INGRESS_PORT=38082 ADMIN_PORT=38083 OTLP_PORT=38094
EMULATOR_PORT=38090 JTL_INGRESS_PORT=38092 JTL_ADMIN_PORT=38093
source benches/lib.sh
need_debian wrk wrk
need_debian nginx nginx-light
WORK="$(mktemp -d)"
SIDECAR_PID="" JTL_PID="" OTLP_PID=""
stop_sidecar() {
  [ -n "$SIDECAR_PID" ] && { kill "$SIDECAR_PID" 2>/dev/null || true; wait "$SIDECAR_PID" 2>/dev/null || true; }
  SIDECAR_PID=""
}
cleanup() {
  stop_sidecar
  [ -n "$OTLP_PID" ] && { kill "$OTLP_PID" 2>/dev/null || true; wait "$OTLP_PID" 2>/dev/null || true; }
  [ -n "$JTL_PID" ] && { kill "$JTL_PID" 2>/dev/null || true; wait "$JTL_PID" 2>/dev/null || true; }
  nginx -p "$WORK/backend" -c "$WORK/backend/nginx.conf" -s stop 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

nginx_backend "$WORK/backend" "$BACKEND_PORT"
start_jtl "$BIN" "$EMULATOR_PORT" "$JTL_INGRESS_PORT" "$JTL_ADMIN_PORT" "http://127.0.0.1:$BACKEND_PORT"
tokens_lua "$WORK/tokens.lua"
mint "$EMULATOR_PORT" 1 "$WORK/one.txt"
URL="http://127.0.0.1:$INGRESS_PORT/bench"

# measure VARIANT: one run at `log.level = VARIANT`, or (`otlp`) at info with spans exported.
measure() {
  local level="$1" user_before system_before user system out requests rps
  [ "$1" = otlp ] && level=info
  LOG_LEVEL="$level" sidecar_toml "$WORK/sidecar.toml" session "$INGRESS_PORT" "$ADMIN_PORT" "http://127.0.0.1:$BACKEND_PORT" "$EMULATOR_PORT"
  if [ "$1" = otlp ]; then
    [ -n "$OTLP_PID" ] || otlp_receiver "$OTLP_PORT" "$WORK/otlp.log"
    printf '\n[tracing]\notlp_endpoint = "http://127.0.0.1:%s"\n' "$OTLP_PORT" >>"$WORK/sidecar.toml"
  fi
  rm -f "$WORK/sidecar.toml.db"
  local stdout=/dev/null
  if [ "${STDOUT:-pipe}" = pipe ]; then
    stdout="$WORK/stdout"
    rm -f "$stdout"
    mkfifo "$stdout"
    cat "$stdout" >/dev/null &
  fi
  "$BIN" run --config "$WORK/sidecar.toml" >"$stdout" 2>"$WORK/sidecar.err" &
  SIDECAR_PID=$!
  wait_ready "http://127.0.0.1:$ADMIN_PORT/readyz" "the sidecar"
  TOKENS_FILE="$WORK/one.txt" wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -s "$WORK/tokens.lua" "$URL" >/dev/null
  user_before="$(CPU_FIELDS=14 cpu_ticks "$SIDECAR_PID")"
  system_before="$(CPU_FIELDS=15 cpu_ticks "$SIDECAR_PID")"
  out="$(TOKENS_FILE="$WORK/one.txt" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$WORK/tokens.lua" "$URL")"
  user=$(( $(CPU_FIELDS=14 cpu_ticks "$SIDECAR_PID") - user_before ))
  system=$(( $(CPU_FIELDS=15 cpu_ticks "$SIDECAR_PID") - system_before ))
  stop_sidecar
  if grep -q Non-2xx <<<"$out"; then
    echo "error: non-2xx answers at $1" >&2
    echo "$out" >&2
    exit 1
  fi
  requests="$(awk '/requests in/ {print $1}' <<<"$out")"
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  per_request() { awk -v t="$1" -v hz="$(getconf CLK_TCK)" -v n="$requests" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}'; }
  printf '%-6s %10s req/s   CPU/request %s µs (user %s, system %s)\n' "$1" "$rps" \
    "$(per_request $(( user + system )))" "$(per_request "$user")" "$(per_request "$system")"
}

for _ in $(seq 1 "$ROUNDS"); do
  for variant in ${VARIANTS:-error info}; do
    measure "$variant"
  done
done
