-- 006_totals: folded totals for the /metrics counters, so that a start
-- reads a few small tables instead of summing the whole history (issue 5:
-- a year of usage and 33 M bill lines took more than 15 minutes to sum).
--
-- usage_folded + the rows of usage_hourly with hour_s >= H, H being
-- meta 'usage_folded_before' (a UTC hour start, unix seconds), is every
-- token and request ever committed per dimension set, that is
--     usage_folded = (all usage ever written) - (usage_hourly rows >= H).
-- Kept so by, in the transaction of the change:
--   - meterd's writer moving H forward (an hour once it is 2 hours old, and
--     up to the cut before usage.retention deletes): it adds the rows of
--     the hours it passes;
--   - every INSERT into usage_hourly below H (late usage, or rows written
--     by hand): the trigger usage_hourly_fold below;
--   - meterd's writer adding to an existing row below H (its UPDATE path;
--     a program that UPDATEs usage_hourly rows below H by hand must add the
--     same amounts to usage_folded);
--   - retention deleting only rows below H (it moves H first).
-- It replaces usage_retired for the counters; usage_retired stays a record
-- of what retention deleted.
CREATE TABLE usage_folded (
    dim_id   INTEGER PRIMARY KEY REFERENCES dims(id),
    tokens   INTEGER NOT NULL DEFAULT 0 CHECK (tokens >= 0),
    requests INTEGER NOT NULL DEFAULT 0 CHECK (requests >= 0)
) STRICT;

-- Only INSERTs: the writer's per-scrape UPDATE (most of its work) carries no
-- trigger; it folds its own updates below H (store.c).
CREATE TRIGGER usage_hourly_fold AFTER INSERT ON usage_hourly
WHEN NEW.hour_s < (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'usage_folded_before')
BEGIN
    INSERT INTO usage_folded(dim_id, tokens, requests)
    VALUES (NEW.dim_id, NEW.tokens, NEW.requests)
    ON CONFLICT(dim_id) DO UPDATE SET tokens = tokens + excluded.tokens,
        requests = requests + excluded.requests;
END;

-- The same for the cost and unpriced counters: cost_totals + the lines of
-- bill_lines with id >= L, L being meta 'cost_folded_before_id', grouped
--   GROUP BY cluster, namespace, department, model, currency, token_type,
--            pricing_model = 'unpriced'
-- equal that GROUP BY over all bill_lines, that is
--     cost_totals = the sums of the lines with id < L.
-- Kept so by, in the transaction of the change:
--   - meterd's writer moving L to the end of bill_lines once 262,144 lines
--     (or as set) lie past it, adding their sums: rating inserts lines
--     with no per-line work (an insert trigger made rating 3x slower);
--   - the trigger below, for the lines below L that are deleted (a
--     re-rated day's non-final lines); it also brings L down to the end of
--     bill_lines when the last lines are deleted, folded or not, so that an
--     inserted line (SQLite gives it max(id) + 1) never lies below L.
-- first_id: the id of the group's first line (the start loads groups in
-- that order, first seen first); it stays when that line is deleted by a
-- re-rating while the group keeps lines, and is taken anew when it had none.
-- Filled by meterd when this migration is applied (from all bill_lines).
CREATE TABLE cost_totals (
    cluster    TEXT NOT NULL,
    namespace  TEXT NOT NULL,
    department TEXT NOT NULL,
    model      TEXT NOT NULL,
    currency   TEXT NOT NULL,
    token_type TEXT NOT NULL,
    unpriced   INTEGER NOT NULL,
    amount     INTEGER NOT NULL,
    tokens     INTEGER NOT NULL,
    lines      INTEGER NOT NULL CHECK (lines >= 0),
    first_id   INTEGER NOT NULL,
    PRIMARY KEY (cluster, namespace, department, model, currency, token_type, unpriced)
) STRICT, WITHOUT ROWID;

-- A deleted line below L leaves cost_totals; and when the last line goes
-- (no line above it remains), SQLite gives its id (max(id) + 1) to the next
-- line: L comes down to the end, so that no new line lies below it.  In one
-- trigger, in this order (the first statement needs L before it moves).
CREATE TRIGGER bill_lines_fold_del AFTER DELETE ON bill_lines
WHEN OLD.id < (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'cost_folded_before_id')
    OR OLD.id > (SELECT coalesce(max(id), 0) FROM bill_lines)
BEGIN
    UPDATE cost_totals SET amount = amount - OLD.amount, tokens = tokens - OLD.tokens,
        lines = lines - 1
    WHERE OLD.id < (SELECT CAST(value AS INTEGER) FROM meta
            WHERE key = 'cost_folded_before_id')
        AND cluster = OLD.cluster AND namespace = OLD.namespace
        AND department = OLD.department AND model = OLD.model AND currency = OLD.currency
        AND token_type = OLD.token_type AND unpriced = (OLD.pricing_model = 'unpriced');
    UPDATE meta SET value = CAST((SELECT coalesce(max(id), 0) + 1 FROM bill_lines) AS TEXT)
    WHERE key = 'cost_folded_before_id'
        AND CAST(value AS INTEGER) > (SELECT coalesce(max(id), 0) + 1 FROM bill_lines);
END;
