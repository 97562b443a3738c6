#!/usr/bin/env bash
# Regenerates scripts/tollgate.profdata, the execution counts by which scripts/build-release
# optimizes (LLVM IR-level PGO). It builds the instrumented binary (TOLLGATE_PGO=generate, in
# .build-pgo), runs it on one core behind the benchmarks' nginx upstream and trains it with wrk:
# GET requests to a route without plugins, POST requests with a 2 KB body to it, then GET requests to
# a route with the telemetry plugins (access log, Prometheus, OpenTelemetry at 1%). The counts of
# both runs are merged. Paths the training does not take are built for size, the rest for speed:
# retrain after changes to the request path, and add its load here when a new path matters.
# Usage: bench/pgo.sh [seconds=8]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
need_tools
seconds=${1:-8}
instrumented=$(TOLLGATE_PGO=generate scripts/build-release | tail -1)
work=$(mktemp -d)
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
up=18781
upstream_config "$work/upstream.conf" $up
on_off_configs 18782 18783 $up
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.rep("x", 2048)
LUA
start upstream 0 nginx -c "$work/upstream.conf"
for side in off on; do
  port=18782; [ $side = on ] && port=18783
  LLVM_PROFILE_FILE="$work/$side.profraw" start $side 1 "$instrumented" run --config "$work/$side.yaml" --log-level error
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.2; done
  taskset -c 0 wrk -t1 -c50 -d"${seconds}s" "http://127.0.0.1:$port/users/42" > "$work/wrk.out"
  if [ $side = off ]; then
    taskset -c 0 wrk -t1 -c20 -d"$((seconds / 4 + 1))s" -s "$work/post.lua" "http://127.0.0.1:$port/orders" >> "$work/wrk.out"
  fi
  if grep -q "Non-2xx" "$work/wrk.out"; then echo "training answers were not all 2xx:" >&2; cat "$work/wrk.out" >&2; exit 1; fi
  # The counts are written when the process exits: SIGTERM drains it.
  pid=$(cat "$work/$side.pid"); kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm "$work/$side.pid"
  [ -s "$work/$side.profraw" ] || { echo "no counts from the $side run" >&2; exit 1; }
done
toolchain=$(dirname "$(readlink -f "$(command -v swift)")")
# Indexed, not text: llvm-profdata cannot read back the text it writes for value profiles (the targets
# of indirect calls, which the compiler promotes to direct calls).
"$toolchain/llvm-profdata" merge --sparse -o scripts/tollgate.profdata "$work/off.profraw" "$work/on.profraw"
"$toolchain/llvm-profdata" show scripts/tollgate.profdata | tail -4
