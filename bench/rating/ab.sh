#!/bin/sh
# bench/rating/ab.sh BEFORE_METERD AFTER_METERD DB [DAYS]
# The bills latency of two meterd binaries in the same run (issue 5): a copy
# of DB (a database made by run.sh; DB itself is never opened) in W
# (/tmp/bench-rating-ab), two daemons on the copy (before: port PORT,
# after: PORT+1), started together once the first has migrated the copy,
# then RUNS (3) rounds of: wrk -t1 -c1 before, after, bare.c 1 thread x
# BARE_REPS; wrk -t2 -c4 before, after, bare.c 4 threads x BARE_REPS/4 -
# run.sh's commands, on the tenant-month of ns-0042 in 2026-01 (DAYS: the
# days of data, for the number of days the month has; default 365).
# Prints the medians per binary and concurrency and the ratio to the bare
# select of the same round set.
set -eu
BEFORE=$(realpath "$1"); AFTER=$(realpath "$2"); DB=$(realpath "$3"); DAYS=${4:-365}
W=${W:-/tmp/bench-rating-ab}; PORT=${PORT:-19482}; RUNS=${RUNS:-3}; DUR=${DUR:-10}
BARE_REPS=${BARE_REPS:-1000}; SRC=$(cd "$(dirname "$0")" && pwd)
MONTH_DAYS=$(( DAYS < 31 ? DAYS : 31 ))
mkdir -p "$W"; cd "$W"
[ -f meterd.db ] || cp "$DB" meterd.db
cp "$SRC/pricing.yaml" pricing.yaml
cc -O2 -pthread -o bare "$SRC/bare.c" -lsqlite3
printf 'cluster: bench\nlisten: 127.0.0.1:%s\nstorage: {path: %s/meterd.db}\nlog: {level: warn}\npricing: {file: pricing.yaml}\n' \
    "$PORT" "$W" > before.yaml
printf 'cluster: bench\nlisten: 127.0.0.1:%s\nstorage: {path: %s/meterd.db}\nlog: {level: warn}\npricing: {file: pricing.yaml}\n' \
    "$((PORT + 1))" "$W" > after.yaml
T0=$(date +%s)
"$BEFORE" run -c before.yaml 2>>before.log & PB=$!
# the first start migrates the copy; the second starts on the migrated file
LATEST=$(ls "$SRC"/../../schema/[0-9][0-9][0-9]_*.sql | wc -l)
until [ "$(sqlite3 -readonly meterd.db 'PRAGMA user_version' 2>/dev/null)" = "$LATEST" ]; do
    kill -0 $PB 2>/dev/null || { echo "before exited; see $W/before.log" >&2; exit 1; }
    sleep 1
done
"$AFTER" run -c after.yaml 2>>after.log & PA=$!
trap 'kill $PB $PA 2>/dev/null || true' EXIT
for p in "$PORT" "$((PORT + 1))"; do
    until curl -sf "http://127.0.0.1:$p/readyz" >/dev/null 2>&1; do
        kill -0 $PB 2>/dev/null && kill -0 $PA 2>/dev/null || { echo "a daemon exited" >&2; exit 1; }
        sleep 1
    done
done
echo "both_ready_seconds $(( $(date +%s) - T0 )) (started together)"
U="/api/v1/bills?period=2026-01&namespace=ns-0042"
for p in "$PORT" "$((PORT + 1))"; do
    echo "body_md5_port_$p $(curl -sf "http://127.0.0.1:$p$U" | md5sum | cut -c1-32)"
    wrk -t1 -c1 -d2s "http://127.0.0.1:$p$U" > /dev/null
done
for r in $(seq "$RUNS"); do
    echo "load_before_round_$r $(cut -d' ' -f1 /proc/loadavg)"
    wrk -t1 -c1 -d"${DUR}s" --latency "http://127.0.0.1:$PORT$U" > before_wrk1_$r.txt
    wrk -t1 -c1 -d"${DUR}s" --latency "http://127.0.0.1:$((PORT + 1))$U" > after_wrk1_$r.txt
    ./bare select meterd.db 20454 $(( 20454 + MONTH_DAYS )) ns-0042 "$BARE_REPS" 1 > bare1_$r.txt
    wrk -t2 -c4 -d"${DUR}s" --latency "http://127.0.0.1:$PORT$U" > before_wrk4_$r.txt
    wrk -t2 -c4 -d"${DUR}s" --latency "http://127.0.0.1:$((PORT + 1))$U" > after_wrk4_$r.txt
    ./bare select meterd.db 20454 $(( 20454 + MONTH_DAYS )) ns-0042 $(( BARE_REPS / 4 )) 4 \
        > bare4_$r.txt
    echo "load_after_round_$r $(cut -d' ' -f1 /proc/loadavg)"
done
python3 - "$RUNS" <<'PY'
import re, statistics, sys
med, R = statistics.median, range(1, int(sys.argv[1]) + 1)
def ms(s):
    v, u = re.match(r"([\d.]+)(us|ms|s)$", s).groups()
    return float(v) * {"us": 1e-3, "ms": 1, "s": 1e3}[u]
def wrk(path):
    t = open(path).read()
    assert "Non-2xx" not in t, path + ": non-2xx responses"
    p = {k: ms(v) for k, v in re.findall(r"^\s+(50|99)%\s+(\S+)$", t, re.M)}
    return p["50"], p["99"], float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
for c in ("1", "4"):
    b = [dict(l.split() for l in open("bare%s_%d.txt" % (c, i))) for i in R]
    bp50 = med(float(x["bare_select_p50_ms"]) for x in b)
    bp99 = med(float(x["bare_select_p99_ms"]) for x in b)
    print("bare_threads_%s rows %s p50_ms %.2f p99_ms %.2f  (rounds: %s)" % (c,
          b[0]["bare_select_rows"], bp50, bp99,
          "; ".join("%s/%s" % (x["bare_select_p50_ms"], x["bare_select_p99_ms"]) for x in b)))
    for n in ("before", "after"):
        w = [wrk("%s_wrk%s_%d.txt" % (n, c, i)) for i in R]
        p50, p99 = med(x[0] for x in w), med(x[1] for x in w)
        print("%s_c%s p50_ms %.2f p99_ms %.2f req_s %.0f ratio_p50 %.2fx ratio_p99 %.2fx"
              "  (rounds: %s)" % (n, c, p50, p99, med(x[2] for x in w), p50 / bp50, p99 / bp99,
              "; ".join("%.2f/%.2f" % (x[0], x[1]) for x in w)))
PY
