# Shared pieces of the bench scripts (sourced, not run).

# need_tools [valgrind]: wrk and nginx (and valgrind when asked) from apt when missing.
need_tools() {
  local missing=0 tool
  for tool in wrk nginx "$@"; do command -v "$tool" >/dev/null || missing=1; done
  [ $missing = 0 ] || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light "$@"
  }
}

# tollgate_binary: $TOLLGATE_BIN (another build, another flag set, say), else this tree's release build.
tollgate_binary() {
  if [ -n "${TOLLGATE_BIN:-}" ]; then echo "$TOLLGATE_BIN"; else scripts/build-release 2>/dev/null | tail -1; fi
}

# upstream_config FILE PORT [PORT...]: nginx, 1 worker, serving the 41-byte JSON body every benchmark
# uses, on each port given (the 3-target case gives three). It also answers OTLP/HTTP trace exports
# as a collector does (200, an empty protobuf response), for the runs that trace.
upstream_config() {
  local file=$1; shift
  local listens=""
  for port in "$@"; do listens="$listens listen 127.0.0.1:$port;"; done
  cat > "$file" <<NGINX
worker_processes 1; daemon off; pid $file.pidfile; error_log /dev/null;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { $listens location / { default_type application/json; return 200 '{"id":42,"name":"Ada Lovelace","ok":true}'; }
    location = /v1/traces { default_type application/x-protobuf; return 200 ''; } } }
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

# on_off_configs OFF_PORT ON_PORT UPSTREAM_PORT: $work/off.yaml (a route with no plugins) and
# $work/on.yaml (the same route with $ON_PLUGINS, a YAML flow list in which ACCESS_LOG becomes
# $work/access.log and COLLECTOR the upstream nginx, which answers trace exports). By default the mix
# of issue 6: the access log to a file, prometheus, and opentelemetry at 1%.
on_off_configs() {
  local off=$1 on=$2 up=$3
  tollgate_config "$work/off.yaml" "$off" "$up"
  local mix=${ON_PLUGINS:-'[{name: access-log, config: {sink: {file: "ACCESS_LOG"}}}, {name: prometheus},
    {name: opentelemetry, config: {endpoint: "COLLECTOR", sampling: 0.01}}]'}
  mix=${mix//ACCESS_LOG/$work/access.log}
  ROUTE_PLUGINS=${mix//COLLECTOR/http://127.0.0.1:$up} tollgate_config "$work/on.yaml" "$on" "$up"
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

# cpu_ticks PID: the process's user + system CPU time so far, in clock ticks (every thread). For an
# nginx master, pass its worker's pid (`worker_pid`).
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

# cpu_split PID: the same, user space and kernel apart, as "utime stime".
cpu_split() { awk '{print $14, $15}' "/proc/$1/stat"; }

# wrk_load PORT SECONDS OUTPUT: wrk on core 0 (1 thread, 50 connections) against /users/42.
wrk_load() { taskset -c 0 wrk -t1 -c50 -d"$2s" --latency "http://127.0.0.1:$1/users/42" > "$3" 2>/dev/null; }

# wrk_rps OUTPUT and wrk_requests OUTPUT: a wrk run's req/s and its request count; wrk_p99_us
# OUTPUT: its 99th percentile latency in microseconds.
wrk_rps() { awk '/Requests\/sec/ {print $2}' "$1"; }
wrk_p99_us() {
  awk '/^ +99%/ { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
    print v * (u == "s" ? 1e6 : u == "ms" ? 1e3 : 1) }' "$1"
}
wrk_requests() { awk '/requests in/ {print $1}' "$1"; }

# worker_pid MASTER_PID: the first child of an nginx master (its one worker).
worker_pid() { pgrep -P "$1" | head -1; }

# us_per_request TICKS REQUESTS: clock ticks of CPU as microseconds per request.
us_per_request() { awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }'; }

# paired_warmup PORT_A PORT_B: both loads at once for 2 s, as paired_round measures them.
paired_warmup() {
  local x y
  wrk_load "$1" 2 "$work/warm.$1" & x=$!
  wrk_load "$2" 2 "$work/warm.$2" & y=$!
  wait $x $y   # (a bare `wait` would also wait for the servers)
}

# paired_round NAME_A PORT_A PID_A NAME_B PORT_B PID_B: both loads at once for $seconds, into
# $work/NAME_A.out and $work/NAME_B.out (an answer other than 2xx stops the script); prints each
# side's CPU per request, user space + kernel in microseconds, as "A_user+A_kernel, B_user+B_kernel".
paired_round() {
  local ua0 sa0 ub0 sb0 ua1 sa1 ub1 sb1 x y na nb side
  read -r ua0 sa0 < <(cpu_split "$3")
  read -r ub0 sb0 < <(cpu_split "$6")
  wrk_load "$2" "$seconds" "$work/$1.out" & x=$!
  wrk_load "$5" "$seconds" "$work/$4.out" & y=$!
  wait $x $y
  read -r ua1 sa1 < <(cpu_split "$3")
  read -r ub1 sb1 < <(cpu_split "$6")
  for side in "$1" "$4"; do
    if grep -q "Non-2xx" "$work/$side.out"; then echo "$side: answers other than 2xx" >&2; exit 1; fi
  done
  na=$(wrk_requests "$work/$1.out"); nb=$(wrk_requests "$work/$4.out")
  echo "$(us_per_request $((ua1 - ua0)) "$na")+$(us_per_request $((sa1 - sa0)) "$na"), $(us_per_request $((ub1 - ub0)) "$nb")+$(us_per_request $((sb1 - sb0)) "$nb")"
}

# cpu_per_request BEFORE AFTER REQUESTS: microseconds of CPU per request between two cpu_ticks readings.
cpu_per_request() {
  awk -v a="$2" -v b="$1" -v n="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (a - b) / hz * 1e6 / n }'
}

# paired_costs FILE BASE TARGET COLUMN: the median over rounds of 1 - TARGET/BASE (rows: round name
# value...; COLUMN is the value's field), in percent: each round's pair was measured back to back,
# so a slow spell of the shared machine moves both.
paired_cost() {
  awk -v base="$2" -v target="$3" -v c="$4" '$2==base {b[$1]=$c} $2==target {t[$1]=$c}
    END { for (r in b) if (r in t) printf "%.4f\n", (1 - t[r] / b[r]) * 100 }' "$1" \
    | sort -n | awk '{v[NR]=$1} END { if (NR == 0) exit; printf "%.1f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
