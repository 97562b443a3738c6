#!/usr/bin/env bash
# What breaks after minutes, not seconds: Tollgate (release, 2 event loops) with every telemetry
# plugin (tracing at 10%), three routes under wrk (headers; rate-limiting; proxy-cache + gzip), a
# config reload every 0.5 s (SIGHUP, file rewrites, and now and then an invalid file, which must be
# refused), and malformed or truncated requests on many connections. Prints the RSS every 10 s and
# fails when the process dies, when its RSS passes the bound, or when a valid request fails after.
# Usage: bench/soak.sh [seconds=120] [max_rss_mb=200]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init 1 "${1:-120}"
max_rss_mb=${2:-200}
up=18681; up2=18682; listen_port=18683; admin=18684   # not "port": lib.sh loops over a global of that name
upstream_config "$work/upstream.conf" $up $up2
config="$work/tollgate.yaml"
cat > "$config" <<YAML
listen: [{address: "127.0.0.1:$listen_port"}]
server: {threads: 2}
admin: {address: "127.0.0.1:$admin"}
services:
  backend: {targets: [{url: "http://127.0.0.1:$up"}, {url: "http://127.0.0.1:$up2"}], balancer: least_connections}
  broken: {targets: [{url: "http://127.0.0.1:18689"}], timeouts: {connect: 200ms}}
plugins:
  - {name: access-log, config: {sink: {file: "$work/access.log"}}}
  - {name: prometheus}
  - {name: opentelemetry, config: {endpoint: "http://127.0.0.1:$up", sampling: 0.1}}
routes:
  - name: plain
    match: {paths: ["/plain/{path...}"]}
    service: backend
    plugins: [{name: headers, config: {request: {set: {X-Route: "\$(route)"}}, response: {add: {X-Path: "\$(path.path)"}}}}]
  - name: limited
    match: {paths: ["/limited/*"]}
    service: backend
    plugins: [{name: rate-limiting, config: {limits: ["2000/s"]}}]
  - name: cached
    match: {paths: ["/cached/*"]}
    service: backend
    plugins: [{name: proxy-cache, config: {cache_control: "max-age=1"}}, {name: compression, config: {encodings: [gzip], min_size: 10}}]
  - name: broken
    match: {paths: ["/broken/*"]}
    service: broken
YAML
"$bin" validate "$config" >/dev/null
nginx -c "$work/upstream.conf" & echo $! > "$work/upstream.pid"
"$bin" run --config "$config" --log-level error > "$work/tollgate.log" 2>&1 & echo $! > "$work/tollgate.pid"
pid=$(cat "$work/tollgate.pid")
for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$listen_port/plain/x" && break; sleep 0.2; done

for route in plain limited cached; do
  wrk -t1 -c20 -d"${seconds}s" "http://127.0.0.1:$listen_port/$route/a" > "$work/wrk.$route" 2>&1 &
done
# Reloads: two valid edits and SIGHUPs; every fifth round an invalid file for 0.3 s.
(
  end=$((SECONDS + seconds)); round=0
  while [ $SECONDS -lt $end ]; do
    round=$((round + 1))
    case $((round % 5)) in
      0) cp "$config" "$work/valid.yaml"; echo "routes: [{match: {paths: [nope]}, service: missing}]" >> "$config"
         sleep 0.3; cp "$work/valid.yaml" "$config";;
      1) sed -i 's|2000/s|2001/s|' "$config";;
      2) sed -i 's|2001/s|2000/s|' "$config";;
      *) kill -HUP "$pid";;
    esac
    sleep 0.5
  done
) &
# Bad input: random bytes, smuggling, oversized heads and URIs, TLS, truncated requests.
python3 - "$listen_port" "$seconds" > "$work/garbage.out" 2>&1 <<'PYTHON' &
import random, socket, sys, time
port, end = int(sys.argv[1]), time.time() + float(sys.argv[2])
random.seed(7)
cases = [
    lambda: random.randbytes(random.randint(1, 2000)),
    lambda: b"GET /plain/x HTTP/1.1\r\nHost: a\r\nX: " + b"a" * random.randint(1, 70000) + b"\r\n\r\n",
    lambda: b"POST /plain/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    lambda: b"GET /plain/" + b"a" * random.randint(1, 20000) + b" HTTP/1.1\r\nHost: a\r\n\r\n",
    lambda: b"POST /plain/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    lambda: b"GET /plain/%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n",
    lambda: b"GET /broken/x HTTP/1.1\r\nHost: a\r\n\r\n",
    lambda: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + random.randbytes(100),
]
connections = 0
while time.time() < end:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            data = random.choice(cases)()
            s.sendall(data[: random.randint(1, len(data))] if random.random() < 0.3 else data)
            if random.random() < 0.5:
                s.recv(200)
        connections += 1
    except OSError:
        pass
print(connections)
PYTHON

failed=0
for _ in $(seq 1 $((seconds / 10))); do
  sleep 10
  if ! kill -0 "$pid" 2>/dev/null; then echo "tollgate exited"; failed=1; break; fi
  rss_kb=$(ps -o rss= -p "$pid"); echo "rss $((rss_kb / 1024)) MB"
  [ $((rss_kb / 1024)) -le "$max_rss_mb" ] || { echo "over $max_rss_mb MB"; failed=1; }
done
wait $(jobs -p | grep -v "^$pid$" | grep -v "^$(cat "$work/upstream.pid")$") 2>/dev/null || true
for route in plain limited cached; do
  echo "$route: $(awk '/requests in/ {print $1, "requests"}' "$work/wrk.$route"), $(awk '/Non-2xx/ {n=$NF} END {print n+0}' "$work/wrk.$route") non-2xx"
done
echo "malformed connections: $(cat "$work/garbage.out")"
curl -s "http://127.0.0.1:$admin/metrics" | grep -E '^tollgate_(config_reloads_total|trace_requests_dropped_total|access_log_dropped_total)' || true
status=$(curl -s -o /dev/null -w "%{http_code}" "http://127.0.0.1:$listen_port/plain/after")
echo "a request after the soak: $status"
[ "$status" = 200 ] || failed=1
[ $failed = 0 ] && echo "soak passed" || { echo "soak FAILED; the log:"; tail -5 "$work/tollgate.log"; exit 1; }
