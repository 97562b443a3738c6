# Shared pieces of the bench scripts (sourced, not run).

# upstream_config FILE PORT: nginx, 1 worker, serving the 41-byte JSON body every benchmark uses.
upstream_config() {
  cat > "$1" <<NGINX
worker_processes 1; daemon off; pid $1.pidfile; error_log /dev/null;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$2; location / { default_type application/json; return 200 '{"id":42,"name":"Ada Lovelace","ok":true}'; } } }
NGINX
}

# tollgate_config FILE PORT UPSTREAM_PORT: one event loop, one route, no plugins.
tollgate_config() {
  cat > "$1" <<YAML
listen: [{address: "127.0.0.1:$2"}]
server: {threads: 1}
services:
  backend: {targets: [{url: "http://127.0.0.1:$3"}]}
routes:
  - {match: {paths: ["/*"]}, service: backend}
YAML
}
