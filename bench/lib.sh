# Shared pieces of the bench scripts (sourced, not run).

# need_tools: wrk and nginx from apt when missing.
need_tools() {
  command -v wrk >/dev/null && command -v nginx >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light
  }
}

# tollgate_binary: $TOLLGATE_BIN (another build, another flag set, say), else this tree's release build.
tollgate_binary() {
  if [ -n "${TOLLGATE_BIN:-}" ]; then echo "$TOLLGATE_BIN"; else scripts/build-release 2>/dev/null | tail -1; fi
}

# upstream_config FILE PORT [PORT...]: nginx, 1 worker, serving the 41-byte JSON body every benchmark
# uses, on each port given (the 3-target case gives three).
upstream_config() {
  local file=$1; shift
  local listens=""
  for port in "$@"; do listens="$listens listen 127.0.0.1:$port;"; done
  cat > "$file" <<NGINX
worker_processes 1; daemon off; pid $file.pidfile; error_log /dev/null;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { $listens location / { default_type application/json; return 200 '{"id":42,"name":"Ada Lovelace","ok":true}'; } } }
NGINX
}

# tollgate_config FILE PORT UPSTREAM_PORT [UPSTREAM_PORT...]: one event loop, one route, one target
# per upstream port (default balancer: weighted round robin). The route's plugins are $ROUTE_PLUGINS
# (a YAML flow list; none by default) and $CONSUMERS (a YAML flow list) the consumers.
tollgate_config() {
  local file=$1 port=$2; shift 2
  local targets=""
  for upstream in "$@"; do targets="$targets{url: \"http://127.0.0.1:$upstream\"}, "; done
  cat > "$file" <<YAML
listen: [{address: "127.0.0.1:$port"}]
server: {threads: 1}
consumers: ${CONSUMERS:-[]}
services:
  backend: {targets: [${targets%, }]}
routes:
  - {match: {paths: ["/*"]}, service: backend, plugins: ${ROUTE_PLUGINS:-[]}}
YAML
}

# start NAME CORE COMMAND...: runs COMMAND in its own session pinned to CORE, its pid in $work/NAME.pid.
start() {
  local name=$1 core=$2; shift 2
  setsid taskset -c "$core" nice -n -5 "$@" >/dev/null 2>&1 &
  echo $! > "$work/$name.pid"
}

# bench_init [rounds=3] [seconds=10]: the tools, the binary ($bin), $rounds and $seconds, and a work
# directory ($work) whose processes are stopped and which is removed when the script exits.
bench_init() {
  rounds=${1:-3}
  seconds=${2:-10}
  need_tools
  bin=$(tollgate_binary)
  work=$(mktemp -d)
  trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
}
