#!/usr/bin/env bash
# What a plugin mix costs in CPU, measured so that the machine's noise cancels out: two Tollgates
# (release, 1 event loop each), one with nothing on its route and one with $ON_PLUGINS, run at the
# same time on the same core (1), each driven by its own wrk (core 0) with the upstream nginx. The
# scheduler shares the core between the two busy processes, so the ratio of their req/s is the
# inverse ratio of their CPU per request; a stolen or slowed core slows both alike. Sequential runs
# (bench/observability.sh) also show the effect on p99, but their rounds swing by +-10% on a shared
# VM; these ratios repeat to within about +-1.5%.
# Each round also prints each server's CPU per request, user space + kernel (all threads).
# Usage: bench/cost.sh [rounds=5] [seconds=6]
# ON_PLUGINS: a YAML flow list (ACCESS_LOG and COLLECTOR are replaced); the default is issue 6's mix.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init "$@"

up=18581; off=18582; on=18583
upstream_config "$work/upstream.conf" $up
on_off_configs $off $on $up

start upstream 0 nginx -c "$work/upstream.conf"
start off 1 "$bin" run --config "$work/off.yaml" --log-level error
start on 1 "$bin" run --config "$work/on.yaml" --log-level error
sleep 1.5

paired_warmup $off $on
off_pid=$(cat "$work/off.pid"); on_pid=$(cat "$work/on.pid")
printf "%-6s %10s %10s %8s %8s   %s\n" round off_req/s on_req/s on/off cost "us/req user+kernel: off, on"
for round in $(seq 1 "$rounds"); do
  split=$(paired_round off $off "$off_pid" on $on "$on_pid")
  r0=$(wrk_rps "$work/off.out"); r1=$(wrk_rps "$work/on.out")
  awk -v r="$round" -v a="$r0" -v b="$r1" -v cpu="$split" \
    'BEGIN { printf "%-6s %10.0f %10.0f %8.3f %7.1f%%   %s\n", r, a, b, b/a, (1-b/a)*100, cpu }' | tee -a "$work/results"
done
awk '{print $5+0}' "$work/results" | sort -n | awk '{v[NR]=$1} END {
  printf "\nmedian cost %.1f%% of CPU per request (rounds from %.1f%% to %.1f%%)\n", v[int((NR+1)/2)], v[1], v[NR] }'
