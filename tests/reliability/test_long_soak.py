"""test_long_soak.py: reliability scenario 18 (make test-long): meterd runs
SOAK_SECONDS (default 3600) against the ExtProc simulator with

- sidecar counter resets (every target, staggered, --reset-every 30 s);
- discovery churn: a fake Kubernetes API server (test_discovery.FakeKube)
  lists EAIG pods pointing at simulator targets; every minute one listed
  pod disappears (removed from the list, or Succeeded, or terminating with
  a deletionTimestamp: the three ways a pod stops being a target) and one
  comes back, and brand-new pods (never seen before) appear at 1/6 and 1/3
  of the run;
- new series: every target gains a new (model, department) combination at
  1/13, 2/13, ... 6/13 of the run (R4), and none later;
- a SIGHUP reload every minute (the static targets alternate between two
  equivalent spellings, so the scrape thread re-syncs its list each time);
- API reads (usage, targets, /metrics) every 2 s;

and samples RSS and open file descriptors every 2 s.

How the sums can be exact under churn: every simulator target runs the
whole time, only which pods the API lists changes.  A pod that comes back
has the same uid, so it is the same meterd target (key url#uid) with its
checkpoints kept: ledger rule R8, absence alone is not a reset, so the
first scrape after its return bills everything it counted while unlisted.
The simulator resets a target only after meterd provably received scrapes
of its frozen counters (the next request on the same keep-alive connection;
it stays frozen until then), so a target that is unlisted, or whose scrape
meterd abandoned, when its reset is due does not lose what it counted; and
after a reset it holds the target as soon as the restart shows (series
below their old values) until meterd received a scrape showing it, so a pod
unlisted right after its sidecar restarted cannot come back with series
regrown past their old values, a restart no scraper can tell from absence
(DESIGN.md "Exactness of usage"; RELIABILITY 18 lost 0.6-1.7 % that way).
The brand-new pods are first seen after metering began, so their first
scrape bills in full (R5), which is what
the simulator counted since its start.  After the churn a final phase
lists every pod again; then the simulator is frozen, every target is
scraped twice more and the usage per (namespace, department, model,
token_type) must equal the simulator's truth exactly.

Bounds: the RSS slope over the second half must stay under
SOAK_RSS_SLOPE_MAX KiB/min (default 32, i.e. < 1 MiB per half hour); the
floor of the open fds over the last quarter must not exceed that of the
second quarter (+1 for a transient socket).  Every series and pod is born
in the first half, so the second half is meterd's steady state under
resets, churn, reloads and reads, which is what "RSS flat" is about: with
new series every 600 s to the end (until stop 11) each one grew meterd's
state in steps (arrays and tables doubling, buffers of the /metrics body),
and the slope measured that growth as much as any creep (17.8-42.2 KiB/min
over five runs).  The whole run's slope, growth included, is reported."""
import json
import os
import random
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rel  # noqa: E402
from rel import Meterd, figure, wait_until  # noqa: E402
import harness  # noqa: E402
import simctl  # noqa: E402
import test_usage_exact as tue  # noqa: E402
from test_discovery import FakeKube, TOKEN  # noqa: E402
from test_discovery_scrape import pod  # noqa: E402

N_STATIC = 2          # simulator targets 0..1: static targets in meterd.yaml
N_PODS = 8            # simulator targets 2..9: discovered pods
N_FIRST = 6           # pods listed from the start; the others are brand new later


def slope_per_min(pts):
    """Least-squares slope of (t seconds, v) in v per minute."""
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mv = sum(v for _, v in pts) / n
    num = sum((t - mt) * (v - mv) for t, v in pts)
    den = sum((t - mt) ** 2 for t, _ in pts) or 1.0
    return num / den * 60.0


def fds(pid, sim_ports=()):
    """(open fds, of which TCP connections to the simulator's target ports).
    meterd keeps one idle keep-alive connection per target, and one to a pod
    that went away lingers until the cache drops it, so the leak check looks
    at the other fds."""
    inodes = set()
    names = os.listdir("/proc/%d/fd" % pid)
    for name in names:
        try:
            inodes.add(os.readlink("/proc/%d/fd/%s" % (pid, name)))
        except OSError:
            continue
    to_sim = 0
    ports = set(sim_ports)
    try:
        with open("/proc/%d/net/tcp" % pid) as f:
            next(f)
            for line in f:
                cols = line.split()
                rport = int(cols[2].split(":")[1], 16)
                if rport in ports and "socket:[%s]" % cols[9] in inodes:
                    to_sim += 1
    except OSError:
        pass
    return len(names), to_sim


class Pods:
    """The pods the fake API server lists, and how each one is away."""

    WAYS = ("removed", "succeeded", "terminating")

    def __init__(self, sim, kube):
        self.sim = sim
        self.kube = kube
        self.state = {}       # pod index -> "listed" | a way of being away | "unborn"
        for i in range(N_PODS):
            self.state[i] = "listed" if i < N_FIRST else "unborn"
        self.events = {"removed": 0, "succeeded": 0, "terminating": 0, "back": 0, "born": 0}
        self.publish()

    def ns(self, i):
        return "pod-%d" % i

    def item(self, i):
        p = pod(self.ns(i), "gw-%d" % i, "uid-soak-%d" % i, self.sim.port(N_STATIC + i))
        st = self.state[i]
        if st == "succeeded":
            p["status"]["phase"] = "Succeeded"
        elif st == "terminating":
            p["metadata"]["deletionTimestamp"] = "2026-11-27T12:00:00Z"
        return p

    def publish(self):
        items = [self.item(i) for i in range(N_PODS) if self.state[i] not in ("removed", "unborn")]
        self.kube.items = items           # one reference swap: the server thread sees old or new

    def listed(self):
        return sum(1 for s in self.state.values() if s == "listed")

    def churn(self, rng, way):
        """One pod goes away (the given way), one that is away comes back."""
        away = [i for i, s in self.state.items() if s in self.WAYS]
        up = [i for i, s in self.state.items() if s == "listed"]
        what = []
        if up:
            i = rng.choice(up)
            self.state[i] = way
            self.events[way] += 1
            what.append("%s %s" % (self.ns(i), way))
        if away:
            i = rng.choice(away)
            self.state[i] = "listed"
            self.events["back"] += 1
            what.append("%s back" % self.ns(i))
        self.publish()
        # wall-clock time: matched against meterd's log and the simulator's
        # --log-scrapes lines when a run has to be explained
        print("churn at %.3f: %s" % (time.time(), ", ".join(what)), flush=True)

    def birth(self):
        for i, s in sorted(self.state.items()):
            if s == "unborn":
                self.state[i] = "listed"
                self.events["born"] += 1
                print("birth at %.3f: %s" % (time.time(), self.ns(i)), flush=True)
                break
        self.publish()

    def all_listed(self):
        for i in self.state:
            if self.state[i] != "listed":
                if self.state[i] != "unborn":
                    self.events["back"] += 1
                else:
                    self.events["born"] += 1
            self.state[i] = "listed"
        self.publish()


def targets_api(m):
    return json.loads(m.get("/api/v1/targets").body)["targets"]


def test_18_soak():
    secs = int(os.environ.get("SOAK_SECONDS", "3600"))
    churn_every = float(os.environ.get("SOAK_CHURN_SECONDS", "60"))
    reload_every = float(os.environ.get("SOAK_RELOAD_SECONDS", "60"))
    slope_max = float(os.environ.get("SOAK_RSS_SLOPE_MAX", "32"))
    rng = random.Random(18)
    sim = simctl.Sim(simctl.binary(harness.ARGS.build), targets=N_STATIC + N_PODS, tick_ms=50,
                     seed=18,
                     # reset-scrapes 3: a scrape of the frozen counters that
                     # meterd abandons (its pod removed mid-transfer, or a
                     # timeout on the loaded machine) is not the only one
                     args=["--reset-every", "30", "--reset-scrapes", "3",
                           # six new combinations per target, all in the
                           # first half: 10 at the start (9 + count_tokens),
                           # 16 at most (the simulator's lowest ceiling), one
                           # every secs/13 (the seventh, at 7/13, is refused)
                           "--new-series-every", str(max(1, secs // 13)),
                           "--max-combos", "16", "--count-tokens",
                           # one line per meterd scrape: kept with meterd's log
                           "--log-scrapes"]).start()
    print("simulator started at %.3f (its log lines carry wall_ms)" % time.time(),
          flush=True)
    kube = FakeKube([], token=TOKEN, page_size=3)
    pods = Pods(sim, kube)
    ns = ["static-%d" % i for i in range(N_STATIC)] + [pods.ns(i) for i in range(N_PODS)]
    m = Meterd()
    tok = os.path.join(m.dir, "token")
    with open(tok, "w") as f:
        f.write(TOKEN)
    common = (m.base_yaml() +
              "scrape:\n  interval: 1s\n  timeout: 900ms\nledger:\n  first_scrape: count\n"
              "kubernetes:\n  enabled: true\n  api_server: %s\n  token_file: %s\n"
              "  refresh: 1s\n" % (kube.url(), tok))
    static = "targets:\n"
    for i in range(N_STATIC):
        static += "  - url: %s\n    namespace: %s\n" % (sim.url(i), ns[i])
    yaml_a = common + static
    # the same targets with a per-target interval equal to the default
    yaml_b = common + static.replace("\n    namespace:", "\n    interval: 1s\n    namespace:")
    m.write_config(raw=yaml_a)
    try:
        m.start()
        pid = m.proc.pid
        wait_until(lambda: sum(1 for t in targets_api(m) if t["scrapes"] > 0) ==
                   N_STATIC + pods.listed(), 30, "static and discovered targets scraped")
        t0 = time.monotonic()
        rss, fd, reloads, reads, churns = [], [], 0, 0, 0
        simconns = []             # meterd's connections to the simulator
        ntargets = []
        next_reload = t0 + reload_every
        next_churn = t0 + churn_every / 2          # halfway between reloads
        births = [t0 + secs / 6.0, t0 + secs / 3.0]
        ways = list(Pods.WAYS)
        while time.monotonic() - t0 < secs:
            now = time.monotonic()
            if now >= next_reload:
                m.write_config(raw=yaml_b if reloads % 2 == 0 else yaml_a)
                m.signal(signal.SIGHUP)
                reloads += 1
                next_reload += reload_every
            if now >= next_churn:
                pods.churn(rng, ways[churns % len(ways)])
                churns += 1
                next_churn += churn_every
            if births and now >= births[0]:
                pods.birth()
                births.pop(0)
            rel.usage(m, "namespace,model")
            ntargets.append(len(targets_api(m)))
            assert m.get("/metrics").status == 200
            reads += 3
            rss.append((now - t0, rel.vm_kib(pid, "VmRSS")))
            n_fd, n_sim = fds(pid, [sim.port(i) for i in range(sim.n)])
            fd.append((now - t0, n_fd - n_sim))
            simconns.append(n_sim)
            if len(rss) % 30 == 0:
                print("t=%4.0fs rss=%d KiB fds=%d (+%d to the simulator) targets=%d reloads=%d "
                      "churns=%d" % (now - t0, rss[-1][1], fd[-1][1], simconns[-1], ntargets[-1],
                                     reloads, churns), flush=True)
            time.sleep(2)
        # final phase: every pod listed again, all targets up
        pods.all_listed()
        # (settle_and_compare then waits for two more scrapes of each)
        wait_until(lambda: len(targets_api(m)) == N_STATIC + N_PODS, 60,
                   "every target listed again")
        # meterd-side failures: a scrape the simulator delivered but meterd
        # did not apply (timeout on a loaded machine, pod removed mid-way)
        # is how a reset could take counts meterd never saw (reset-scrapes)
        print("meterd scrape failures: %s" % {
            r: int(m.metric_sum("meterd_scrape_failures_total", {"reason": r}))
            for r in ("timeout", "connect", "transfer", "http_status", "parse_error",
                      "queue_full", "body_too_large", "internal")},
            flush=True)
        st = sim.truth()["targets"]
        print("simulator: %s" % {k: sum(t[k] for t in st) for k in
                                 ("meterd_scrapes", "resets", "confirmed", "unconfirmed",
                                  "unseeable")}, flush=True)
        truth, exp = tue.settle_and_compare(m, sim, ns, timeout=120)
        # every restart was shown to meterd before its series regrew past
        # their old values (else the truth holds what no scraper can bill)
        assert all(t["unseeable"] == 0 for t in truth["targets"]), truth["targets"]
        unconfirmed = sum(t["unconfirmed"] for t in truth["targets"])
        half = [p for p in rss if p[0] >= secs / 2]
        fd_half = [v for t, v in fd if t >= secs / 2]
        s = slope_per_min(half)
        s_all = slope_per_min(rss)
        # transient sockets (API clients, scrapes in flight) come and go:
        # the floor of the last quarter must not rise above the second's
        q2 = [v for t, v in fd if secs / 4 <= t < secs / 2]
        q4 = [v for t, v in fd if t >= 3 * secs / 4]
        # (the 10th percentile, not the minimum: one sample of run 3 dipped
        # to 21 below the steady 23 and made the last quarter's 23 look grown)
        def low(v):
            return sorted(v)[len(v) // 10]
        assert low(q4) <= low(q2) + 1, (low(q2), low(q4), q2, q4)
        # keep-alive: at most one connection per target (+ one in flight
        # while an idle one to a removed pod waits to be dropped)
        assert max(simconns) <= N_STATIC + N_PODS + 2, max(simconns)
        assert m.metric("meterd_config_reload_failures_total") == 0
        resets = sum(t["resets"] for t in truth["targets"])
        assert resets >= 2, truth["targets"]
        ev = pods.events
        assert ev["removed"] and ev["succeeded"] and ev["terminating"] and ev["back"], ev
        assert ev["born"] == N_PODS - N_FIRST, ev
        assert min(ntargets) < max(ntargets), "the churn never changed the target list"
        assert kube.requests, "the fake API server was never asked"
        if os.environ.get("SOAK_KEEP_DIR"):
            keep_all(m, sim, ns, os.environ["SOAK_KEEP_DIR"])
        assert m.stop() == 0
        figure(18, "soak %d s: %d sidecar resets (%d scrapes of frozen counters not known to "
                   "be read, their connection closed before another request: not counted "
                   "towards a reset), %d SIGHUP reloads, "
                   "%d discovery changes "
                   "(%d removed, %d Succeeded, %d terminating, %d back, %d new pods; targets "
                   "listed %d..%d; %d API list requests), %d API reads: RSS %d -> %d KiB "
                   "(max %d), slope over the second half %.1f KiB/min (whole run %.1f; bound "
                   "%.0f); open fds over the second half %d..%d (floor q2 %d -> q4 %d; plus %d..%d "
                   "keep-alive connections to the simulator); usage "
                   "== simulator truth (%d tokens)"
               % (secs, resets, unconfirmed, reloads, sum(ev.values()),
                  ev["removed"], ev["succeeded"], ev["terminating"], ev["back"], ev["born"],
                  min(ntargets), max(ntargets), len(kube.requests), reads,
                  rss[0][1], rss[-1][1], max(v for _, v in rss), s, s_all, slope_max,
                  min(fd_half), max(fd_half), min(q2), min(q4), min(simconns), max(simconns),
                  sum(v[0] for v in exp.values())))
        assert s < slope_max, "RSS grows %.1f KiB/min over the second half" % s
    except BaseException:
        # an hour is expensive to repeat: say what meterd said, and keep the
        # simulator's log (every meterd scrape it served, --log-scrapes), its
        # truth and the whole usage difference next to meterd's log
        rc = m.proc.poll() if m.proc is not None else None
        keep_dir = os.environ.get("SOAK_KEEP_DIR") or os.environ.get("TMPDIR", "/tmp")
        keep = os.path.join(keep_dir, "meterd-soak-%d.log" % os.getpid())
        keep_all(m, sim, ns, keep_dir)
        print("meterd exit status %s; its whole log is in %s; warnings and errors:\n%s" % (
            rc, keep, "\n".join([l for l in m.log().splitlines()
                                 if "level=warn" in l or "level=error" in l][-80:])),
              flush=True)
        raise
    finally:
        m.cleanup()
        kube.close()
        sim.cleanup()


def keep_all(m, sim, ns, keep_dir):
    """meterd's log, the simulator's log, its truth and the usage difference
    into keep_dir (file names carry this process's id)."""
    pid = os.getpid()
    os.makedirs(keep_dir, exist_ok=True)
    with open(os.path.join(keep_dir, "meterd-soak-%d.log" % pid), "w") as f:
        f.write(m.log())
    with open(os.path.join(keep_dir, "extproc-sim-soak-%d.log" % pid), "w") as f:
        f.write(sim.output())
    try:
        truth = sim.truth()
        exp = tue.expected_from_truth(truth, sim, ns)
        got, _ = tue.usage_by(m)
        diff = sorted([list(k), got.get(k), exp.get(k)] for k in set(got) | set(exp)
                      if got.get(k) != exp.get(k))
        with open(os.path.join(keep_dir, "soak-truth-%d.json" % pid), "w") as f:
            json.dump({"truth_targets": truth["targets"], "ports": [sim.port(i) for i in
                       range(sim.n)], "namespaces": ns, "diff": diff,
                       "targets": targets_api(m)}, f, indent=1)
        print("kept in %s: meterd/extproc-sim logs, soak-truth-%d.json (%d keys differ)" % (
            keep_dir, pid, len(diff)), flush=True)
    except Exception as e:  # noqa: BLE001 (meterd or the simulator may be dead)
        print("could not keep the truth and the difference: %r" % e, flush=True)


if __name__ == "__main__":
    harness.main([test_18_soak])
