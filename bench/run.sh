#!/usr/bin/env bash
# Tollgate vs nginx as reverse proxies, in one run on this machine.
# nginx (1 worker) serves a small JSON body as the upstream; wrk measures the upstream directly,
# nginx as a proxy (proxy_pass, upstream keepalive, logs off) and Tollgate (release, 1 event loop).
# The proxy under test gets core 1; wrk and the upstream share core 0 (see DESIGN.md). Each row also
# gives the process's CPU time per request, all of it and split into user space and the kernel.
# Last, paired rounds: nginx and Tollgate on core 1 at the same time, each driven by its own wrk on
# core 0 (as bench/ab.sh with A_NGINX=1), so that a slow spell of the shared machine hits both alike;
# their ratio of req/s is the inverse ratio of their CPU per request, and repeats where the sequential
# rounds swing by several percent.
# Usage: bench/run.sh [rounds=3] [seconds=10]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init "$@"

up=18081; np=18082; tp=18083; np3=18084; tp3=18085; up2=18091; up3=18092
upstream_config "$work/upstream.conf" $up $up2 $up3
cat > "$work/proxy.conf" <<NGINX
worker_processes 1; daemon off; pid $work/proxy.nginx.pid; error_log /dev/null;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$up; keepalive 64; }
  upstream backend3 { server 127.0.0.1:$up; server 127.0.0.1:$up2; server 127.0.0.1:$up3; keepalive 64; }
  server { listen 127.0.0.1:$np; location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } }
  server { listen 127.0.0.1:$np3; location / { proxy_pass http://backend3; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGINX
tollgate_config "$work/tollgate.yaml" $tp $up
tollgate_config "$work/tollgate3.yaml" $tp3 $up $up2 $up3

start upstream 0 nginx -c "$work/upstream.conf"
start nginx 1 nginx -c "$work/proxy.conf"
start tollgate 1 "$bin" run --config "$work/tollgate.yaml" --log-level error
start tollgate3 1 "$bin" run --config "$work/tollgate3.yaml" --log-level error
sleep 1.5

measure() { # port -> "rps p50 p99"
  taskset -c 0 wrk -t1 -c50 -d3s "http://127.0.0.1:$1/users/42" >/dev/null 2>&1   # warm-up
  taskset -c 0 wrk -t1 -c50 -d"${seconds}s" --latency "http://127.0.0.1:$1/users/42" 2>/dev/null | awk '
    /Requests\/sec/ {rps=$2}
    /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
    END {print rps, p50, p99}'
}

printf "%-6s %-10s %12s %10s %10s %14s %10s %10s\n" round target req/s p50 p99 "cpu us/req" user sys
for round in $(seq 1 "$rounds"); do
  for target in upstream nginx tollgate nginx3 tollgate3; do
    case $target in upstream) port=$up;; nginx) port=$np;; tollgate) port=$tp;; nginx3) port=$np3;; tollgate3) port=$tp3;; esac
    pidfile=$target; [ "$target" = nginx3 ] && pidfile=nginx
    pid=$(cat "$work/$pidfile.pid"); [ "$pidfile" = nginx ] && pid=$(pgrep -P "$pid" | head -1 || echo "$pid")
    [ "$target" = upstream ] && pid=$(pgrep -P "$(cat "$work/upstream.pid")" | head -1 || cat "$work/upstream.pid")
    read -r user0 sys0 < <(cpu_split "$pid")
    read -r rps p50 p99 < <(measure $port)
    read -r user1 sys1 < <(cpu_split "$pid")
    total=$(awk -v r="$rps" -v s="$seconds" 'BEGIN{print r*(s+3)}')
    # Microseconds per request: all, in user space, in the kernel.
    read -r cpu user sys < <(awk -v u="$((user1 - user0))" -v k="$((sys1 - sys0))" -v n="$total" -v hz="$(getconf CLK_TCK)" \
      'BEGIN{ if (n>0) printf "%.1f %.1f %.1f\n", (u+k)/hz*1e6/n, u/hz*1e6/n, k/hz*1e6/n; else print "- - -" }')
    printf "%-6s %-10s %12s %10s %10s %14s %10s %10s\n" "$round" "$target" "$rps" "$p50" "$p99" "$cpu" "$user" "$sys"
    echo "$round $target $rps $user $sys" >> "$work/results"
  done
done
median() { awk -v t="$1" -v c="${2:-3}" '$2==t {print $c}' "$work/results" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
mu=$(median upstream); mn=$(median nginx); mt=$(median tollgate); mn3=$(median nginx3); mt3=$(median tollgate3)
awk -v u="$mu" -v n="$mn" -v t="$mt" 'BEGIN { printf "\nmedian req/s: upstream %s, nginx %s, tollgate %s; tollgate/nginx = %.2f\n", u, n, t, t/n }'
awk -v n="$mn3" -v t="$mt3" -v t1="$mt" 'BEGIN { printf "3 targets (round robin): nginx %s, tollgate %s; tollgate/nginx = %.2f; tollgate 3 targets / 1 target = %.2f\n", n, t, t/n, t/t1 }'
awk -v nu="$(median nginx 4)" -v ns="$(median nginx 5)" -v tu="$(median tollgate 4)" -v ts="$(median tollgate 5)" 'BEGIN {
  printf "CPU per request (median, us): nginx user %s + kernel %s; tollgate user %s + kernel %s (user %.2fx, kernel %.2fx)\n", nu, ns, tu, ts, tu/nu, ts/ns }'

echo
printf "%-6s %10s %10s %15s %12s %12s %8s   %s\n" paired nginx tollgate tollgate/nginx "nginx p99" "tollgate p99" ratio \
  "us/req user+kernel: nginx, tollgate"
nginx_pid=$(worker_pid "$(cat "$work/nginx.pid")"); tollgate_pid=$(cat "$work/tollgate.pid")
paired_warmup $np $tp
for round in $(seq 1 "$rounds"); do
  split=$(paired_round pair-nginx $np "$nginx_pid" pair-tollgate $tp "$tollgate_pid")
  awk -v r="$round" -v n="$(wrk_rps "$work/pair-nginx.out")" -v t="$(wrk_rps "$work/pair-tollgate.out")" -v cpu="$split" \
    -v np="$(wrk_p99_us "$work/pair-nginx.out")" -v tp="$(wrk_p99_us "$work/pair-tollgate.out")" \
    'BEGIN { printf "%-6s %10.0f %10.0f %15.3f %10.0fus %10.0fus %8.2f   %s\n", r, n, t, t/n, np, tp, tp/np, cpu }' | tee -a "$work/paired"
done
for column in 4 7; do awk -v c=$column '{print $c}' "$work/paired" | sort -n | awk '{v[NR]=$1} END {printf "%s %s %s\n", v[int((NR+1)/2)], v[1], v[NR]}'; done \
  | paste -sd' ' | awk '{ printf "paired median tollgate/nginx = %.3f (rounds from %.3f to %.3f); p99 tollgate/nginx = %.2f (%.2f to %.2f)\n", $1, $2, $3, $4, $5, $6 }'
