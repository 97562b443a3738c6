#!/usr/bin/env bash
# What authentication costs on a route, in one run on this machine: Tollgate (release, 1 event loop)
# on a plain route, a key-auth route and a jwt route (ES256, the key given inline, the same token on
# every request as a client would send it), each pinned to core 1, wrk on core 0; nginx serves the
# upstream. Targets (issue 4): key-auth at most 5% of throughput, JWT at most 15%.
# Usage: bench/auth.sh [rounds=3] [seconds=10]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init "$@"

up=18381; tp=18382; kp=18383; jp=18384
key="bench-key-0123456789abcdef"
token=$(python3 bench/make_jwt.py "$work")
pem=$(awk '{printf "%s\\n", $0}' "$work/ec.pub.pem")
upstream_config "$work/upstream.conf" $up
tollgate_config "$work/plain.yaml" $tp $up
CONSUMERS="[{name: bench, credentials: {key_auth: [{key: \"$key\"}], jwt: [{subject: bench}]}}]" \
ROUTE_PLUGINS="[{name: key-auth}]" tollgate_config "$work/key.yaml" $kp $up
CONSUMERS="[{name: bench, credentials: {jwt: [{subject: bench}]}}]" \
ROUTE_PLUGINS="[{name: jwt, config: {algorithms: [ES256], issuer: \"https://bench\", keys: [{kid: bench, alg: ES256, pem: \"$pem\"}]}}]" \
  tollgate_config "$work/jwt.yaml" $jp $up

start upstream 0 nginx -c "$work/upstream.conf"
start plain 1 "$bin" run --config "$work/plain.yaml" --log-level error
start key 1 "$bin" run --config "$work/key.yaml" --log-level error
start jwt 1 "$bin" run --config "$work/jwt.yaml" --log-level error
sleep 1.5

measure() { # port header -> req/s (fails on answers other than 2xx)
  taskset -c 0 wrk -t1 -c50 -d3s -H "$2" "http://127.0.0.1:$1/users/42" >/dev/null 2>&1
  taskset -c 0 wrk -t1 -c50 -d"${seconds}s" -H "$2" "http://127.0.0.1:$1/users/42" > "$work/wrk.out" 2>/dev/null
  if grep -q "Non-2xx" "$work/wrk.out"; then echo "port $1: answers other than 2xx" >&2; exit 1; fi
  awk '/Requests\/sec/ {print $2}' "$work/wrk.out"
}
# CPU per request is the server's CPU time over the measured and warm-up runs divided by their requests
# (approximated as req/s times their length): steadier than req/s, since it does not count the time
# other programs take the core away.
printf "%-6s %-10s %12s %12s\n" round route req/s "cpu us/req"
for round in $(seq 1 "$rounds"); do
  for route in plain key jwt; do
    case $route in
      plain) port=$tp; header="X-Bench: 1";;
      key) port=$kp; header="X-API-Key: $key";;
      jwt) port=$jp; header="Authorization: Bearer $token";;
    esac
    pid=$(cat "$work/$route.pid")
    before=$(cpu_ticks "$pid")
    rps=$(measure $port "$header")
    cpu=$(cpu_per_request "$before" "$(cpu_ticks "$pid")" "$(awk -v r="$rps" -v s="$seconds" 'BEGIN {print r * (s + 3)}')")
    printf "%-6s %-10s %12s %12s\n" "$round" "$route" "$rps" "$cpu"
    echo "$round $route $rps $cpu" >> "$work/results"
  done
done
median() { awk -v t="$1" '$2==t {print $3}' "$work/results" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
p=$(median plain); k=$(median key); j=$(median jwt)
awk -v p="$p" -v k="$k" -v j="$j" 'BEGIN {
  printf "\nmedian req/s: plain %s, key-auth %s (%.1f%% cost), jwt ES256 %s (%.1f%% cost)\n", p, k, (1 - k / p) * 100, j, (1 - j / p) * 100 }'
echo "median of the rounds' costs: key-auth $(paired_cost "$work/results" plain key 3)%, jwt $(paired_cost "$work/results" plain jwt 3)%"
# From CPU per request: the throughput lost when the core is the limit (1 - plain's CPU / the route's).
echo "median of the rounds' costs from CPU per request: key-auth $(paired_cost "$work/results" key plain 4)%, jwt $(paired_cost "$work/results" jwt plain 4)%"
