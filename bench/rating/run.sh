#!/bin/sh
# bench/rating/run.sh BUILD_DIR [DAYS] [HOURS_PER_DAY]
# Rating and bills benchmark (issue 5): NS=1000 namespaces x 20 models x 5
# token types of hourly usage for DAYS days (HOURS_PER_DAY hours each),
# rated by `meterd backfill` (the same code the writer's tick runs), then
# GET /api/v1/bills for one tenant and one month with wrk, and the bare
# SQLite ceiling (bare.c) on the same machine in the same run.
set -eu
B=$(cd "$1" && pwd); DAYS=${2:-7}; HOURS=${3:-4}; NS=${NS:-1000}; MODELS=${MODELS:-20}
W=${W:-/tmp/bench-rating}; PORT=${PORT:-19381}
rm -rf "$W"; mkdir -p "$W"; cd "$W"
cat > pricing.yaml <<P
pricing_models:
  - name: bench
    currency: USD
    clusters: [bench]
    effective_from: 2026-01-01
    items:
      - models: ["model-*"]
        per_million: {input: "0.15", cached_input: "0.075", cache_creation_input: "0.1875",
                      output: "0.6", reasoning: "1.2"}
P
cat > meterd.yaml <<C
cluster: bench
listen: 127.0.0.1:$PORT
storage: {path: $W/meterd.db}
log: {level: warn}
pricing: {file: pricing.yaml}
C
"$B/meterd" run -c meterd.yaml & P=$!
for i in $(seq 50); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.1; done
kill $P; wait $P || true
FROM_DAY=20454   # 2026-01-01
sqlite3 meterd.db <<SQL
PRAGMA journal_mode=WAL;
BEGIN;
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
COMMIT;
SQL
TO=$(date -u -d "2026-01-01 + $DAYS days" +%Y-%m-%d)
ROWS=$(sqlite3 meterd.db "SELECT count(*) FROM usage_hourly")
echo "usage_rows $ROWS"
t0=$(date +%s.%N)
"$B/meterd" backfill -c meterd.yaml --from 2026-01-01 --to "$TO" --json > bf1.json
t1=$(date +%s.%N)
"$B/meterd" backfill -c meterd.yaml --from 2026-01-01 --to "$TO" --json > bf2.json
t2=$(date +%s.%N)
LINES=$(sqlite3 meterd.db "SELECT count(*) FROM bill_lines")
python3 - "$t0" "$t1" "$t2" "$LINES" "$DAYS" <<'PY'
import json, sys
t0, t1, t2, lines, days = map(float, sys.argv[1:])
b1 = json.load(open("bf1.json")); b2 = json.load(open("bf2.json"))
assert b1["days_changed"] == days and b2["days_changed"] == 0, (b1["days_changed"], b2["days_changed"])
print("bill_lines %d\nbackfill_first_seconds %.2f\nrating_lines_per_s %.0f\n"
      "backfill_second_seconds %.2f (no change)\nfull_year_backfill_estimate_s %.0f"
      % (lines, t1 - t0, lines / (t1 - t0), t2 - t1, (t1 - t0) * 365 / days))
PY
"$B/meterd" run -c meterd.yaml & P=$!
for i in $(seq 50); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.1; done
URL="http://127.0.0.1:$PORT/api/v1/bills?period=2026-01&namespace=ns-0042"
N=$(curl -s "$URL" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["lines"]))')
echo "tenant_month_lines $N"
wrk -t2 -c4 -d10s --latency "$URL" > wrk.txt
grep -E "^ +(50|99)%" wrk.txt | sed 's/^ */wrk_p/'
grep "Requests/sec" wrk.txt
kill $P; wait $P || true
cc -O2 -o bare "$(dirname "$0")/bare.c" -lsqlite3 2>/dev/null || cc -O2 -o bare "$OLDPWD/bare.c" -lsqlite3
./bare "$W/bare.db" "$NS" "$MODELS" "$DAYS" ns-0042 1000
