#!/bin/bash
# bench/ingest/window.sh: one quick measuring window, for A/B checks between
# full run.sh benchmarks (bench/RESULTS.md "Fewer wake-ups").
#
#   bench/ingest/window.sh METERD_BINARY [PORT] [SECONDS]
#
# Environment: N (targets, 200), SIM (extproc-sim binary, next to meterd),
# COMP (scrape.compression; meterd's default when unset).  Starts a fresh
# simulator with N targets on 127.0.0.1:PORT+1.. (PORT 21000: the simulator's
# ports and meterd's PORT+1000 stay below Linux's ephemeral range, 32768 and up:
# outgoing connections take ports there, the simulator then failed to bind some
# and a window counted a fraction of the targets) and meterd scraping it every
# 2 s, waits 12 s, then prints over a SECONDS-long window (30): meterd's
# utime+stime per scrape and per million samples (613 per body), and per
# thread the CPU and voluntary/involuntary context switches per scrape.
set -u
bin=$1; port=${2:-21000}; win=${3:-30}; n=${N:-200}
sim=${SIM:-$(dirname "$bin")/extproc-sim}
d=$(mktemp -d /tmp/meterd-window-XXXXXX)
"$sim" --targets "$n" --base-port $((port + 1)) --control-port "$port" --seed 1 --quiet \
    > "$d/sim.log" 2>&1 &
simpid=$!
trap 'kill $mdpid $simpid 2>/dev/null; wait 2>/dev/null' EXIT
sleep 1.5
{
    printf 'cluster: window\nlisten: 127.0.0.1:%d\nstorage:\n  path: %s/meterd.db\n' \
        $((port + 1000)) "$d"
    printf 'scrape:\n  interval: 2s\n  timeout: 2s\n'
    [ -n "${COMP:-}" ] && printf '  compression: %s\n' "$COMP"
    printf 'log:\n  level: warn\ntargets:\n'
    i=1
    while [ $i -le "$n" ]; do
        printf '  - url: http://127.0.0.1:%d/metrics\n    namespace: w\n' $((port + i))
        i=$((i + 1))
    done
} > "$d/m.yaml"
"$bin" run -c "$d/m.yaml" > "$d/meterd.log" 2>&1 &
mdpid=$!
sleep 12
scrapes() {
    curl -s "http://127.0.0.1:$((port + 1000))/api/v1/targets" |
        python3 -c 'import json,sys; print(sum(t["scrapes"] for t in json.load(sys.stdin)["targets"]))'
}
snap() {
    for t in /proc/$mdpid/task/*; do
        echo "$(basename "$t") $(awk '{print $14, $15}' "$t/stat")" \
            "$(awk '/^(voluntary|nonvoluntary)_ctxt/ {printf "%s ", $2}' "$t/status")"
    done
}
s0=$(scrapes); snap > "$d/a"; sleep "$win"; s1=$(scrapes); snap > "$d/b"
python3 - "$d/a" "$d/b" $((s1 - s0)) "$(getconf CLK_TCK)" <<'PY'
import sys
a = {l.split()[0]: l.split() for l in open(sys.argv[1])}
b = {l.split()[0]: l.split() for l in open(sys.argv[2])}
n, tk = int(sys.argv[3]), float(sys.argv[4])
cpu = sum(int(y[1]) + int(y[2]) - int(a[k][1]) - int(a[k][2]) for k, y in b.items() if k in a) / tk
print("scrapes %d  cpu %.2f s  %.0f us per scrape  %.3f CPU-s per million samples"
      % (n, cpu, cpu / n * 1e6, cpu / n / 613 * 1e6))
for k, y in b.items():
    x = a.get(k)
    if x is None:
        continue
    u = (int(y[1]) - int(x[1])) / tk * 1e6 / n
    s = (int(y[2]) - int(x[2])) / tk * 1e6 / n
    v = (int(y[3]) - int(x[3])) / n
    nv = (int(y[4]) - int(x[4])) / n
    if u + s > 0 or v > 0.01:
        print("  thread %-8s user %4.0f us  sys %4.0f us  switches %.2f voluntary, %.2f involuntary per scrape"
              % (k, u, s, v, nv))
PY
