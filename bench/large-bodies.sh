#!/usr/bin/env bash
# 1 GB download and 1 GB upload through Tollgate (release), printing the gateway's peak RSS.
# Download: nginx serves a 1 GB sparse file; upload: bench/sink.py counts the body.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(scripts/build-release 2>/dev/null | tail -1)
work=$(mktemp -d)
chmod 755 "$work"   # nginx workers run as an unprivileged user
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
truncate -s 1G "$work/file.bin"
cat > "$work/nginx.conf" <<NGINX
worker_processes 1; daemon off; pid $work/nginx.pid; error_log /dev/null;
events { worker_connections 64; }
http { access_log off; server { listen 127.0.0.1:18391; root $work; } }
NGINX
cat > "$work/tollgate.yaml" <<YAML
listen: [{address: "127.0.0.1:18393"}]
server: {threads: 1}
limits: {max_body_size: 2GB}
services:
  files: {targets: [{url: "http://127.0.0.1:18391"}]}
  sink: {targets: [{url: "http://127.0.0.1:18395"}]}
routes:
  - {match: {paths: ["/upload"]}, service: sink}
  - {match: {paths: ["/*"]}, service: files}
YAML
nginx -c "$work/nginx.conf" &
python3 bench/sink.py 18395 &
"$bin" run --config "$work/tollgate.yaml" --log-level error & gateway=$!
sleep 1
(while kill -0 $gateway 2>/dev/null; do awk '/VmRSS/ {print $2}' /proc/$gateway/status; sleep 0.1; done) > "$work/rss" &
echo "idle RSS: $(awk '/VmRSS/ {print $2}' /proc/$gateway/status) KB"
# The first read of the new (sparse) file is slow in nginx itself: read it once directly, and time
# the direct download too, so the gateway's figure has something to be read against.
curl -s -o /dev/null http://127.0.0.1:18391/file.bin
curl -s -o /dev/null -w "download direct from nginx: %{size_download} bytes in %{time_total} s\n" http://127.0.0.1:18391/file.bin
curl -s -o /dev/null -w "download: %{http_code}, %{size_download} bytes in %{time_total} s\n" http://127.0.0.1:18393/file.bin
curl -s -X POST -T "$work/file.bin" -o "$work/answer" -w "upload: %{http_code}, %{size_upload} bytes in %{time_total} s" \
  http://127.0.0.1:18393/upload
echo ", upstream: $(cat "$work/answer")"
echo "peak RSS: $(sort -n "$work/rss" | tail -1) KB"
