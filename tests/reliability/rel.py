"""rel.py: helpers shared by the reliability tests (tests/reliability/).

Every scenario prints one line "FIGURE <n>: ..." with the measured figure
that RELIABILITY.md quotes; the harness closing line "N passed, N failed"
stays the last line.
"""
import json
import os
import sqlite3
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness  # noqa: E402,F401
from harness import Meterd, wait_until  # noqa: E402,F401


def figure(n, text):
    print("FIGURE %s: %s" % (n, text), flush=True)


def targets_yaml(urls_ns):
    out = "targets:\n"
    for url, ns in urls_ns:
        out += "  - url: %s\n    namespace: %s\n" % (url, ns)
    return out


def usage(m, group="namespace,model", day_from=None, day_to=None):
    """{group tuple: tokens} and the raw document from /api/v1/usage."""
    now = time.time()
    q = {"from": day_from or time.strftime("%Y-%m-%d", time.gmtime(now - 86400)),
         "to": day_to or time.strftime("%Y-%m-%d", time.gmtime(now + 2 * 86400)),
         "group_by": group}
    r = m.get("/api/v1/usage?" + urllib.parse.urlencode(q))
    assert r.status == 200, (r.status, r.text)
    doc = json.loads(r.body)
    got = {}
    for row in doc["rows"]:
        key = tuple(row[d] for d in group.split(","))
        got[key] = got.get(key, 0) + row["tokens"]
    return got, doc


def total(m):
    return usage(m, "namespace")[1]["totals"]["tokens"]


def db_ro(path):
    return sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=10)


def checkpoints(m):
    """The ledger's checkpoint values as SQLite holds them: {(target, key):
    value} (the time moves with every applied scrape, the value only when
    the counter does)."""
    con = db_ro(m.db)
    try:
        # schema/004_ledger_state.sql: a key row per series, its value in the
        # 25-byte record at its slot of the target's state (byte 0 format)
        states = {t: bytes(b) for t, b in
                  con.execute("SELECT target_id, state FROM ledger_state")}
        out = {}
        for t, slot, k in con.execute("SELECT target_id, slot, key FROM ledger_keys"):
            rec = states[t][1 + 25 * slot:1 + 25 * (slot + 1)]
            assert rec[0] & 1, "key without a state: target %d slot %d" % (t, slot)
            out[(t, bytes(k))] = int.from_bytes(rec[1:9], "little")
        legacy = con.execute("SELECT count(*) FROM ledger_series").fetchone()[0]
        assert legacy == 0, "%d ledger_series rows left unconverted" % legacy
        return out
    finally:
        con.close()


def usage_rows(db):
    con = db_ro(db)
    try:
        return con.execute("SELECT hour_s, dim_id, tokens, requests FROM usage_hourly "
                           "ORDER BY hour_s, dim_id").fetchall()
    finally:
        con.close()


def failures(m, reason=None):
    return m.metric_sum("meterd_scrape_failures_total", {"reason": reason} if reason else None)


def commits(m):
    return m.metric("meterd_store_commits_total") or 0


def settle(m, ft, more=2, timeout=20):
    """Waits until the target's script is used up, `more` further scrapes of
    it finished, and the store committed at least once after that (the
    scrape thread submits in order, so the bad scrape was handled; a failed
    commit counts too, for the full-disk test)."""
    wait_until(lambda: ft.pending() == 0, timeout, "scripted responses served")
    n0 = ft.finished
    wait_until(lambda: ft.finished >= n0 + more, timeout, "%d more scrapes" % more)
    c0 = commits(m) + (m.metric("meterd_store_errors_total") or 0)
    wait_until(lambda: commits(m) + (m.metric("meterd_store_errors_total") or 0) > c0,
               timeout, "a commit (or a failed one) after the scrapes")


def vm_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def reset_hwm(pid):
    """Resets VmHWM to the current RSS (Linux clear_refs 5)."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def sanitized():
    """True when the build under test has AddressSanitizer (its shadow
    memory and quarantine make RSS figures meaningless)."""
    try:
        with open(os.path.join(harness.ARGS.build, "CMakeCache.txt")) as f:
            return any(l.startswith("MD_SANITIZE:") and "address" in l for l in f)
    except OSError:
        return False
