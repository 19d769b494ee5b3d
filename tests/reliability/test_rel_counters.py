"""test_rel_counters.py: reliability scenarios 6 and 7 (RELIABILITY.md).

6: a gap is not a reset: 100, then the series absent or the target down,
   then 150 bills 50; 100, absent/down, 40 bills 40.
7: NaN, infinities, negative and non-integer counters are skipped and
   counted, the checkpoint kept, and the next finite value billed from the
   last finite checkpoint; counters crossing 2^53 are flagged."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rel  # noqa: E402
from rel import Meterd, wait_until, figure  # noqa: E402
from faketarget import FakeTarget, Resp, ok, series_body  # noqa: E402
import harness  # noqa: E402

BASE = "scrape:\n  interval: 300ms\n  timeout: 300ms\nledger:\n  first_scrape: count\n"
FILL = {"keep1": 5, "keep2": 5, "keep3": 5}   # keeps the target non-empty; 3 of 4 steady


def body(x=None):
    v = dict(FILL)
    if x is not None:
        v["mx"] = x
    return series_body(v)


def test_6_gap_is_not_reset():
    cases = [("absent-up", "absent", 150), ("absent-down", "absent", 40),
             ("down-up", "down", 150), ("down-down", "down", 40)]
    fts = [FakeTarget(ok(body(100))) for _ in cases]
    m = Meterd(extra_yaml=BASE + rel.targets_yaml([(ft.url, c[0]) for ft, c in zip(fts, cases)]))
    m.start()
    try:
        wait_until(lambda: rel.total(m) == 4 * (100 + 15), 20, "first scrapes billed")
        for ft in fts:
            rel.settle(m, ft)
        for ft, (_, gap, _) in zip(fts, cases):
            gap_resp = ok(body()) if gap == "absent" else Resp("status", code=503)
            ft.queue([gap_resp, gap_resp])
        for ft in fts:
            rel.settle(m, ft)
        assert rel.total(m) == 4 * 115, "a gap billed something"
        for ft, (_, _, after) in zip(fts, cases):
            ft.set_default(ok(body(after)))
        want = {(ns, "mx"): 100 + (after - 100 if after >= 100 else after)
                for ns, _, after in cases}
        last = {}

        def good():
            got, _ = rel.usage(m)
            last["got"] = {k: v for k, v in got.items() if k[1] == "mx"}
            return last["got"] == want
        try:
            wait_until(good, 20, "per-target bills")
        except AssertionError:
            raise AssertionError("got %s want %s" % (last.get("got"), want))
        for ft in fts:
            rel.settle(m, ft)
        got, _ = rel.usage(m)
        assert {k: v for k, v in got.items() if k[1] == "mx"} == want
        assert all(got[(c[0], k)] == 5 for c in cases for k in FILL), got
        figure(6, "100 -> absent x2 -> 150 billed %d; 100 -> absent -> 40 billed %d; "
               "100 -> down (503) x2 -> 150 billed %d; 100 -> down -> 40 billed %d"
               % tuple(want[(c[0], "mx")] - 100 for c in cases))
        assert m.stop() == 0
    finally:
        m.cleanup()
        for ft in fts:
            ft.close()


def test_7_invalid_values_and_2p53():
    ft = FakeTarget(ok(body(100)))
    m = Meterd(extra_yaml=BASE + rel.targets_yaml([(ft.url, "team-a")]))
    m.start()
    try:
        wait_until(lambda: rel.total(m) == 115, 20, "first scrape billed")
        rel.settle(m, ft)
        inv0 = m.metric("meterd_samples_dropped_total", {"reason": "invalid_value"}) or 0
        cp0 = rel.checkpoints(m)
        bad = ["NaN", "+Inf", "-Inf", "-5", "120.5"]
        ft.queue([ok(body(x)) for x in bad])
        rel.settle(m, ft)
        inv1 = m.metric("meterd_samples_dropped_total", {"reason": "invalid_value"})
        assert inv1 - inv0 == len(bad), (inv0, inv1)
        assert rel.checkpoints(m) == cp0, "checkpoint moved on an invalid value"
        assert rel.total(m) == 115
        ft.set_default(ok(body(130)))
        wait_until(lambda: rel.total(m) == 145, 20, "130 billed from the last finite 100")
        rel.settle(m, ft)
        assert rel.total(m) == 145
        # crossing 2^53: 2^53 - 2 is exact; 2^53 + 1 is not representable
        f0 = m.metric("meterd_ledger_flagged_2p53_total") or 0
        below = 2 ** 53 - 2
        ft.set_default(ok(body(below)))
        wait_until(lambda: rel.total(m) == 15 + below, 20, "billed up to 2^53 - 2")
        ft.set_default(ok(body(2 ** 53 + 1)))        # parses to 2^53 exactly
        wait_until(lambda: rel.total(m) == 15 + 2 ** 53, 20, "2^53 billed")
        rel.settle(m, ft)
        f1 = m.metric("meterd_ledger_flagged_2p53_total")
        assert f1 > f0, (f0, f1)
        figure(7, "NaN/+Inf/-Inf/-5/120.5 after 100: %d dropped as invalid_value, checkpoint "
               "kept, next value 130 billed 30; crossing 2^53 flagged (%d samples), billed "
               "total %d" % (inv1 - inv0, f1 - f0, rel.total(m) - 15))
        assert m.stop() == 0
    finally:
        m.cleanup()
        ft.close()


if __name__ == "__main__":
    harness.main([test_6_gap_is_not_reset, test_7_invalid_values_and_2p53])
