#!/bin/sh
# bench/startup/run.sh OLD_METERD NEW_METERD BILLS_DB [W]
# Start-up time (issue 5): from exec of `meterd run` to /readyz 200
# (daemon_ready_seconds), for two meterd binaries, on copies of a year-scale
# database: BILLS_DB as bench/rating/run.sh leaves it (33.0 M bill_lines, the
# usage deleted; it is only read), and the same with a year of usage added
# (365 days x 100,000 dims, one active hour a day, before today, plus the
# last 3 hours of every dim: 36.8 M usage_hourly rows; bench/rating/run.sh's
# SQL).  Each binary starts on its own copy, OLD_RUNS (1) and NEW_RUNS (3)
# times (the first start of NEW applies migration 006; OLD takes minutes).  Copies and the usage generation run niced;
# the starts do not.  Work dir W (default /tmp/bench-startup): ~20 GB.
set -eu
OLD=$(realpath "$1"); NEW=$(realpath "$2"); SRC=$(realpath "$3")
HERE=$(cd "$(dirname "$0")" && pwd)
W=${4:-/tmp/bench-startup}
mkdir -p "$W"; cd "$W"
cp "$HERE/../rating/pricing.yaml" pricing.yaml
start() {   # BIN DB LABEL: prints daemon_ready_seconds
    PORT=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
    printf 'cluster: bench\nlisten: 127.0.0.1:%s\nstorage: {path: %s}\nlog: {level: info}\npricing: {file: %s/pricing.yaml}\n' \
        "$PORT" "$2" "$W" > "$3.yaml"
    l0=$(cut -d' ' -f1 /proc/loadavg); s=$(date +%s.%N)
    "$1" run -c "$3.yaml" 2>>"$3.log" & P=$!
    while :; do
        kill -0 $P 2>/dev/null || { echo "meterd exited; see $W/$3.log" >&2; exit 1; }
        curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    echo "$3 daemon_ready_seconds $(python3 -c "import time; print('%.1f' % (time.time() - $s))") load $l0 $(cut -d' ' -f1 /proc/loadavg)"
    kill $P; wait $P || true
}
if [ ! -f usage.db ]; then
    nice -n 19 cp "$SRC" usage.db
    TODAY=$(( $(date +%s) / 86400 )); NOW_H=$(( $(date +%s) / 3600 * 3600 ))
    t0=$(date +%s)
    nice -n 19 sqlite3 usage.db >/dev/null <<SQL
PRAGMA journal_mode=WAL;
PRAGMA cache_size=-1000000;
BEGIN;
DROP INDEX usage_hourly_dim;
WITH RECURSIVE h(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM h WHERE x < 364)
INSERT INTO usage_hourly(hour_s, dim_id, tokens, requests)
SELECT ($TODAY - 365 + x) * 86400, d.id,
       CASE d.token_type WHEN 'input' THEN 20000 WHEN 'output' THEN 8000 ELSE 1000 END
         + (d.id * 7 + x) % 997, 0
FROM h, dims d;
WITH RECURSIVE h(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM h WHERE x < 2)
INSERT INTO usage_hourly(hour_s, dim_id, tokens, requests)
SELECT $NOW_H - x * 3600, d.id, 100 + d.id % 97, 0 FROM h, dims d;
CREATE INDEX usage_hourly_dim ON usage_hourly(dim_id, hour_s);
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
    echo "usage_rows $(sqlite3 usage.db 'SELECT count(*) FROM usage_hourly') in $(( $(date +%s) - t0 )) s"
fi
for db in bills usage; do
    [ "$db" = bills ] && from=$SRC || from=$W/usage.db
    for v in new old; do
        [ "$v" = new ] && bin=$NEW || bin=$OLD
        rm -f "$v-$db.db" "$v-$db.db-wal" "$v-$db.db-shm"
        nice -n 19 cp "$from" "$v-$db.db"; sync
        [ "$v" = new ] && runs=${NEW_RUNS:-3} || runs=${OLD_RUNS:-1}
        for n in $(seq "$runs"); do
            start "$bin" "$W/$v-$db.db" "$v-$db-$n"
        done
        grep -h "schema 006" "$v-$db-1.log" || true
        rm -f "$v-$db.db" "$v-$db.db-wal" "$v-$db.db-shm"
    done
done
