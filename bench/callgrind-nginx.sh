#!/usr/bin/env bash
# nginx as a reverse proxy under callgrind, loaded as bench/callgrind.sh loads Tollgate: user-space
# instructions per proxied request, the yardstick for Tollgate's own count. One process
# (`master_process off`), proxy_pass with upstream keepalive, logs off; nginx as the upstream.
# Usage: bench/callgrind-nginx.sh [seconds=4]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
seconds=${1:-4}
need_tools valgrind
work=$(mktemp -d)
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
up=18791; np=18792
upstream_config "$work/upstream.conf" $up
cat > "$work/proxy.conf" <<NGINX
worker_processes 1; daemon off; master_process off; pid $work/proxy.nginx.pid; error_log /dev/null;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$up; keepalive 64; }
  server { listen 127.0.0.1:$np; location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGINX
nginx -c "$work/upstream.conf" & echo $! > "$work/upstream.pid"
valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" nginx -c "$work/proxy.conf" >/dev/null 2>&1 & echo $! > "$work/valgrind.pid"
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$np/" && break; sleep 0.2; done
wrk -t1 -c10 -d3s "http://127.0.0.1:$np/users/42" >/dev/null
callgrind_control -z "$(cat "$work/valgrind.pid")" >/dev/null 2>&1
wrk -t1 -c10 -d"${seconds}s" "http://127.0.0.1:$np/users/42" > "$work/wrk.out"
requests=$(awk '/requests in/ {print $1}' "$work/wrk.out")
callgrind_control -d "$(cat "$work/valgrind.pid")" >/dev/null 2>&1
sleep 1
total=$(callgrind_annotate "$work/cg.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
awk -v r="$requests" -v t="$total" 'BEGIN { printf "nginx: %d requests, %d instructions, %d per request\n", r, t, t / r }'
