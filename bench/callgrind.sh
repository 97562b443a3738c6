#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind (exact and repeatable, unlike
# req/s on a shared VM). nginx serves the upstream; Tollgate (release, 1 event loop, stripped of
# debug info for valgrind) runs under callgrind; wrk warms up, the counters are zeroed, then a
# measured run's requests divide the instructions counted.
# Usage: bench/callgrind.sh [seconds=5]  (prints the per-request total and the top functions)
# ROUTE_PLUGINS and CONSUMERS (YAML flow lists, see lib.sh) and WRK_HEADER measure a route with plugins.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
seconds=${1:-5}
need_tools valgrind
# TOLLGATE_BIN measures another build (another flag set, say) instead of this tree's release build.
if [ -z "${TOLLGATE_BIN:-}" ]; then
  TOLLGATE_BIN=$(scripts/build-release 2>/dev/null | tail -1)
fi
work=$(mktemp -d)
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
up=18191; tp=18193
upstream_config "$work/upstream.conf" $up
tollgate_config "$work/tollgate.yaml" $tp $up
cp "$TOLLGATE_BIN" "$work/tollgate"
strip -g "$work/tollgate"
nginx -c "$work/upstream.conf" & echo $! > "$work/nginx.pid"
valgrind --tool=callgrind ${CALLGRIND_FLAGS:-} --callgrind-out-file="$work/cg.out" "$work/tollgate" run --config "$work/tollgate.yaml" \
  --log-level error >/dev/null 2>&1 & echo $! > "$work/valgrind.pid"
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$tp/" && break; sleep 0.2; done
header=(); [ -n "${WRK_HEADER:-}" ] && header=(-H "$WRK_HEADER")
wrk -t1 -c10 -d3s "${header[@]}" "http://127.0.0.1:$tp/users/42" >/dev/null
callgrind_control -z "$(cat "$work/valgrind.pid")" >/dev/null
wrk -t1 -c10 -d"${seconds}s" "${header[@]}" "http://127.0.0.1:$tp/users/42" > "$work/wrk.out"
requests=$(awk '/requests in/ {print $1}' "$work/wrk.out")
if grep -q "Non-2xx" "$work/wrk.out"; then echo "warning: some answers were not 2xx:" >&2; grep "Non-2xx" "$work/wrk.out" >&2; fi
callgrind_control -d "$(cat "$work/valgrind.pid")" >/dev/null
sleep 1
[ -n "${CALLGRIND_OUT:-}" ] && cp "$work/cg.out.1" "$CALLGRIND_OUT"   # keep the dump for callgrind_annotate
python3 "$(dirname "$0")/callgrind_summary.py" "$work/cg.out.1" "$requests"
