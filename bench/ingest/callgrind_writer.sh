#!/bin/sh
# bench/ingest/callgrind_writer.sh BUILD_DIR [SECONDS] [TARGETS]
# Instructions of meterd's writer thread per billed series per scrape
# (RESULTS.md "Writer path"): 5 simulator targets, 2 s interval, 60 s under
# callgrind with one output file per thread; the writer thread is the one
# running writer_main.  Prints the writer thread's total Ir, commit_jobs'
# inclusive Ir (the write path without idle rating ticks), the scrapes
# committed and billed series, and the quotients.  127.0.0.1 only.
set -eu
B=${1:?build dir}; SECS=${2:-60}; N=${3:-5}
B=$(cd "$B" && pwd)
D=$(mktemp -d /tmp/cgw.XXXXXX)
BASE=${CGW_BASE:-32100}; CTL=$((BASE - 1)); API=$((BASE - 2))
"$B/extproc-sim" --targets "$N" --base-port "$BASE" --control-port "$CTL" --seed 1 --quiet \
    >"$D/sim.log" 2>&1 &
SIM=$!
trap 'kill $SIM 2>/dev/null || true' EXIT
{
    printf 'cluster: bench\nlisten: 127.0.0.1:%d\nstorage:\n  path: %s/var/meterd.db\n' "$API" "$D"
    printf 'scrape:\n  interval: 2s\n  timeout: 2s\nlog:\n  level: warn\ntargets:\n'
    i=0; while [ $i -lt "$N" ]; do
        printf '  - url: http://127.0.0.1:%d/metrics\n    namespace: bench\n' $((BASE + i)); i=$((i + 1)); done
} >"$D/cg.yaml"
sleep 1
(cd "$D" && exec valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$D/cg.out" \
    "$B/meterd" run -c "$D/cg.yaml" >"$D/meterd.log" 2>&1) &
VG=$!
sleep "$SECS"
# meterd's own view: scrapes and billed series per target
curl -s "http://127.0.0.1:$API/api/v1/targets" >"$D/targets.json" || true
kill -TERM $VG 2>/dev/null || true
wait $VG || true
python3 - "$D" <<'PY'
import glob, json, re, subprocess, sys
d = sys.argv[1]
t = json.load(open(d + "/targets.json"))
ts = t["targets"] if isinstance(t, dict) else t
scrapes = sum(x["scrapes"] - sum(x.get("failures", {}).values()) for x in ts)
billed = sum(x.get("billed_series", 0) for x in ts) / max(1, len(ts))
for f in sorted(glob.glob(d + "/cg.out-*")):
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", f],
                         capture_output=True, text=True).stdout
    tot = int(re.search(r"([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", out).group(1).replace(",", ""))
    def incl(fn):
        m = re.search(r"^\s*([\d,]+) \([\d.]+%\)\s+\S*:(?:" + fn + r")(?:\.\S+)? \[", out, re.M)
        return int(m.group(1).replace(",", "")) if m else 0
    if incl("writer_main") < 0.9 * tot:
        continue
    cj = incl("commit_jobs")
    print("writer thread file %s" % f)
    per = scrapes * billed
    print("dir %s\nscrapes %d billed_series_per_target %.1f" % (d, scrapes, billed))
    print("writer thread Ir %d = %.0f per billed series per scrape (%.0f per scrape)" % (tot, tot / per, tot / scrapes))
    print("commit_jobs incl Ir %d = %.0f per billed series per scrape (%.0f per scrape)" % (cj, cj / per, cj / scrapes))
    for fn in ["md_ledger_apply", "write_staged", "uagg_flush", "md_rating_tick", "md_rating_touch",
               "sqlite3_step", "sqlite3_prepare_v2", "sqlite3_exec", "sqlite3WalFrames",
               "md_usnap_agg_stage_usage"]:
        print("  %-30s %12d  %.0f/series-scrape" % (fn, incl(fn), incl(fn) / per))
PY
