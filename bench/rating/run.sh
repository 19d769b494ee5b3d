#!/bin/sh
# bench/rating/run.sh BUILD_DIR [DAYS] [HOURS_PER_DAY]
# Rating and bills benchmark (issue 5).  NS=1000 namespaces x MODELS=20
# models x 5 token types (100,000 usage series) of usage for DAYS days from
# 2026-01-01 (default 365), HOURS_PER_DAY active hours each (default 1),
# then:
#  - the whole range rated by `meterd backfill` (the code the writer's tick
#    runs), timed for real in two slices: the first FIRST (31) days, compared
#    with bare.c inserting the same rows, and the rest;
#  - a second backfill of the first slice (idempotent: nothing changes);
#  - the usage history deleted (DELETE FROM usage_hourly) unless
#    KEEP_USAGE=1: bills of closed days never read usage.  (Before schema
#    006 the daemon's start summed all of usage_hourly and took more than
#    13 minutes on a year of it; it now reads the folded totals, see
#    bench/startup/run.sh.)  The daemon's start is timed
#    (daemon_ready_seconds);
#  - RUNS (3) rounds of: wrk -t1 -c1 (one request at a time) and
#    wrk -t2 -c4 on GET /api/v1/bills?period=2026-01&namespace=ns-0042,
#    and bare.c selecting the same tenant-month from the same database at
#    the same concurrency (1 thread, then 4 threads with a connection
#    each; BARE_REPS (1000) selects in all, split over the threads); the
#    summary gives the medians of the rounds and the ratio to the bare
#    select per concurrency.
# PHASE=latency skips to the daemon start and the latency rounds on the
# work dir of an earlier run (the summary then lacks the backfill lines).
# Needs: sqlite3, curl, wrk, python3, cc.  Work dir W (/tmp/bench-rating):
# about 15 GB for the default shape.
set -eu
B=$(cd "$1" && pwd); DAYS=${2:-365}; HOURS=${3:-1}; NS=${NS:-1000}; MODELS=${MODELS:-20}
FIRST=${FIRST:-31}; RUNS=${RUNS:-3}; DUR=${DUR:-10}; BARE_REPS=${BARE_REPS:-1000}
W=${W:-/tmp/bench-rating}; PORT=${PORT:-19381}
SRC=$(cd "$(dirname "$0")" && pwd)
[ "$FIRST" -le "$DAYS" ] || FIRST=$DAYS
PHASE=${PHASE:-all}
if [ "$PHASE" = all ]; then rm -rf "$W"; mkdir -p "$W"; fi
cd "$W"
T_ALL=$(date +%s)
cp "$SRC/pricing.yaml" pricing.yaml
cat > meterd.yaml <<C
cluster: bench
listen: 127.0.0.1:$PORT
storage: {path: $W/meterd.db}
log: {level: warn}
pricing: {file: pricing.yaml}
C
cc -O2 -pthread -o bare "$SRC/bare.c" -lsqlite3

# start_daemon: runs meterd, waits for /readyz (its start reads the usage
# history for the /metrics snapshot, so a year takes a while); P = its pid
start_daemon() {
    "$B/meterd" run -c meterd.yaml 2>>daemon.log & P=$!
    s=$(date +%s.%N)
    for i in $(seq 36000); do
        curl -sf http://127.0.0.1:$PORT/readyz >/dev/null 2>&1 && break
        kill -0 $P 2>/dev/null || { echo "meterd exited; see $W/daemon.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "daemon_ready_seconds $(python3 -c "import time; print('%.1f' % (time.time() - $s))")"
}
stop_daemon() { kill $P; wait $P || true; }

FROM_DAY=20454   # 2026-01-01
if [ "$PHASE" = all ]; then
start_daemon >/dev/null; stop_daemon      # creates the schema
t0=$(date +%s.%N)
# the usage table's secondary index is built after the rows (a sort instead
# of 36 M random B-tree inserts); the schema ends up the same
sqlite3 meterd.db >/dev/null <<SQL
PRAGMA journal_mode=WAL;
PRAGMA cache_size=-1000000;
BEGIN;
DROP INDEX usage_hourly_dim;
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $NS - 1),
     m(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM m WHERE j < $MODELS - 1),
     t(k, name) AS (VALUES (0, 'input'), (1, 'cached_input'), (2, 'cache_creation_input'),
                           (3, 'output'), (4, 'reasoning'))
INSERT INTO dims(cluster, namespace, department, model, provider, operation, token_type)
SELECT 'bench', printf('ns-%04d', i), 'd', printf('model-%02d', j), 'openai', 'chat', name
FROM n, m, t;
WITH RECURSIVE h(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM h WHERE x < $DAYS * $HOURS - 1)
INSERT INTO usage_hourly(hour_s, dim_id, tokens, requests)
SELECT (($FROM_DAY + x / $HOURS) * 86400) + (x % $HOURS) * 3600, d.id,
       CASE d.token_type WHEN 'input' THEN 20000 WHEN 'output' THEN 8000 ELSE 1000 END
         + (d.id * 7 + x) % 997, 0
FROM h, dims d;
CREATE INDEX usage_hourly_dim ON usage_hourly(dim_id, hour_s);
COMMIT;
SQL
t1=$(date +%s.%N)
echo "usage_rows $(sqlite3 meterd.db "SELECT count(*) FROM usage_hourly")"
echo "usage_generate_seconds $(python3 -c "print('%.1f' % ($t1 - $t0))")"

day() { date -u -d "2026-01-01 + $1 days" +%Y-%m-%d; }
backfill() {   # FROM_OFFSET TO_OFFSET OUT: prints seconds
    s=$(date +%s.%N)
    "$B/meterd" backfill -c meterd.yaml --from "$(day "$1")" --to "$(day "$2")" --json > "$3"
    python3 -c "import time; print('%.2f' % (time.time() - $s))"
}
BF1=$(backfill 0 "$FIRST" bf1.json); echo "backfill_first_seconds $BF1"
BF2=0
[ "$FIRST" -lt "$DAYS" ] && BF2=$(backfill "$FIRST" "$DAYS" bf2.json)
echo "backfill_rest_seconds $BF2"
BF3=$(backfill 0 "$FIRST" bf3.json); echo "backfill_again_seconds $BF3"
LINES=$(sqlite3 meterd.db "SELECT count(*) FROM bill_lines")
./bare insert "$W/bare.db" "$NS" "$MODELS" "$FIRST" > bare_insert.txt
rm -f bare.db bare.db-wal bare.db-shm
echo "db_bytes $(du -b meterd.db | cut -f1)"
if [ "${KEEP_USAGE:-0}" != 1 ]; then
    sqlite3 meterd.db "DELETE FROM usage_hourly; PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
    echo "usage history deleted before the daemon start (KEEP_USAGE=1 keeps it)"
fi
echo "$LINES $BF1 $BF2 $BF3" > backfill.txt
fi
read LINES BF1 BF2 BF3 < backfill.txt
start_daemon > ready.txt
cat ready.txt
URL="http://127.0.0.1:$PORT/api/v1/bills?period=2026-01&namespace=ns-0042"
MONTH_DAYS=$(( DAYS < 31 ? DAYS : 31 ))
N=$(curl -sf "$URL" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["lines"]))')
echo "tenant_month_lines $N"
[ "$N" -eq $(( MONTH_DAYS * MODELS * 5 )) ] || { echo "expected $(( MONTH_DAYS * MODELS * 5 ))" >&2; exit 1; }
curl -sf -o month.json "$URL"; echo "response_bytes $(wc -c < month.json)"
wrk -t1 -c1 -d2s "$URL" > /dev/null      # warm the reader connections
for r in $(seq "$RUNS"); do
    echo "load_before_round_$r $(cut -d' ' -f1 /proc/loadavg)"
    wrk -t1 -c1 -d"${DUR}s" --latency "$URL" > "wrk1_$r.txt"
    ./bare select meterd.db "$FROM_DAY" $(( FROM_DAY + MONTH_DAYS )) ns-0042 "$BARE_REPS" 1 \
        > "bare1_$r.txt"
    wrk -t2 -c4 -d"${DUR}s" --latency "$URL" > "wrk4_$r.txt"
    ./bare select meterd.db "$FROM_DAY" $(( FROM_DAY + MONTH_DAYS )) ns-0042 \
        $(( BARE_REPS / 4 )) 4 > "bare4_$r.txt"
    echo "load_after_round_$r $(cut -d' ' -f1 /proc/loadavg)"
done
stop_daemon
python3 - "$DAYS" "$FIRST" "$LINES" "$BF1" "$BF2" "$BF3" "$RUNS" "$T_ALL" <<'PY'
import json, re, statistics, sys, time
days, first, lines = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
bf1, bf2, bf3, runs, t_all = map(float, sys.argv[4:])
print("ready: " + open("ready.txt").read().strip())
j1 = json.load(open("bf1.json")); j3 = json.load(open("bf3.json"))
assert j1["days_changed"] == first, j1["days_changed"]
assert j3["days_changed"] == 0, j3["days_changed"]
open_days = 0
if days > first:
    j2 = json.load(open("bf2.json"))
    # days not yet ended (after the run's date) stay open: rated on request,
    # nothing stored for them
    assert j2["days_changed"] + j2["days_open"] == days - first, j2
    open_days = j2["days_open"]
print("days_rated_and_stored %d days_open %d" % (days - open_days, open_days))
bare = dict(l.split() for l in open("bare_insert.txt"))
first_lines = lines * first // (days - open_days)
print("bill_lines %d" % lines)
print("backfill_first_%d_days_seconds %.2f (%.0f lines/s; bare insert of the same rows: %s rows/s)"
      % (first, bf1, first_lines / bf1, bare["bare_insert_rows_per_s"]))
print("backfill_remaining_%d_days_seconds %.2f" % (days - first, bf2))
print("backfill_total_%d_days_seconds %.2f (%.0f lines/s)" % (days, bf1 + bf2, lines / (bf1 + bf2)))
print("backfill_again_first_%d_days_seconds %.2f (no change)" % (first, bf3))
def ms(s):
    v, u = re.match(r"([\d.]+)(us|ms|s)$", s).groups()
    return float(v) * {"us": 1e-3, "ms": 1, "s": 1e3}[u]
def wrk(path):
    t = open(path).read()
    p = {k: ms(v) for k, v in re.findall(r"^\s+(50|99)%\s+(\S+)$", t, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    err = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    assert err is None, path + ": non-2xx responses"
    return p["50"], p["99"], rps
med = statistics.median
r = int(runs)
for c in ("1", "4"):
    w = [wrk("wrk%s_%d.txt" % (c, i)) for i in range(1, r + 1)]
    b = [dict(l.split() for l in open("bare%s_%d.txt" % (c, i))) for i in range(1, r + 1)]
    wp50, wp99 = med(x[0] for x in w), med(x[1] for x in w)
    bp50 = med(float(x["bare_select_p50_ms"]) for x in b)
    bp99 = med(float(x["bare_select_p99_ms"]) for x in b)
    print("bills_c%s_p50_ms %.2f p99_ms %.2f req_s %.0f  (rounds p50/p99: %s)" % (c, wp50, wp99,
          med(x[2] for x in w), "; ".join("%.2f/%.2f" % (x[0], x[1]) for x in w)))
    print("bare_select_threads_%s_rows %s p50_ms %.3f p99_ms %.3f per_s %.0f  (rounds: %s)" % (
          c, b[0]["bare_select_rows"], bp50, bp99,
          med(float(x["bare_select_per_s"]) for x in b),
          "; ".join("%s/%s" % (x["bare_select_p50_ms"], x["bare_select_p99_ms"]) for x in b)))
    print("ratio_c%s p50 %.2fx p99 %.2fx  (goal: p99 <= 2x)" % (c, wp50 / bp50, wp99 / bp99))
print("total_wall_seconds %.0f" % (time.time() - t_all))
PY
