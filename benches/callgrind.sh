#!/usr/bin/env bash
# Instructions per request of the whole proxy, under valgrind's callgrind: the sidecar
# `run` at the default log level (info: the access log on, stdout to /dev/null), in the
# session-token flow with one token (every request a verified-cache hit), in front of an
# nginx backend; `wrk -t1 -c32` for 10 s after a 3 s warm-up, the counters zeroed in
# between. Instructions are repeatable for one binary whatever else the machine does, so
# two builds can be compared on a busy machine.
#
#   bash benches/callgrind.sh BINARY [LABEL]   (e.g. target/release/jtl-auth-sidecar)
#
# LOG_LEVEL=error (or any `log.level`) measures at another level, e.g. without the access
# log; STDOUT=pipe sends the sidecar's stdout through `cat` to /dev/null instead.
#
# EGRESS=1 measures the egress listener instead: the backend's call through the sidecar
# to JTL's API (the emulator's API echo, which reports a large X-RateLimit-* budget, so the
# tenant is never limited) with the app's own token, `X-Tenant-ID` one UUID, no
# `X-JTL-Act-As` unless ACT_AS names a value for it (`user:42`: an on-behalf-of-user
# token, cached after the first request); the config names no egress key but `listen`, so
# older builds take it.
# OTLP=1 exports spans (tracing.otlp_endpoint) to a small OTLP/HTTP receiver started here
# (Python's http.server answering 200 to every POST); every request is sampled, and the
# export thread's instructions count too.
# JTL is the `dev` of BIN unless JTL_BIN names another build: to compare two builds of the
# sidecar, give both the same JTL_BIN so that JTL's answers are the same bytes.
#
# Valgrind counts each byte of a `rep movsb` as an instruction, and glibc's memcpy uses it
# from 2 112 bytes on (glibc 2.36 with AVX2): a future that grows past that (hyper moves the request's future)
# then counts far more than it costs on the CPU.
# GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=0x100000 keeps memcpy on its vector
# loop, for a count closer to the work done.
#
# Prints "LABEL requests=N Ir=N Ir/req=N"; the dump stays in benches/callgrind-out/LABEL/
# for callgrind_annotate. Installs wrk, nginx-light and valgrind from Debian when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$(realpath "$1")"
LABEL="${2:-run}"
JTL_BIN="$(realpath "${JTL_BIN:-$1}")"
BACKEND_PORT=28080 EGRESS_PORT=28081 INGRESS_PORT=28082 ADMIN_PORT=28083
EMULATOR_PORT=28090 JTL_INGRESS_PORT=28092 JTL_ADMIN_PORT=28093 OTLP_PORT=28094
source benches/lib.sh
need_debian wrk wrk
need_debian nginx nginx-light
need_debian valgrind valgrind
OUT="benches/callgrind-out/$LABEL"
rm -rf "$OUT"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
SIDECAR_PID="" JTL_PID="" OTLP_PID=""
cleanup() {
  [ -n "$OTLP_PID" ] && { kill "$OTLP_PID" 2>/dev/null || true; wait "$OTLP_PID" 2>/dev/null || true; }
  [ -n "$SIDECAR_PID" ] && { kill "$SIDECAR_PID" 2>/dev/null || true; wait "$SIDECAR_PID" 2>/dev/null || true; }
  [ -n "$JTL_PID" ] && { kill "$JTL_PID" 2>/dev/null || true; wait "$JTL_PID" 2>/dev/null || true; }
  nginx -p "$WORK/backend" -c "$WORK/backend/nginx.conf" -s stop 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

nginx_backend "$WORK/backend" "$BACKEND_PORT"
start_jtl "$JTL_BIN" "$EMULATOR_PORT" "$JTL_INGRESS_PORT" "$JTL_ADMIN_PORT" "http://127.0.0.1:$BACKEND_PORT"
if [ "${EGRESS:-0}" = 1 ]; then
  export EGRESS_LISTEN="127.0.0.1:$EGRESS_PORT"
  URL="http://127.0.0.1:$EGRESS_PORT/bench"
  # One tenant, the same header on every request.
  WRK_ARGS=(-H "X-Tenant-ID: 0b4f7c2e-6a1d-4e8b-9c3f-2d5a7e9b1c40")
  # ACT_AS=user:42 (or tenant) sends X-JTL-Act-As too: every request after the first
  # takes the cached exchanged token.
  if [ -n "${ACT_AS:-}" ]; then WRK_ARGS+=(-H "X-JTL-Act-As: $ACT_AS"); fi
else
  URL="http://127.0.0.1:$INGRESS_PORT/bench"
  tokens_lua "$WORK/tokens.lua"
  mint "$EMULATOR_PORT" 1 "$WORK/one.txt"
  export TOKENS_FILE="$WORK/one.txt"
  WRK_ARGS=(-s "$WORK/tokens.lua")
fi
# At the default level (info) unless LOG_LEVEL says otherwise (sidecar_toml reads it).
sidecar_toml "$WORK/sidecar.toml" session "$INGRESS_PORT" "$ADMIN_PORT" "http://127.0.0.1:$BACKEND_PORT" "$EMULATOR_PORT"
if [ "${OTLP:-0}" = 1 ]; then
  otlp_receiver "$OTLP_PORT" "$OUT/otlp.log"
  printf '\n[tracing]\notlp_endpoint = "http://127.0.0.1:%s"\n' "$OTLP_PORT" >>"$WORK/sidecar.toml"
fi

if [ "${STDOUT:-null}" = pipe ]; then
  mkfifo "$WORK/stdout"
  cat "$WORK/stdout" >/dev/null &
  STDOUT_FILE="$WORK/stdout"
else
  STDOUT_FILE=/dev/null
fi
valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
  "$BIN" run --config "$WORK/sidecar.toml" >"$STDOUT_FILE" 2>"$OUT/sidecar.err" &
SIDECAR_PID=$!
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
wait_ready "http://127.0.0.1:$ADMIN_PORT/readyz" "the sidecar under valgrind"
wrk -t1 -c32 -d3s "${WRK_ARGS[@]}" "$URL" >"$OUT/warmup.txt"
callgrind_control -z "$SIDECAR_PID" >/dev/null
wrk -t1 -c32 -d10s "${WRK_ARGS[@]}" "$URL" >"$OUT/wrk.txt"
callgrind_control -d "$SIDECAR_PID" >/dev/null
if grep -q Non-2xx "$OUT/wrk.txt"; then
  echo "error: non-2xx answers" >&2
  cat "$OUT/wrk.txt" >&2
  exit 1
fi
REQUESTS="$(awk '/requests in/ {print $1}' "$OUT/wrk.txt")"
DUMP="$(ls "$OUT"/callgrind.out.* | head -n 1)"
IR="$(awk '/^totals:/ {print $2}' "$DUMP")"
echo "$LABEL requests=$REQUESTS Ir=$IR Ir/req=$(awk -v a="$IR" -v b="$REQUESTS" 'BEGIN {printf "%.0f", a / b}')"
