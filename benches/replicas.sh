#!/usr/bin/env bash
# Cold-start benchmark: REPLICAS sidecars started at once against the emulator, with and
# without the shared cache (SPEC §12), in one run.
#
#   bash benches/replicas.sh        (REPLICAS=10 RUNS=3 REDIS_URL=redis://127.0.0.1:6379)
#
# For each mode (`own`: no shared cache; `redis`: shared_cache.redis_url = REDIS_URL with a
# fresh random key_prefix per run, so every run finds Redis empty) it starts REPLICAS `run`
# sidecars at the same moment, polls their /readyz every 10 ms until all answer 200, and
# reads their /metrics: the access-token requests they made to JTL (token_fetches, success
# and failure, summed over the replicas), the shared-cache lock wins, hits, waits and Redis
# errors. RUNS runs per mode (after one unmeasured warm-up start), then a table: token
# requests per run and the time until all were ready (min/median/max ms).
# /readyz is 200 once a replica holds an access token and the key set; connect-tenant is
# off (tenants.connect_path = ""), so no tenant store is opened. JTL is the emulator of a
# separate `dev` process (its ingress is not used). Needs a reachable Redis for the `redis`
# mode; it is never started here. Only 127.0.0.1 is used.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
source benches/lib.sh

REPLICAS="${REPLICAS:-10}"
RUNS="${RUNS:-3}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
READY_TIMEOUT_S="${READY_TIMEOUT_S:-30}"
EMULATOR_PORT=19090 JTL_INGRESS_PORT=19092 JTL_ADMIN_PORT=19093
INGRESS_BASE=19100 ADMIN_BASE=19200   # replica i: ingress 19100+i, admin 19200+i
UNUSED_UPSTREAM="http://127.0.0.1:9"  # the ingress is never called

echo "== building the release binary"
cargo build --release --locked --quiet
BIN="$PWD/target/release/jtl-auth-sidecar"

WORK="$(mktemp -d)"
JTL_PID="" PIDS=()
stop_replicas() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
cleanup() {
  stop_replicas
  if [ -n "$JTL_PID" ]; then
    kill "$JTL_PID" 2>/dev/null || true
    wait "$JTL_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

for i in $(seq 1 "$REPLICAS"); do
  for port in $(( INGRESS_BASE + i )) $(( ADMIN_BASE + i )); do
    if curl -s --max-time 1 "http://127.0.0.1:$port/" >/dev/null 2>&1; then
      echo "error: 127.0.0.1:$port is in use" >&2; exit 1
    fi
  done
done

# JTL: the emulator of a `dev` process of its own.
start_jtl "$BIN" "$EMULATOR_PORT" "$JTL_INGRESS_PORT" "$JTL_ADMIN_PORT" "$UNUSED_UPSTREAM"

cat > "$WORK/sidecar.toml" <<TOML
[ingress]
upstream = "$UNUSED_UPSTREAM"
[egress]
listen = ""
[jtl]
client_id = "emulated-client"
client_secret = "emulated-secret"
token_url = "http://127.0.0.1:$EMULATOR_PORT/oauth2/token"
api_base_url = "http://127.0.0.1:$EMULATOR_PORT"
[session]
flow = "session-token"
[tenants]
connect_path = ""
database_url = "sqlite://$WORK/unused.db"
[log]
level = "warn"
TOML

# metric TEXT NAME LABELS: the value of one sample of a /metrics text, 0 when absent.
metric() {
  awk -v m="$2{$3}" '$1 == m { v = $2 } END { print v + 0 }' <<<"$1"
}

# start_round MODE NAME: starts REPLICAS sidecars at once, waits until all are ready,
# appends "MODE requests lock_won hit wait error ms" to $WORK/results unless NAME is warmup.
start_round() {
  local mode="$1" name="$2" prefix="" i
  [ "$mode" = redis ] && prefix="bench-replicas-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
  local urls=() ready=()
  for i in $(seq 1 "$REPLICAS"); do
    urls+=("http://127.0.0.1:$(( ADMIN_BASE + i ))/readyz")
    ready+=(0)
  done
  local start
  start="$(now_ms)"
  for i in $(seq 1 "$REPLICAS"); do
    if [ "$mode" = redis ]; then
      JTL_SIDECAR_SHARED_CACHE__REDIS_URL="$REDIS_URL" JTL_SIDECAR_SHARED_CACHE__KEY_PREFIX="$prefix" \
      JTL_SIDECAR_INGRESS__LISTEN="127.0.0.1:$(( INGRESS_BASE + i ))" \
      JTL_SIDECAR_ADMIN__LISTEN="127.0.0.1:$(( ADMIN_BASE + i ))" \
        "$BIN" run --config "$WORK/sidecar.toml" > "$WORK/replica-$i.out" 2> "$WORK/replica-$i.err" &
    else
      JTL_SIDECAR_INGRESS__LISTEN="127.0.0.1:$(( INGRESS_BASE + i ))" \
      JTL_SIDECAR_ADMIN__LISTEN="127.0.0.1:$(( ADMIN_BASE + i ))" \
        "$BIN" run --config "$WORK/sidecar.toml" > "$WORK/replica-$i.out" 2> "$WORK/replica-$i.err" &
    fi
    PIDS+=("$!")
  done
  # One curl per 10 ms tick for the replicas not ready yet (one process per tick, not one
  # per replica, so polling takes little of the CPU the replicas start on).
  local deadline=$(( start + READY_TIMEOUT_S * 1000 )) left="$REPLICAS" end=0
  while [ "$left" -gt 0 ]; do
    local args=() pending=() codes code j=0
    for i in $(seq 0 $(( REPLICAS - 1 ))); do
      if [ "${ready[$i]}" = 0 ]; then args+=(-o /dev/null "${urls[$i]}"); pending+=("$i"); fi
    done
    codes="$(curl -s --max-time 1 -w '%{http_code}\n' "${args[@]}" || true)"
    end="$(now_ms)"
    while read -r code; do
      if [ "$code" = 200 ]; then ready[${pending[$j]}]=1; left=$(( left - 1 )); fi
      j=$(( j + 1 ))
    done <<<"$codes"
    [ "$left" -eq 0 ] && break
    if [ "$end" -gt "$deadline" ]; then
      echo "error: $left of $REPLICAS replicas not ready after ${READY_TIMEOUT_S}s ($mode)" >&2
      for i in $(seq 1 "$REPLICAS"); do
        [ "${ready[$(( i - 1 ))]}" = 0 ] && { echo "-- replica $i:" >&2; tail -5 "$WORK/replica-$i.err" >&2; }
      done
      exit 1
    fi
    sleep 0.01
  done
  local requests=0 lock_won=0 hit=0 wait=0 error=0 text
  for i in $(seq 1 "$REPLICAS"); do
    text="$(curl -sf --max-time 2 "http://127.0.0.1:$(( ADMIN_BASE + i ))/metrics")"
    requests=$(( requests + $(metric "$text" jtl_sidecar_token_fetches_total 'result="success"') \
                          + $(metric "$text" jtl_sidecar_token_fetches_total 'result="failure"') ))
    lock_won=$(( lock_won + $(metric "$text" jtl_sidecar_shared_token_total 'event="lock_won"') ))
    hit=$(( hit + $(metric "$text" jtl_sidecar_shared_token_total 'event="hit"') ))
    wait=$(( wait + $(metric "$text" jtl_sidecar_shared_token_total 'event="wait"') ))
    error=$(( error + $(metric "$text" jtl_sidecar_shared_token_total 'event="error"') ))
  done
  stop_replicas
  if [ -n "$prefix" ] && command -v redis-cli >/dev/null; then
    redis-cli -u "$REDIS_URL" --scan --pattern "$prefix:*" 2>/dev/null \
      | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null 2>&1 || true
  fi
  local ms=$(( end - start ))
  printf '  %-8s %-7s token requests %3d   lock_won %2d  hit %2d  wait %2d  redis errors %2d   all ready %5d ms\n' \
    "$mode" "$name" "$requests" "$lock_won" "$hit" "$wait" "$error" "$ms"
  [ "$name" = warmup ] || echo "$mode $requests $lock_won $hit $wait $error $ms" >> "$WORK/results"
  if [ "$mode" = redis ] && [ "$error" -gt 0 ]; then
    echo "warning: $error Redis errors: is $REDIS_URL reachable? (the replicas fell back to their own tokens)" >&2
  fi
}

echo "== $REPLICAS replicas started at once, $RUNS runs per mode, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
: > "$WORK/results"
start_round own warmup
for run in $(seq 1 "$RUNS"); do start_round own "run $run"; done
for run in $(seq 1 "$RUNS"); do start_round redis "run $run"; done

echo
echo "== cold start of $REPLICAS replicas ($RUNS runs each)"
printf '%-24s %-26s %s\n' "mode" "token requests (per run)" "all ready ms (min / median / max)"
for mode in own redis; do
  label="no shared cache"
  [ "$mode" = redis ] && label="shared cache (Redis)"
  requests="$(awk -v m="$mode" '$1 == m { printf "%s%s", s, $2; s = ", " }' "$WORK/results")"
  times="$(awk -v m="$mode" '$1 == m { print $7 }' "$WORK/results" | sort -n \
    | awk '{ t[NR] = $1 } END { printf "%d / %d / %d", t[1], (NR % 2 ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2), t[NR] }')"
  printf '%-24s %-26s %s\n' "$label" "$requests" "$times"
done
