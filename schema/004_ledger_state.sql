-- 004_ledger_state: the ledger's checkpoints as one state row per target.
--
-- 002 kept one ledger_series row per billed series, rewritten by every
-- scrape: about 32 statements per scrape and most of the writer's time.
-- Now a series' key is written once, when the series first appears, into
-- ledger_keys at a slot number of its target; the moving part of every
-- series (value, time, _created) is a fixed-size record at that slot in
-- its target's ledger_state.state, written as one row per target and
-- scrape.  Both change in the same transaction as the usage they produce.
--
-- state: byte 0 is the format (1), then one 25-byte record per slot:
--   byte 0      flags: 1 = slot in use, 2 = has _created
--   bytes 1-8   value, unsigned 64-bit little-endian
--   bytes 9-16  checkpoint time, ns since the epoch, unsigned little-endian
--   bytes 17-24 _created, IEEE-754 binary64 bits, little-endian (0 if none)
-- A slot in use has exactly one ledger_keys row, and a ledger_keys row a
-- slot in use; meterd refuses to start otherwise.
--
-- Existing ledger_series rows are converted by meterd itself at its next
-- start (SQLite 3.40 SQL cannot build the binary records), in one
-- transaction that writes the new rows and empties ledger_series; the
-- table stays, empty, for that conversion.
CREATE TABLE ledger_keys (
    target_id INTEGER NOT NULL REFERENCES targets(id),
    slot      INTEGER NOT NULL CHECK (slot >= 0),
    key       BLOB NOT NULL,
    PRIMARY KEY (target_id, slot)
) STRICT, WITHOUT ROWID;

CREATE TABLE ledger_state (
    target_id INTEGER PRIMARY KEY REFERENCES targets(id),
    state     BLOB NOT NULL
) STRICT;
