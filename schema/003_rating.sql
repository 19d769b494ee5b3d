-- 003_rating: pricing revisions, milestones, finalized periods, bill lines.
-- Nothing here is ever deleted by hand: triggers refuse deleting
-- milestones and revisions, un-finalizing a milestone, and changing or
-- deleting the lines of a finalized day or any correction line.

-- Every pricing document the daemon ever used, whole, as canonical JSON.
-- id is the revision number shown on bill lines.
CREATE TABLE pricing_revisions (
    id       INTEGER PRIMARY KEY,
    ts_ns    INTEGER NOT NULL,
    actor    TEXT NOT NULL,                -- token name, or "config"
    source   TEXT NOT NULL CHECK (source IN ('config', 'api')),
    document TEXT NOT NULL
) STRICT;

-- One row per (cluster, UTC day) with usage.  day: days since 1970-01-01.
-- dirty: usage or pricing changed since the day was last rated.
CREATE TABLE milestones (
    cluster  TEXT NOT NULL,
    day      INTEGER NOT NULL,
    state    TEXT NOT NULL CHECK (state IN ('open', 'closed', 'finalized')),
    dirty    INTEGER NOT NULL DEFAULT 1,
    rated_ns INTEGER NOT NULL DEFAULT 0,
    revision INTEGER NOT NULL DEFAULT 0,   -- revision of the last rating
    PRIMARY KEY (cluster, day)
) STRICT, WITHOUT ROWID;
CREATE INDEX milestones_state ON milestones(state, day);
CREATE INDEX milestones_dirty ON milestones(dirty) WHERE dirty = 1;

-- Finalized months ("YYYY-MM").
CREATE TABLE periods (
    period       TEXT PRIMARY KEY,
    finalized_ns INTEGER NOT NULL,
    actor        TEXT NOT NULL
) STRICT;

-- Bill lines of closed and finalized days (open days are rated on the fly,
-- "provisional").  kind 'rated': the lines of (cluster, day); kind
-- 'correction': the difference found when a finalized day (source_day) was
-- re-rated, booked on `day` in the next period that is not finalized.
-- tokens and amount may be negative on corrections.  Money in nanos.
CREATE TABLE bill_lines (
    id               INTEGER PRIMARY KEY,
    day              INTEGER NOT NULL,
    cluster          TEXT NOT NULL,
    namespace        TEXT NOT NULL,
    department       TEXT NOT NULL,
    model            TEXT NOT NULL,
    token_type       TEXT NOT NULL,
    tokens           INTEGER NOT NULL,
    unit_price       INTEGER NOT NULL,   -- nanos per million tokens, after adjustment
    list_unit_price  INTEGER NOT NULL,   -- before the tenant's adjustment
    amount           INTEGER NOT NULL,
    currency         TEXT NOT NULL,
    pricing_model    TEXT NOT NULL,      -- "unpriced" when no price matched
    pricing_revision INTEGER NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('rated', 'correction')),
    source_day       INTEGER NOT NULL
) STRICT;
CREATE INDEX bill_lines_day ON bill_lines(day, cluster);
CREATE INDEX bill_lines_tenant ON bill_lines(namespace, day);
CREATE INDEX bill_lines_source ON bill_lines(cluster, source_day, kind);

CREATE TRIGGER milestones_no_delete BEFORE DELETE ON milestones
BEGIN
    SELECT RAISE(ABORT, 'milestones are never deleted');
END;
CREATE TRIGGER milestones_finalized_stay BEFORE UPDATE OF state ON milestones
WHEN OLD.state = 'finalized' AND NEW.state <> 'finalized'
BEGIN
    SELECT RAISE(ABORT, 'a finalized milestone stays finalized');
END;
CREATE TRIGGER revisions_no_delete BEFORE DELETE ON pricing_revisions
BEGIN
    SELECT RAISE(ABORT, 'pricing revisions are kept forever');
END;
CREATE TRIGGER revisions_no_update BEFORE UPDATE ON pricing_revisions
BEGIN
    SELECT RAISE(ABORT, 'pricing revisions are immutable');
END;
CREATE TRIGGER bill_lines_no_update BEFORE UPDATE ON bill_lines
BEGIN
    SELECT RAISE(ABORT, 'bill lines are immutable');
END;
CREATE TRIGGER bill_lines_keep_final BEFORE DELETE ON bill_lines
WHEN OLD.kind = 'correction' OR EXISTS (SELECT 1 FROM milestones m
    WHERE m.cluster = OLD.cluster AND m.day = OLD.day AND m.state = 'finalized')
BEGIN
    SELECT RAISE(ABORT, 'finalized bill lines and corrections never change');
END;

-- Usage metered before this migration: its days get milestones now.
INSERT OR IGNORE INTO milestones(cluster, day, state, dirty)
SELECT DISTINCT d.cluster, u.hour_s / 86400, 'open', 1
FROM usage_hourly u JOIN dims d ON d.id = u.dim_id;
