#!/bin/sh
# bench/ingest/profile.sh: meterd's instructions per scrape and per sample
# under callgrind (deterministic counts; `perf stat -e instructions` is not
# supported on this VM), as in bench/RESULTS.md "Where meterd's time goes".
#
#   bench/ingest/profile.sh [BUILD_DIR] [gzip|identity]
#
# Environment (defaults): TARGETS=5 SECONDS_RUN=60 INTERVAL=2s PORT=32000
# Starts extproc-sim with TARGETS targets, runs `meterd run` under
# valgrind --tool=callgrind for SECONDS_RUN seconds, stops it with SIGTERM,
# then prints the successful scrapes and callgrind_annotate --inclusive=yes.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build}
comp=${2:-gzip}
n=${TARGETS:-5}
secs=${SECONDS_RUN:-60}
port=${PORT:-32000}
dir=$(mktemp -d /tmp/meterd-profile-XXXXXX)
"$build/extproc-sim" --targets "$n" --base-port "$((port + 1))" --control-port "$port" \
    --seed 1 --quiet > "$dir/sim.log" 2>&1 &
sim=$!
trap 'kill $sim 2>/dev/null || true; wait $sim 2>/dev/null || true' EXIT
i=0
until curl -sf "http://127.0.0.1:$port/healthz" > /dev/null; do
    i=$((i + 1))
    if [ "$i" -gt 50 ] || ! kill -0 "$sim" 2>/dev/null; then
        echo "profile.sh: extproc-sim did not start:" >&2; cat "$dir/sim.log" >&2; exit 1
    fi
    sleep 0.2
done
{
    printf 'cluster: prof\nlisten: 127.0.0.1:%d\nstorage:\n  path: %s/var/meterd.db\n' \
        "$((port + 1000))" "$dir"
    printf 'scrape:\n  interval: %s\n  timeout: %s\n  compression: %s\n' \
        "${INTERVAL:-2s}" "${INTERVAL:-2s}" "$comp"
    printf 'log:\n  level: warn\ntargets:\n'
    i=1
    while [ "$i" -le "$n" ]; do
        printf '  - url: http://127.0.0.1:%d/metrics\n    namespace: prof\n' "$((port + i))"
        i=$((i + 1))
    done
} > "$dir/cg.yaml"
valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
    "$build/meterd" run -c "$dir/cg.yaml" > "$dir/meterd.log" 2>&1 &
md=$!
sleep "$secs"
curl -s "http://127.0.0.1:$((port + 1000))/api/v1/targets" > "$dir/targets.json" || true
kill -TERM "$md"
wait "$md" || true
python3 - "$dir/targets.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
ok = sum(t["scrapes"] - sum(t["failures"].values()) for t in d["targets"])
smp = [t["samples"] for t in d["targets"]]
print("successful scrapes: %d; samples per body: %s" % (ok, sorted(set(smp))))
PY
callgrind_annotate --inclusive=yes "$dir/callgrind.out" 2>/dev/null | head -60
echo "profile in $dir/callgrind.out"
