#!/bin/sh
# run.sh BUILD CONFIG: start meterd in the foreground on CONFIG.
# Ctrl-C (SIGINT) stops it cleanly.
set -eu
build=$1
config=$2
listen=$(sed -n 's/^listen:[[:space:]]*\([^[:space:]#]*\).*/\1/p' "$config" | head -n 1)
echo "meterd: starting with $config"
echo "  health:  http://${listen:-127.0.0.1:9180}/readyz"
echo "  metrics: http://${listen:-127.0.0.1:9180}/metrics"
exec "$build/meterd" run -c "$config"
