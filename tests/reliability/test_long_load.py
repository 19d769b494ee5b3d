"""test_long_load.py: reliability scenario 17 (make test-long): meterd
scrapes 500 targets -- 490 ExtProc simulator targets and 10 instrumented
fake targets (tests/reliability/faketarget.py) serving a copy of a
simulator body -- every LOAD_INTERVAL_S (default 15 s, timeout 4 s; the
low end of what meterd.yaml recommends for production: at the 5 s of the
demo configuration the simulator alone, rendering and gzipping ~200 KB per
scrape 100 times a second, needs more CPU than this shared 2-core machine
gives the test, and its timeouts then measure the simulator) while
two wrk processes hit GET /metrics and GET /api/v1/bills?period=<this
month> (pricing configured, today's provisional lines present) for
LOAD_SECONDS (default 600).

Asserted:
- no HTTP error: wrk reports no non-2xx/3xx response and no socket error
  (connect, read, write, timeout) on either endpoint;
- flat memory: meterd's RSS, sampled every 2 s, has a least-squares slope
  over the second half under LOAD_RSS_SLOPE_MAX KiB/min (default 64);
- the scrape schedule is kept: the fake targets record the arrival time of
  every request, so their intervals are exact (sampling /api/v1/targets
  under this load took seconds and missed scrapes): mean within 2 % of
  the configured interval (no drift), none reaching 1.5 intervals (no beat
  skipped, no start later than half an interval); and every target that
  had no failure in the window was scraped window/interval times (-1, no
  drift) by /api/v1/targets' counters.  Failures (timeouts of the
  simulator, which renders and gzips ~200 KB per scrape on a shared
  machine) are reported; after a failure a target backs off by design;
- the load was real: both endpoints answered at least 1 request/s.
Throughput and p50/p99 latency of both endpoints go into the FIGURE line.
Needs wrk (Debian package `wrk`); skips (fails loudly) without it."""
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rel  # noqa: E402
from rel import Meterd, figure, wait_until  # noqa: E402
from faketarget import FakeTarget, ok  # noqa: E402
import harness  # noqa: E402
import simctl  # noqa: E402
from test_bills import PRICING  # noqa: E402
from test_long_soak import slope_per_min  # noqa: E402

N_TARGETS = 500
N_FAKE = 10


def wrk_binary():
    w = shutil.which("wrk")
    if w is None:
        raise AssertionError("wrk is not installed: apt-get install -y wrk (make deps-test)")
    return w


def parse_dur(s):
    """wrk's '1.23ms' / '850.00us' / '1.02s' / '2.00m' -> seconds."""
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", s)
    assert m, s
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(2)]


def parse_wrk(out):
    r = {"non2xx": 0, "socket_errors": 0}
    m = re.search(r"(\d+) requests in ([0-9.]+\w+),", out)
    assert m, out
    r["requests"] = int(m.group(1))
    r["rps"] = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    for pct in ("50", "99"):
        r["p" + pct] = parse_dur(re.search(r"^\s+%s%%\s+(\S+)" % pct, out, re.M).group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r["socket_errors"] = sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        r["non2xx"] = int(m.group(1))
    return r


def test_17_load():
    secs = int(os.environ.get("LOAD_SECONDS", "600"))
    interval = float(os.environ.get("LOAD_INTERVAL_S", "15"))
    slope_max = float(os.environ.get("LOAD_RSS_SLOPE_MAX", "64"))
    wrk = wrk_binary()
    n_sim = N_TARGETS - N_FAKE
    sim = simctl.Sim(simctl.binary(harness.ARGS.build), targets=n_sim, seed=17,
                     args=["--quiet"]).start(timeout=60)
    time.sleep(1)
    fakes = [FakeTarget(ok(sim.scrape(i).body)) for i in range(N_FAKE)]
    urls = [sim.url(i) for i in range(n_sim)] + [f.url for f in fakes]
    m = Meterd()
    period = time.strftime("%Y-%m", time.gmtime())
    yaml = m.base_yaml().replace("level: debug", "level: info")
    yaml += ("scrape:\n  interval: %dms\n  timeout: 4s\nledger:\n  first_scrape: count\n"
             % int(interval * 1000) +
             "pricing:\n  file: pricing.yaml\n")
    yaml += "targets:\n" + "".join("  - url: %s\n    namespace: team-%03d\n" % (u, i % 50)
                                   for i, u in enumerate(urls))
    m.write_config(raw=yaml)
    with open(os.path.join(m.dir, "pricing.yaml"), "w") as f:
        f.write(PRICING)
    procs = []
    try:
        m.start()
        pid = m.proc.pid

        def targets():
            return json.loads(m.get("/api/v1/targets", timeout=30).body)["targets"]
        wait_until(lambda: sum(1 for t in targets() if t["health"] == "up") == N_TARGETS, 60,
                   "all %d targets up" % N_TARGETS, interval=1)
        bills_path = "/api/v1/bills?period=" + period

        def bills_lines():
            r = m.get(bills_path, timeout=30)
            return r.status == 200 and len(json.loads(r.body)["lines"]) > 0
        wait_until(bills_lines, 60, "bills of %s with lines" % period, interval=1)
        bills_doc = json.loads(m.get(bills_path).body)
        metrics_bytes = len(m.get("/metrics").body)
        f0 = m.metric_sum("meterd_scrape_failures_total")
        before = {t["url"]: t for t in targets()}
        s0 = sum(t["scrapes"] for t in before.values())

        outs = {}

        def run_wrk(name, path):
            p = subprocess.Popen([wrk, "-t1", "-c4", "-d%ds" % secs, "--timeout", "10s",
                                  "--latency", m.url + path],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            procs.append(p)
            outs[name] = p.communicate()[0].decode()
        threads = [threading.Thread(target=run_wrk, args=("metrics", "/metrics")),
                   threading.Thread(target=run_wrk, args=("bills", bills_path))]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        rss = []
        while time.monotonic() - t0 < secs:
            now = time.monotonic()
            rss.append((now - t0, rel.vm_kib(pid, "VmRSS")))
            time.sleep(max(0.0, 2.0 - (time.monotonic() - now)))
        t1 = time.monotonic()
        for t in threads:
            t.join(120)
        f1 = m.metric_sum("meterd_scrape_failures_total")
        after = {t["url"]: t for t in targets()}
        s1 = sum(t["scrapes"] for t in after.values())
        assert m.proc.poll() is None, "meterd died: " + m.log()[-3000:]

        res = {k: parse_wrk(v) for k, v in outs.items()}
        gaps = sorted(b - a for f in fakes for a, b in zip(f.starts, f.starts[1:])
                      if t0 <= a and b <= t1)
        # the counters of the targets without a failure in the window
        clean = [u for u in urls if sum(after[u]["failures"].values()) ==
                 sum(before[u]["failures"].values())]
        want = int(secs // interval)
        counts = sorted(after[u]["scrapes"] - before[u]["scrapes"] for u in clean)
        reasons = {}
        for line in m.get("/metrics").text.splitlines():
            if line.startswith("meterd_scrape_failures_total{"):
                r = re.search(r'reason="([^"]+)"', line).group(1)
                reasons[r] = reasons.get(r, 0) + float(line.rsplit(" ", 1)[1])
        reasons = {k: int(v) for k, v in reasons.items() if v}
        assert len(after) == N_TARGETS, len(after)
        mean_gap = sum(gaps) / len(gaps)
        p99_gap = gaps[int(0.99 * (len(gaps) - 1))]
        half = [p for p in rss if p[0] >= secs / 2]
        s = slope_per_min(half)
        figure(17, "%d s, %d targets at %.0f s (%d scrapes, %d failures %s): /metrics (%d KB) "
                   "%.0f req/s, p50 %.2f ms, p99 %.2f ms, %d requests, %d non-2xx, %d socket "
                   "errors; /api/v1/bills?period=%s (%d lines) %.0f req/s, p50 %.2f ms, p99 "
                   "%.2f ms, %d requests, %d non-2xx, %d socket errors; scrape intervals of "
                   "the %d fake targets (%d): mean %.3f s, p99 %.3f s, max %.3f s; the %d "
                   "targets without a failure scraped %d..%d times (%d intervals in the "
                   "window); RSS %d -> %d KiB (max "
                   "%d), slope over the second half %.1f KiB/min (bound %.0f)"
               % (secs, N_TARGETS, interval, s1 - s0, f1 - f0, reasons, metrics_bytes // 1000,
                  res["metrics"]["rps"], res["metrics"]["p50"] * 1e3,
                  res["metrics"]["p99"] * 1e3, res["metrics"]["requests"],
                  res["metrics"]["non2xx"], res["metrics"]["socket_errors"],
                  period, len(bills_doc["lines"]), res["bills"]["rps"],
                  res["bills"]["p50"] * 1e3, res["bills"]["p99"] * 1e3,
                  res["bills"]["requests"], res["bills"]["non2xx"],
                  res["bills"]["socket_errors"], N_FAKE, len(gaps), mean_gap, p99_gap, gaps[-1],
                  len(clean), counts[0], counts[-1], want,
                  rss[0][1], rss[-1][1], max(v for _, v in rss), s, slope_max))
        for name, r in res.items():
            assert r["non2xx"] == 0 and r["socket_errors"] == 0, (name, outs[name])
            assert r["rps"] >= 1.0, (name, outs[name])
        assert abs(mean_gap - interval) <= 0.02 * interval, mean_gap
        assert gaps[-1] < 1.5 * interval, gaps[-10:]
        assert counts[0] >= want - 1, counts[:10]
        assert len(clean) >= N_TARGETS // 2, "most targets failed: %d clean" % len(clean)
        assert s < slope_max, "RSS grows %.1f KiB/min over the second half" % s
        assert m.stop() == 0
    except BaseException:
        rc = m.proc.poll() if m.proc is not None else None
        print("meterd exit status %s; last lines of its log:\n%s" % (
            rc, "\n".join(m.log().splitlines()[-40:])), flush=True)
        raise
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        m.cleanup()
        sim.cleanup()
        for f in fakes:
            f.close()


if __name__ == "__main__":
    harness.main([test_17_load])
