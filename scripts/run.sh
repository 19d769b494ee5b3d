#!/bin/sh
# run.sh BUILD CONFIG: start the ExtProc simulator in the background (two fake
# EAIG sidecars on 127.0.0.1:10640 and :10641, the ones config/meterd.yaml
# scrapes, and its ground truth on :10650), then meterd in the foreground on
# CONFIG.  Ctrl-C (SIGINT) stops meterd cleanly; the simulator is stopped
# whenever meterd exits.
set -eu
build=$1
config=$2
listen=$(sed -n 's/^listen:[[:space:]]*\([^[:space:]#]*\).*/\1/p' "$config" | head -n 1)
listen=${listen:-127.0.0.1:9180}
case $listen in
    :*) listen=127.0.0.1$listen ;;
    0.0.0.0:*) listen=127.0.0.1:${listen#0.0.0.0:} ;;
esac

sim_log=${TMPDIR:-/tmp}/extproc-sim.$$.log
"$build/extproc-sim" --targets 2 --base-port 10640 --control-port 10650 \
    --reset-every 600 --new-series-every 300 >"$sim_log" 2>&1 &
sim=$!
stop_sim() {
    kill "$sim" 2>/dev/null || true
    wait "$sim" 2>/dev/null || true
    rm -f "$sim_log"
}
trap stop_sim EXIT
trap ':' INT     # meterd gets the same SIGINT and stops; then we clean up
trap 'exit 143' TERM

# the simulator prints its truth URL once every port listens
i=0
until grep -q 'truth:' "$sim_log" 2>/dev/null; do
    if ! kill -0 "$sim" 2>/dev/null || [ $i -ge 100 ]; then
        echo "extproc-sim did not start:" >&2
        cat "$sim_log" >&2
        exit 1
    fi
    i=$((i + 1))
    sleep 0.05
done

echo "extproc-sim: two fake ExtProc sidecars (EAIG v0.4 metrics)"
echo "  sidecars: http://127.0.0.1:10640/metrics  http://127.0.0.1:10641/metrics"
echo "  truth:    http://127.0.0.1:10650/truth    (exact tokens the sidecars counted)"
echo "meterd: starting with $config"
echo "  health:   http://$listen/readyz"
echo "  metrics:  http://$listen/metrics"
echo "  usage:    http://$listen/api/v1/usage?from=$(date -u +%Y-%m-%d)&group_by=department,model,token_type"
echo "Ctrl-C stops both."
"$build/meterd" run -c "$config"
