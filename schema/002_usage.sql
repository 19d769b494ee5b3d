-- 002_usage: hourly usage, its dimensions, and the ledger's per-series state.
-- The ledger state and the usage it produced are written in one transaction.

-- metering_started_ns in meta marks a database that has metered; targets
-- present at that first start are "initial" (ledger.first_scrape policy).

-- One row per distinct dimension set; usage refers to it by id.
CREATE TABLE dims (
    id         INTEGER PRIMARY KEY,
    cluster    TEXT NOT NULL,
    namespace  TEXT NOT NULL,
    department TEXT NOT NULL,
    model      TEXT NOT NULL,
    provider   TEXT NOT NULL,
    operation  TEXT NOT NULL,
    token_type TEXT NOT NULL,
    UNIQUE (cluster, namespace, department, model, provider, operation, token_type)
) STRICT;
CREATE INDEX dims_namespace ON dims(namespace, department);

-- Hourly buckets: integer tokens and requests (requests only on the input
-- token type, from its _count).  hour_s is the UTC hour start, unix seconds.
CREATE TABLE usage_hourly (
    hour_s   INTEGER NOT NULL,
    dim_id   INTEGER NOT NULL REFERENCES dims(id),
    tokens   INTEGER NOT NULL DEFAULT 0 CHECK (tokens >= 0),
    requests INTEGER NOT NULL DEFAULT 0 CHECK (requests >= 0),
    PRIMARY KEY (hour_s, dim_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX usage_hourly_dim ON usage_hourly(dim_id, hour_s);

-- Scrape targets the ledger has seen.
CREATE TABLE targets (
    id             INTEGER PRIMARY KEY,
    key            TEXT NOT NULL UNIQUE,
    initial        INTEGER NOT NULL,
    first_seen_ns  INTEGER NOT NULL,
    last_scrape_ns INTEGER NOT NULL
) STRICT;

-- The ledger's checkpoint per billed series.  value is the counter as an
-- unsigned 64-bit integer stored in SQLite's signed INTEGER (two's
-- complement: values from 2^63 read back negative and are cast back).
CREATE TABLE ledger_series (
    target_id   INTEGER NOT NULL REFERENCES targets(id),
    key         BLOB NOT NULL,
    value       INTEGER NOT NULL,
    ts_ns       INTEGER NOT NULL,
    has_created INTEGER NOT NULL DEFAULT 0,
    created     REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (target_id, key)
) STRICT, WITHOUT ROWID;
