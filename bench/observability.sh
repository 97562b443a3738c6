#!/usr/bin/env bash
# What telemetry costs, in one run on this machine: Tollgate (release, 1 event loop, core 1) with
# nothing on its route, and with the access log (JSON, to a file) + prometheus (with plugin timing)
# + opentelemetry (1% sampling, exporting OTLP/HTTP to a local receiver); wrk on core 0, nginx as
# the upstream and the trace receiver. Targets (issue 6): at most 10% of throughput, p99 at most 1.1x.
# Usage: bench/observability.sh [rounds=3] [seconds=10]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init "$@"

up=18481; off=18482; on=18483; admin=18484
upstream_config "$work/upstream.conf" $up
on_off_configs $off $on $up   # ON_PLUGINS measures another mix (see lib.sh)
echo "admin: {address: \"127.0.0.1:$admin\"}" >> "$work/on.yaml"

start upstream 0 nginx -c "$work/upstream.conf"
start off 1 "$bin" run --config "$work/off.yaml" --log-level error
start on 1 "$bin" run --config "$work/on.yaml" --log-level error
sleep 1.5

measure() { # port -> "req/s p99_ms"
  taskset -c 0 wrk -t1 -c50 -d3s "http://127.0.0.1:$1/users/42" >/dev/null 2>&1
  taskset -c 0 wrk -t1 -c50 -d"${seconds}s" --latency "http://127.0.0.1:$1/users/42" > "$work/wrk.out" 2>/dev/null
  if grep -q "Non-2xx" "$work/wrk.out"; then echo "port $1: answers other than 2xx" >&2; exit 1; fi
  awk '/Requests\/sec/ {rps=$2} $1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; p=v}
       END {printf "%s %.3f\n", rps, p}' "$work/wrk.out"
}
# CPU time per request (lib.sh's cpu_ticks: every thread): steadier than req/s on a shared machine,
# since it does not count the time other programs take the core away.
printf "%-6s %-6s %12s %10s %12s\n" round mode req/s p99_ms "cpu us/req"
for round in $(seq 1 "$rounds"); do
  for mode in off on; do
    port=$off; [ $mode = on ] && port=$on
    pid=$(cat "$work/$mode.pid")
    before=$(cpu_ticks "$pid")
    read -r rps p99 < <(measure $port)
    after=$(cpu_ticks "$pid")
    cpu=$(awk -v a="$after" -v b="$before" -v r="$rps" -v s="$seconds" -v hz="$(getconf CLK_TCK)" 'BEGIN{ printf "%.2f", (a-b)/hz*1e6/(r*(s+3)) }')
    printf "%-6s %-6s %12s %10s %12s\n" "$round" "$mode" "$rps" "$p99" "$cpu"
    echo "$round $mode $rps $p99 $cpu" >> "$work/results"
  done
done
median() { awk -v t="$1" -v c="$2" '$2==t {print $c}' "$work/results" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
r0=$(median off 3); r1=$(median on 3); p0=$(median off 4); p1=$(median on 4); c0=$(median off 5); c1=$(median on 5)
lines=0; [ -f "$work/access.log" ] && lines=$(wc -l < "$work/access.log")
awk -v r0="$r0" -v r1="$r1" -v p0="$p0" -v p1="$p1" -v c0="$c0" -v c1="$c1" -v l="$lines" 'BEGIN {
  printf "\nmedian req/s: off %s, on %s (%.1f%% cost); p99: off %s ms, on %s ms (%.2fx); CPU per request: off %s us, on %s us (+%.1f%%); %d access-log lines written\n",
    r0, r1, (1 - r1 / r0) * 100, p0, p1, p1 / p0, c0, c1, (c1 / c0 - 1) * 100, l }'
