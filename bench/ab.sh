#!/usr/bin/env bash
# A/B of two builds or two plugin mixes, measured as bench/cost.sh measures: both Tollgates (release,
# 1 event loop each) share core 1 at the same time, each driven by its own wrk (core 0), so the
# ratio of their req/s is the inverse ratio of their CPU per request and the machine's noise hits
# both alike. For judging a change to a hot path whose effect is a few percent.
# Usage: bench/ab.sh [rounds=6] [seconds=5]
#   A_BIN, B_BIN: the two binaries (default: this tree's release build for both)
#   A_PLUGINS, B_PLUGINS: each side's route plugins (YAML flow lists; ACCESS_LOG and COLLECTOR are
#   replaced as in lib.sh's on_off_configs; default: issue 6's telemetry mix for both)
#   A_NGINX=1: side A is nginx as a reverse proxy instead (bench/run.sh's: 1 worker, proxy_pass,
#   upstream keepalive, logs off), so B/A is Tollgate's throughput against nginx's with the noise
#   cancelled (B/A above 1: Tollgate needs less CPU per request)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init "${1:-6}" "${2:-5}"
a_bin=${A_BIN:-$bin}; b_bin=${B_BIN:-$bin}

up=18681; pa=18682; pb=18683
upstream_config "$work/upstream.conf" $up
for side in a b; do
  port=$pa; plugins=${A_PLUGINS:-}; [ $side = b ] && { port=$pb; plugins=${B_PLUGINS:-}; }
  ON_PLUGINS=$plugins on_off_configs 18689 "$port" $up
  sed "s#$work/access.log#$work/access-$side.log#" "$work/on.yaml" > "$work/$side.yaml"
done

start upstream 0 nginx -c "$work/upstream.conf"
if [ -n "${A_NGINX:-}" ]; then
  cat > "$work/proxy.conf" <<NGINX
worker_processes 1; daemon off; pid $work/proxy.nginx.pid; error_log /dev/null;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$up; keepalive 64; }
  server { listen 127.0.0.1:$pa; location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGINX
  start a 1 nginx -c "$work/proxy.conf"
else
  start a 1 "$a_bin" run --config "$work/a.yaml" --log-level error
fi
start b 1 "$b_bin" run --config "$work/b.yaml" --log-level error
sleep 1.5

paired_warmup $pa $pb
a_pid=$(cat "$work/a.pid"); [ -n "${A_NGINX:-}" ] && a_pid=$(worker_pid "$a_pid")
b_pid=$(cat "$work/b.pid")
printf "%-6s %10s %10s %8s   %s\n" round A_req/s B_req/s B/A "us/req user+kernel: A, B"
for round in $(seq 1 "$rounds"); do
  split=$(paired_round a $pa "$a_pid" b $pb "$b_pid")
  awk -v r="$round" -v a="$(wrk_rps "$work/a.out")" -v b="$(wrk_rps "$work/b.out")" -v cpu="$split" \
    'BEGIN { printf "%-6s %10.0f %10.0f %8.3f   %s\n", r, a, b, b/a, cpu }' | tee -a "$work/results"
done
awk '{print $4}' "$work/results" | sort -n | awk '{v[NR]=$1} END {
  m = v[int((NR+1)/2)]
  printf "\nmedian B/A %.3f (rounds from %.3f to %.3f): B costs %.1f%% %s CPU per request than A\n",
    m, v[1], v[NR], (m >= 1 ? 1 - 1/m : 1/m - 1) * 100, (m >= 1 ? "less" : "more") }'
