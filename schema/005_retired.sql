-- 005_retired: usage that usage.retention deleted, kept as one total per
-- dimension set, so the /metrics counters (meterd_tokens_total,
-- meterd_requests_total) never go down after a retention run and a restart:
-- a Prometheus (or Cost Management) reading them would take the drop for a
-- counter reset and count the whole remaining total once more.
-- Written in the same transaction as the DELETE it accounts for.
CREATE TABLE usage_retired (
    dim_id   INTEGER PRIMARY KEY REFERENCES dims(id),
    tokens   INTEGER NOT NULL DEFAULT 0 CHECK (tokens >= 0),
    requests INTEGER NOT NULL DEFAULT 0 CHECK (requests >= 0)
) STRICT;
