-- 001_init: bookkeeping tables of the foundation.
-- meta: single values the daemon keeps across restarts (first start, ...).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- events: what happened to the daemon itself (start, stop, config reloads),
-- in commit order; never updated.
CREATE TABLE events (
    id     INTEGER PRIMARY KEY,
    ts_ns  INTEGER NOT NULL,
    kind   TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX events_kind ON events(kind, ts_ns);
