"""test_rel_kill9.py: reliability scenario 8 (RELIABILITY.md), 100 kills.

meterd scrapes the ExtProc simulator (no sidecar resets: a sidecar restart
while meterd is dead legitimately loses tokens no scraper saw) and is killed
over and over: by SIGKILL at a random moment (during start-up, a scrape, a
write), or by its own failpoints (MD_FAILPOINT, meterd/store.c) between
writing usage and COMMIT, or after COMMIT before the in-memory ledger moves.
After every kill PRAGMA integrity_check says ok; every `check_every` kills,
and at the end, the usage per (namespace, department, model, token_type)
equals the simulator's ground truth exactly.  tests/reliability/
test_long_kill9.py runs the same with 1,000 kills (make test-long)."""
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rel  # noqa: E402
from rel import Meterd, wait_until, figure  # noqa: E402
import harness  # noqa: E402
import simctl  # noqa: E402
import test_usage_exact as tue  # noqa: E402


def run_kills(kills, check_every, seed=8):
    rnd = random.Random(seed)
    sim = simctl.Sim(simctl.binary(harness.ARGS.build), targets=2, tick_ms=30, seed=seed,
                     args=["--new-series-every", "2", "--error-every", "13"]).start()
    ns = ["team-a", "team-b"]
    m = Meterd(extra_yaml="scrape:\n  interval: 250ms\n  timeout: 250ms\n"
                          "ledger:\n  first_scrape: count\n" + tue.targets_yaml(sim, ns))
    modes = {"sigkill": 0, "before_commit": 0, "after_commit": 0}
    kinds = list(modes)
    modes["missed"] = 0
    checks = 0
    t0 = time.monotonic()
    try:
        for i in range(kills):
            mode = rnd.choice(kinds)
            if mode == "sigkill":
                os.environ.pop("MD_FAILPOINT", None)
                m.start(wait=False)
                time.sleep(rnd.uniform(0.02, 0.6))
            else:
                os.environ["MD_FAILPOINT"] = "%s:%d" % (mode, rnd.randint(1, 3))
                m.start(wait=False)
                try:
                    wait_until(lambda: m.proc.poll() is not None, 15, "failpoint exit")
                    assert m.proc.returncode == 137, (m.proc.returncode, m.log()[-3000:])
                except AssertionError:
                    if m.proc.poll() is not None:
                        raise
                    # a loaded machine times scrapes out: no commit to stop at
                    modes["missed"] += 1
            if m.proc.poll() is None:
                m.kill9()
            modes[mode] += 1
            m.stderr.close()        # harness opens the log at every start
            os.environ.pop("MD_FAILPOINT", None)
            if os.path.exists(m.db):
                assert harness.integrity_ok(m.db), "integrity_check failed after kill %d" % i
            if (i + 1) % check_every == 0 or i + 1 == kills:
                m.start()
                # generous: a loaded machine (or ASan) times scrapes out
                tue.settle_and_compare(m, sim, ns, timeout=90)
                checks += 1
                sim.resume()
                if i + 1 < kills:
                    m.kill9()
        truth = sim.truth()
        # the failpoints were really reached (not all replaced by SIGKILL)
        assert modes["missed"] * 4 <= modes["before_commit"] + modes["after_commit"], modes
        assert m.stop() == 0
        assert harness.integrity_ok(m.db)
        figure(8, "%d kills (%d SIGKILL at random moments, %d at failpoint before_commit, "
                  "%d at after_commit, of which %d not reached in 15 s and SIGKILLed) in %.0fs: integrity_check ok after every kill, usage "
                  "== simulator truth at %d checkpoints (final %d billable tokens)"
               % (kills, modes["sigkill"], modes["before_commit"], modes["after_commit"],
                  modes["missed"], time.monotonic() - t0, checks, truth["billable"]["tokens"]))
    finally:
        os.environ.pop("MD_FAILPOINT", None)
        m.cleanup()
        sim.cleanup()


def test_8_kill9_100():
    run_kills(100, 25)


if __name__ == "__main__":
    harness.main([test_8_kill9_100])
