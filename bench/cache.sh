#!/usr/bin/env bash
# Cache hits and gzip, in one run on this machine, against nginx doing the same (1 worker, core 1):
#   proxy     plain proxying (Tollgate: no plugins; nginx: proxy_pass)
#   hit       cache hits (Tollgate: proxy-cache, memory store; nginx: proxy_cache, warm)
#   gzip      a 4 KB JSON response compressed with gzip (level 1, nginx's default, on both)
# nginx serves the upstream (core 0, with wrk). Targets (issue 7): Tollgate's hits at least 1.5x its
# own proxied throughput, and at least nginx's proxy_cache hits.
# Usage: bench/cache.sh [rounds=3] [seconds=10]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init "$@"

up=18581; np=18582; tp=18583; tc=18584; tg=18585
big=$(python3 -c 'import json; print(json.dumps({"items": [{"id": i, "name": "item %d" % (i * 7919 % 1000), "tags": ["a", "b"]} for i in range(90)]}, separators=(",", ":")))')
cat > "$work/upstream.conf" <<NGINX
worker_processes 1; daemon off; pid $work/upstream.conf.pidfile; error_log /dev/null;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$up;
    location /big { default_type application/json; return 200 '$big'; }
    location / { default_type application/json; add_header Cache-Control "max-age=3600";
                 return 200 '{"id":42,"name":"Ada Lovelace","ok":true}'; } } }
NGINX
mkdir -p "$work/ngx-cache"
cat > "$work/proxy.conf" <<NGINX
user root; worker_processes 1; daemon off; pid $work/proxy.nginx.pid; error_log /dev/null;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  proxy_cache_path $work/ngx-cache levels=1:2 keys_zone=hot:10m max_size=256m;
  upstream backend { server 127.0.0.1:$up; keepalive 64; }
  server { listen 127.0.0.1:$np;
    proxy_http_version 1.1; proxy_set_header Connection "";
    location /cached/ { proxy_cache hot; proxy_pass http://backend; }
    location /big { gzip on; gzip_comp_level 1; gzip_types application/json; gzip_min_length 1000; proxy_pass http://backend; }
    location / { proxy_pass http://backend; } } }
NGINX
tollgate_config "$work/proxy.yaml" $tp $up
ROUTE_PLUGINS='[{name: proxy-cache, config: {max_size: 64MB}}]' tollgate_config "$work/cache.yaml" $tc $up
ROUTE_PLUGINS='[{name: compression, config: {encodings: [gzip], gzip_level: 1}}]' tollgate_config "$work/gzip.yaml" $tg $up

start upstream 0 nginx -c "$work/upstream.conf"
start nginx 1 nginx -c "$work/proxy.conf"
start proxy 1 "$bin" run --config "$work/proxy.yaml" --log-level error
start cache 1 "$bin" run --config "$work/cache.yaml" --log-level error
start gzip 1 "$bin" run --config "$work/gzip.yaml" --log-level error
sleep 1.5
for port in $np $tc; do curl -s -o /dev/null "http://127.0.0.1:$port/cached/users/42"; done
check=$(curl -s -D - -o /dev/null "http://127.0.0.1:$tc/cached/users/42" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache" {print $2}')
[ "$check" = HIT ] || { echo "tollgate's cache does not hit (X-Cache: $check)" >&2; exit 1; }
for port in $np $tg; do
  enc=$(curl -s -H "Accept-Encoding: gzip" -D - -o /dev/null "http://127.0.0.1:$port/big" | tr -d '\r' | awk -F': ' 'tolower($1)=="content-encoding" {print $2}')
  [ "$enc" = gzip ] || { echo "port $port does not gzip /big" >&2; exit 1; }
done

measure() { # port path [header] -> "req/s p99_ms"
  local header=(); [ -n "${3:-}" ] && header=(-H "$3")
  taskset -c 0 wrk -t1 -c50 -d3s "${header[@]}" "http://127.0.0.1:$1$2" >/dev/null 2>&1
  taskset -c 0 wrk -t1 -c50 -d"${seconds}s" --latency "${header[@]}" "http://127.0.0.1:$1$2" > "$work/wrk.out" 2>/dev/null
  if grep -q "Non-2xx" "$work/wrk.out"; then echo "port $1: answers other than 2xx" >&2; exit 1; fi
  awk '/Requests\/sec/ {rps=$2} $1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; p=v}
       END {printf "%s %.3f\n", rps, p}' "$work/wrk.out"
}
printf "%-6s %-14s %12s %10s\n" round case req/s p99_ms
for round in $(seq 1 "$rounds"); do
  for case in nginx-proxy tollgate-proxy nginx-hit tollgate-hit nginx-gzip tollgate-gzip; do
    case $case in
      nginx-proxy) args=($np /users/42);; tollgate-proxy) args=($tp /users/42);;
      nginx-hit) args=($np /cached/users/42);; tollgate-hit) args=($tc /cached/users/42);;
      nginx-gzip) args=($np /big "Accept-Encoding: gzip");; tollgate-gzip) args=($tg /big "Accept-Encoding: gzip");;
    esac
    read -r rps p99 < <(measure "${args[@]}")
    printf "%-6s %-14s %12s %10s\n" "$round" "$case" "$rps" "$p99"
    echo "$round $case $rps $p99" >> "$work/results"
  done
done
median() { awk -v t="$1" '$2==t {print $3}' "$work/results" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
np_=$(median nginx-proxy); tp_=$(median tollgate-proxy); nh=$(median nginx-hit); th=$(median tollgate-hit)
ng=$(median nginx-gzip); tg_=$(median tollgate-gzip)
awk -v np="$np_" -v tp="$tp_" -v nh="$nh" -v th="$th" -v ng="$ng" -v tg="$tg_" 'BEGIN {
  printf "\nmedian req/s: proxy nginx %s, tollgate %s (%.2fx)\n", np, tp, tp / np
  printf "cache hits: nginx %s, tollgate %s (%.2fx nginx; %.2fx tollgate proxying)\n", nh, th, th / nh, th / tp
  printf "gzip: nginx %s, tollgate %s (%.2fx)\n", ng, tg, tg / ng }'
