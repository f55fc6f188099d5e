# Pieces the benchmark scripts share: sourced by them, not run. A caller sets WORK (its
# scratch directory) and cleans up itself. Everything listens on 127.0.0.1 only.

# need_debian COMMAND PACKAGE...: installs the packages from Debian when COMMAND is missing.
need_debian() {
  local command="$1"
  shift
  if ! command -v "$command" >/dev/null; then
    echo "== installing $* from Debian"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  fi
}

# wait_ready URL [NAME]: waits up to 10 s for URL to answer 2xx; fails loudly otherwise.
wait_ready() {
  local _
  for _ in $(seq 1 100); do
    curl -sf "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "error: ${2:-$1} did not become ready" >&2
  return 1
}

# nginx_backend DIR PORT [WORKERS]: the backend every benchmark proxies to, nginx answering
# `return 200 "ok\n"` on PORT with keep-alive (WORKERS processes, default 1). Stop it with
# `nginx -p DIR -c DIR/nginx.conf -s stop`.
nginx_backend() {
  nginx_start "$1" "${3:-1}" "server { listen 127.0.0.1:$2; location / { return 200 \"ok\\n\"; } }"
}

# nginx_proxy DIR PORT BACKEND_PORT: nginx `proxy_pass` to the backend with upstream
# keep-alive, one worker per core; checks nothing (the floor any production proxy pays).
# Its access log is on (nginx's default, the combined format to DIR/access.log), as the
# sidecar's is at its default level; NGINX_ACCESS_LOG=off turns it off.
nginx_proxy() {
  local access_log="$1/access.log"
  [ "${NGINX_ACCESS_LOG:-on}" = off ] && access_log=off
  nginx_start "$1" auto "upstream backend { server 127.0.0.1:$3; keepalive 64; }
  server {
    listen 127.0.0.1:$2;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }" "$access_log"
}

# nginx_start DIR WORKERS HTTP_BODY [ACCESS_LOG]: nginx with its pid, logs and config in
# DIR, keep-alive without a request limit, the access log ACCESS_LOG (default off), and
# HTTP_BODY inside `http { }`.
nginx_start() {
  mkdir -p "$1/logs"
  cat > "$1/nginx.conf" <<NGINX
worker_processes $2;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
  access_log ${4:-off};
  keepalive_requests 1000000;
  $3
}
NGINX
  nginx -p "$1" -c "$1/nginx.conf"
}

# start_jtl BIN EMULATOR_PORT INGRESS_PORT ADMIN_PORT UPSTREAM: JTL, as the emulator of a
# `dev` process of its own (its ingress, on INGRESS_PORT, is not used), so that the
# sidecar a script measures is `run` alone, as in production. Sets JTL_PID; logs go to
# $WORK/jtl.out and $WORK/jtl.err.
start_jtl() {
  JTL_SIDECAR_INGRESS__LISTEN="127.0.0.1:$3" \
  JTL_SIDECAR_ADMIN__LISTEN="127.0.0.1:$4" \
  JTL_SIDECAR_EGRESS__LISTEN="" \
  JTL_SIDECAR_JTL__TOKEN_URL="http://127.0.0.1:$2/oauth2/token" \
  JTL_SIDECAR_JTL__API_BASE_URL="http://127.0.0.1:$2" \
  JTL_SIDECAR_SESSION__ISSUER="http://127.0.0.1:$2" \
  JTL_SIDECAR_LOG__LEVEL=warn \
    "$1" dev --upstream "$5" > "$WORK/jtl.out" 2> "$WORK/jtl.err" &
  JTL_PID=$!
  wait_ready "http://127.0.0.1:$4/readyz" "the JTL emulator" || { cat "$WORK/jtl.err" >&2; return 1; }
}

# sidecar_toml FILE FLOW INGRESS_PORT ADMIN_PORT UPSTREAM EMULATOR_PORT: a `run` config in
# front of UPSTREAM with JTL at the emulator, in FLOW `session` (legacy IdP) or
# `app-token` (the emulator is Zitadel too: its base URL is the issuer, the audience its
# app id), egress off (EGRESS_LISTEN, an address, turns it on with its defaults), the log
# at LOG_LEVEL (default info), tenants in SQLite beside FILE.
sidecar_toml() {
  local token_url="" session=""
  if [ "$2" = app-token ]; then
    session="[session]
flow = \"app-token\"
issuer = \"http://127.0.0.1:$6\"
audience = \"312909075212468632\""
  else
    token_url="token_url = \"http://127.0.0.1:$6/oauth2/token\""
    session="[session]
flow = \"session-token\""
  fi
  cat > "$1" <<TOML
[ingress]
listen = "127.0.0.1:$3"
upstream = "$5"
[egress]
listen = "${EGRESS_LISTEN:-}"
[jtl]
client_id = "emulated-client"
client_secret = "emulated-secret"
api_base_url = "http://127.0.0.1:$6"
$token_url
$session
[admin]
listen = "127.0.0.1:$4"
[tenants]
database_url = "sqlite://$1.db"
[log]
level = "${LOG_LEVEL:-info}"
TOML
}

# mint EMULATOR_PORT COUNT FILE [KIND]: COUNT distinct tokens from the emulator into FILE,
# one per line, 1000 per request: session tokens, or with KIND app-token RS256 app tokens
# for its app id. They live 2 h, past any run.
mint() {
  : > "$3"
  local left="$2" kind="${4:-session-token}" n
  while [ "$left" -gt 0 ]; do
    n=$(( left < 1000 ? left : 1000 ))
    curl -sf "http://127.0.0.1:$1/_emulator/$kind?count=$n&lifetime_s=7200" >> "$3"
    left=$(( left - n ))
  done
  [ "$(wc -l < "$3")" -eq "$2" ] || { echo "error: the emulator minted $(wc -l < "$3") of $2 $kind tokens" >&2; return 1; }
}

# cpu_ticks PID...: user + system CPU of these processes (all their threads) so far, in
# clock ticks (getconf CLK_TCK per second). CPU_FIELDS="14" counts user time only, "15"
# system time only.
cpu_ticks() {
  local total=0 pid field
  for pid in "$@"; do
    for field in ${CPU_FIELDS:-14 15}; do
      total=$(( total + $(awk -v f="$field" '{print $f}' "/proc/$pid/stat") ))
    done
  done
  echo "$total"
}

# tokens_lua FILE: a wrk script that sends GET /bench with `Authorization: Bearer` and the
# tokens of the file named by $TOKENS_FILE in turn. Requests are formatted once per wrk
# thread, in init, so a run with many tokens measures the proxy, not Lua.
tokens_lua() {
  cat > "$1" <<'LUA'
local requests = {}
local i = 0
init = function(args)
  for line in io.lines(os.getenv("TOKENS_FILE")) do
    requests[#requests + 1] = wrk.format("GET", "/bench", { ["Authorization"] = "Bearer " .. line })
  end
  i = math.random(#requests)
end
request = function()
  i = i % #requests + 1
  return requests[i]
end
LUA
}

# bench_us NAME: criterion's time estimate for the benchmark NAME, read from criterion's
# output on stdin, in µs.
bench_us() {
  awk -v name="$1" '$0 ~ name { found = 1 }
    found && /time:/ { for (i = 1; i <= NF; i++) if ($i == "time:") { v = $(i + 3); u = $(i + 4) }
      if (u == "ns") v /= 1000; if (u == "ms") v *= 1000; print v; exit }'
}

# ring_verify_times: sets RING_ED25519_US and RING_RSA_US to one core's ring Ed25519 and
# RSA-2048 verify times, measured now (criterion, short runs), unless both are set.
ring_verify_times() {
  if [ -z "${RING_ED25519_US:-}" ] || [ -z "${RING_RSA_US:-}" ]; then
    echo "== one core's ring Ed25519 and RSA-2048 verification (criterion, short runs)"
    local out
    out="$(cargo bench --locked --bench verify -- --warm-up-time 1 --measurement-time 3 raw_ring_ 2>/dev/null)"
    RING_ED25519_US="$(bench_us raw_ring_ed25519_verify <<<"$out")"
    RING_RSA_US="$(bench_us raw_ring_rsa2048_verify <<<"$out")"
  fi
  echo "   ring Ed25519 verify: ${RING_ED25519_US} µs, RSA-2048 (RS256) verify: ${RING_RSA_US} µs"
}

# otlp_receiver PORT LOG: an OTLP/HTTP receiver in the background (Python's http.server
# answering 200 to every POST, the body read and dropped), its pid in OTLP_PID; for
# `tracing.otlp_endpoint = "http://127.0.0.1:PORT"`.
otlp_receiver() {
  python3 - "$1" >"$2" 2>&1 <<'PY' &
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Receiver).serve_forever()
PY
  OTLP_PID=$!
}
