#!/usr/bin/env bash
# Rolling stop behind a balancer that does not retry (issue 16): two sidecars behind
# benches/l4_balancer.py, which acts like a Kubernetes Service through kube-proxy (new
# connections round robin over the current endpoints, established ones stay, no retry).
# wrk drives keep-alive load through it; mid-run one sidecar is stopped the way each pod
# layout stops it, and the endpoint leaves the balancer's set LAG_S later (the endpoints
# controller and kube-proxy are not instant):
#
#   delay0  SIGTERM, server.shutdown_delay_s = 0: the listener closes at once (SPEC §10
#           as written; an ordinary container without a delay)
#   delay   SIGTERM, server.shutdown_delay_s = DELAY_S (the no-native-sidecar manifest)
#   drain   POST /drain with the token of admin.drain_token_file, SIGTERM DELAY_S later
#           (the native-sidecar manifests: the backend's preStop drains, the sidecar gets
#           SIGTERM after the backend exits)
#
#   bash benches/rollout.sh        (DURATION_S=12 CONNECTIONS=64 LAG_S=1 DELAY_S=5)
#
# Prints, per layout, requests, failed requests (non-2xx and socket errors) and the
# stopped sidecar's exit code. Installs wrk and nginx from Debian when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
source benches/lib.sh

DURATION_S="${DURATION_S:-12}" CONNECTIONS="${CONNECTIONS:-64}" LAG_S="${LAG_S:-1}" DELAY_S="${DELAY_S:-5}"
BACKEND_PORT=18180 BALANCER_PORT=18181 EMULATOR_PORT=18190 JTL_INGRESS_PORT=18192 JTL_ADMIN_PORT=18193
A_PORT=18182 A_ADMIN=18183 B_PORT=18184 B_ADMIN=18185

if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
  echo "== installing wrk and nginx from Debian"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
fi
echo "== building the release binary"
cargo build --release --locked --quiet --bin jtl-auth-sidecar
BIN="$PWD/target/release/jtl-auth-sidecar"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  nginx -p "$WORK/backend" -c "$WORK/backend/nginx.conf" -s stop 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/backend/logs"
cat > "$WORK/backend/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/backend/nginx.pid;
error_log $WORK/backend/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$BACKEND_PORT; location / { return 200 "ok"; } }
}
NGINX
nginx -p "$WORK/backend" -c "$WORK/backend/nginx.conf"

# JTL: the emulator of a `dev` process of its own.
start_jtl "$BIN" "$EMULATOR_PORT" "$JTL_INGRESS_PORT" "$JTL_ADMIN_PORT" "http://127.0.0.1:$BACKEND_PORT"
PIDS+=("$JTL_PID")
TOKEN="$(curl -sf "http://127.0.0.1:$EMULATOR_PORT/_emulator/session-token?count=1&lifetime_s=3600")"

# start_sidecar NAME PORT ADMIN DELAY_S: `run` in front of the nginx backend; sets $STARTED.
start_sidecar() {
  cat > "$WORK/$1.toml" <<TOML
[ingress]
listen = "127.0.0.1:$2"
upstream = "http://127.0.0.1:$BACKEND_PORT"
[egress]
listen = ""
[jtl]
client_id = "emulated-client"
client_secret = "emulated-secret"
token_url = "http://127.0.0.1:$EMULATOR_PORT/oauth2/token"
api_base_url = "http://127.0.0.1:$EMULATOR_PORT"
[session]
flow = "session-token"
[admin]
listen = "127.0.0.1:$3"
drain_token_file = "$WORK/$1.drain-token"
[tenants]
database_url = "sqlite://$WORK/$1.db"
[log]
level = "warn"
[server]
shutdown_delay_s = $4
shutdown_grace_s = 10
TOML
  "$BIN" run --config "$WORK/$1.toml" > "$WORK/$1.out" 2> "$WORK/$1.err" &
  STARTED=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$3/readyz" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "error: sidecar $1 did not become ready" >&2; cat "$WORK/$1.err" >&2; exit 1
}

printf '%-8s %10s %8s %8s %10s  %s\n' layout requests non2xx socket exit_code "wrk socket errors"
for layout in delay0 delay drain; do
  delay=$DELAY_S; [ "$layout" = delay0 ] && delay=0
  [ "$layout" = drain ] && delay=0
  start_sidecar a $A_PORT $A_ADMIN $delay; A_PID=$STARTED
  start_sidecar b $B_PORT $B_ADMIN $delay; B_PID=$STARTED; PIDS+=($B_PID)
  printf '127.0.0.1:%s\n127.0.0.1:%s\n' $A_PORT $B_PORT > "$WORK/endpoints"
  python3 benches/l4_balancer.py $BALANCER_PORT "$WORK/endpoints" 2> "$WORK/balancer.err" &
  LB_PID=$!
  for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$BALANCER_PORT/" && break; sleep 0.1; done
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION_S}s" -H "Authorization: Bearer $TOKEN" \
    "http://127.0.0.1:$BALANCER_PORT/rollout" > "$WORK/wrk.txt" &
  WRK_PID=$!
  sleep $(( DURATION_S / 3 ))
  case $layout in
    drain) curl -sf -X POST -H "Authorization: Bearer $(cat "$WORK/a.drain-token")" \
             "http://127.0.0.1:$A_ADMIN/drain" >/dev/null ;;
    *) kill -TERM "$A_PID" ;;
  esac
  sleep "$LAG_S"
  printf '127.0.0.1:%s\n' $B_PORT > "$WORK/endpoints"; kill -HUP "$LB_PID"
  if [ "$layout" = drain ]; then sleep "$DELAY_S"; kill -TERM "$A_PID"; fi
  wait "$WRK_PID"
  set +e; wait "$A_PID"; A_EXIT=$?; set -e
  requests=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$WORK/wrk.txt"); non2xx=${non2xx:-0}
  socket_line=$(grep 'Socket errors' "$WORK/wrk.txt" || true)
  socket=$(awk -F'[ ,]+' '/Socket errors/ {print $5 + $7 + $9 + $11}' "$WORK/wrk.txt"); socket=${socket:-0}
  printf '%-8s %10s %8s %8s %10s  %s\n' "$layout" "$requests" "$non2xx" "$socket" "$A_EXIT" "${socket_line:-none}"
  kill "$LB_PID" "$B_PID" 2>/dev/null || true; wait "$LB_PID" "$B_PID" 2>/dev/null || true
  while curl -s "http://127.0.0.1:$B_ADMIN/healthz" >/dev/null 2>&1; do sleep 0.2; done
done
