#!/usr/bin/env bash
# Regenerates scripts/hot-call-graph.txt, the call graph by which the release link lays out the
# functions a proxied request runs next to each other (lld's --call-graph-ordering-file, cdsort): the
# request path's code then takes fewer instruction-cache lines and pages. callgrind counts the calls
# on the current release build, under bench/callgrind.sh's load. Names that no longer exist after a
# change are ignored by the linker, so a stale file costs only some of the gain; rerun after changes
# to the hot path.
# Usage: bench/order.sh [seconds=4]
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
CALLGRIND_OUT="$work/cg.out" CALLGRIND_FLAGS=--demangle=no bench/callgrind.sh "${1:-4}" > "$work/summary"
requests=$(awk '/ requests, / {print $1; exit}' "$work/summary")
python3 bench/call_graph_order.py "$work/cg.out" "$requests" scripts/hot-call-graph.txt
