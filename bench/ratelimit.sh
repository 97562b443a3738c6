#!/usr/bin/env bash
# What a rate-limited route costs, against what limit_req costs nginx, in one run on this machine.
# nginx serves the upstream; nginx as a proxy with and without `limit_req` (a rate never reached), and
# Tollgate (release, 1 event loop) with and without the rate-limiting plugin (local store, sliding
# window, a limit never reached), each pinned to core 1; wrk on core 0.
# Usage: bench/ratelimit.sh [rounds=3] [seconds=10]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init "$@"

up=18281; np=18282; nrl=18283; tp=18284; trl=18285
upstream_config "$work/upstream.conf" $up
cat > "$work/proxy.conf" <<NGINX
worker_processes 1; daemon off; pid $work/proxy.nginx.pid; error_log /dev/null;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  limit_req_zone \$binary_remote_addr zone=perip:10m rate=1000000r/s;
  upstream backend { server 127.0.0.1:$up; keepalive 64; }
  server { listen 127.0.0.1:$np; location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } }
  server { listen 127.0.0.1:$nrl; location / { limit_req zone=perip burst=1000000 nodelay;
    proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGINX
tollgate_config "$work/tollgate.yaml" $tp $up
cat > "$work/limited.yaml" <<YAML
listen: [{address: "127.0.0.1:$trl"}]
server: {threads: 1}
services:
  backend: {targets: [{url: "http://127.0.0.1:$up"}]}
routes:
  - match: {paths: ["/*"]}
    service: backend
    plugins: [{name: rate-limiting, config: {limits: ["1000000/s"], algorithm: sliding_window, key: ip}}]
YAML

start upstream 0 nginx -c "$work/upstream.conf"
start nginx 1 nginx -c "$work/proxy.conf"
start tollgate 1 "$bin" run --config "$work/tollgate.yaml" --log-level error
start limited 1 "$bin" run --config "$work/limited.yaml" --log-level error
sleep 1.5

measure() { # port -> req/s
  taskset -c 0 wrk -t1 -c50 -d3s "http://127.0.0.1:$1/users/42" >/dev/null 2>&1
  taskset -c 0 wrk -t1 -c50 -d"${seconds}s" "http://127.0.0.1:$1/users/42" 2>/dev/null | awk '/Requests\/sec/ {print $2}'
}
# CPU per request: the server's CPU time (nginx: its worker's) over the measured and warm-up runs,
# divided by their requests (req/s times their length). Steadier than req/s on a shared machine.
printf "%-6s %-16s %12s %12s\n" round target req/s "cpu us/req"
for round in $(seq 1 "$rounds"); do
  for target in nginx nginx_limit_req tollgate tollgate_limited; do
    case $target in
      nginx) port=$np; pid=$(worker_pid "$(cat "$work/nginx.pid")");;
      nginx_limit_req) port=$nrl; pid=$(worker_pid "$(cat "$work/nginx.pid")");;
      tollgate) port=$tp; pid=$(cat "$work/tollgate.pid");;
      tollgate_limited) port=$trl; pid=$(cat "$work/limited.pid");;
    esac
    before=$(cpu_ticks "$pid")
    rps=$(measure $port)
    cpu=$(cpu_per_request "$before" "$(cpu_ticks "$pid")" "$(awk -v r="$rps" -v s="$seconds" 'BEGIN {print r * (s + 3)}')")
    printf "%-6s %-16s %12s %12s\n" "$round" "$target" "$rps" "$cpu"
    echo "$round $target $rps $cpu" >> "$work/results"
  done
done
median() { awk -v t="$1" '$2==t {print $3}' "$work/results" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
n=$(median nginx); nl=$(median nginx_limit_req); t=$(median tollgate); tl=$(median tollgate_limited)
awk -v n="$n" -v nl="$nl" -v t="$t" -v tl="$tl" 'BEGIN {
  printf "\nmedian req/s: nginx %s, with limit_req %s (%.1f%% cost); tollgate %s, rate-limited %s (%.1f%% cost)\n",
    n, nl, (1 - nl / n) * 100, t, tl, (1 - tl / t) * 100 }'
echo "median of the rounds' costs: nginx limit_req $(paired_cost "$work/results" nginx nginx_limit_req 3)%, tollgate rate-limiting $(paired_cost "$work/results" tollgate tollgate_limited 3)%"
# From CPU per request: the throughput lost when the core is the limit (1 - CPU without / CPU with).
echo "median of the rounds' costs from CPU per request: nginx limit_req $(paired_cost "$work/results" nginx_limit_req nginx 4)%, tollgate rate-limiting $(paired_cost "$work/results" tollgate_limited tollgate 4)%"
