#!/usr/bin/env python3
"""bench/ingest/bench.py: CPU seconds per million samples ingested and resident
memory per active series, for meterd, Prometheus and VictoriaMetrics, scraping
the same extproc-sim targets (issue 4, "Performance").

One simulator per scale; the three scrapers run one after another against it
(never concurrently, so they do not steal each other's CPU).  For each run:
start the scraper with its own temporary config and data directory, wait
WARMUP seconds, snapshot, wait WINDOW seconds, snapshot again, stop it.

  CPU      utime+stime of the scraper process only (/proc/PID/stat, all
           threads), delta over the window.  The simulator's CPU is reported
           separately and never charged to a scraper.
  samples  the simulator's delivered-scrape counters (delta over the window)
           x samples per body (counted from the bodies themselves): the same
           denominator for all three.  Each scraper's own counter is reported
           beside it as a cross-check (meterd: successful scrapes x samples of
           the body from /api/v1/targets; Prometheus:
           prometheus_tsdb_head_samples_appended_total, which includes its 5
           synthetic series per scrape; VictoriaMetrics: vm_rows_inserted_total,
           which includes its synthetic up/scrape_* series too).
  RSS      VmRSS sampled once a second over the window; the median of the
           second half is reported (steady state, not a spike).
  series   the scraper's own active-series count (meterd: billed series, the
           only ones it keeps state for; Prometheus: prometheus_tsdb_head_series;
           VictoriaMetrics: vm_cache_entries{type="storage/hour_metric_ids"})
           and the series the targets expose (same for all).

Python 3 stdlib only.  Everything listens on 127.0.0.1."""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def get(url, timeout=30, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def wait_http(url, timeout, proc, what):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError("%s exited with %s" % (what, proc.returncode))
        try:
            get(url, timeout=2)
            return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError("%s not ready at %s" % (what, url))


PROM_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')


def prom_metrics(url):
    """{(name, labels-string): value} of a Prometheus text page."""
    out = {}
    for line in get(url).decode("utf-8", "replace").splitlines():
        if not line or line.startswith("#"):
            continue
        m = PROM_LINE.match(line)
        if m:
            try:
                out[(m.group(1), m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return out


def msum(metrics, name, label_filter=None):
    return sum(v for (n, l), v in metrics.items()
               if n == name and (label_filter is None or label_filter in l))


class Sim:
    def __init__(self, exe, n, base_port, control_port, seed):
        self.n, self.base, self.ctl = n, base_port, control_port
        self.proc = subprocess.Popen(
            [exe, "--targets", str(n), "--base-port", str(base_port),
             "--control-port", str(control_port), "--seed", str(seed), "--quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http("http://127.0.0.1:%d/healthz" % control_port, 30, self.proc, "extproc-sim")

    def urls(self):
        return ["127.0.0.1:%d" % (self.base + i) for i in range(self.n)]

    def truth(self):
        return json.loads(get("http://127.0.0.1:%d/truth" % self.ctl, timeout=60))

    def delivered(self):
        return sum(t["delivered"] for t in self.truth()["targets"])

    def body_stats(self):
        """(samples, lines, billed-candidate samples) summed over every
        target's current body; plain text, no gzip (measurement only)."""
        samples = lines = billed = 0
        for u in self.urls():
            body = get("http://%s/metrics" % u, timeout=60).decode("utf-8", "replace")
            for line in body.splitlines():
                lines += 1
                if not line or line.startswith("#"):
                    continue
                samples += 1
                name = line.split("{", 1)[0].split(" ", 1)[0]
                # billed: token usage _sum (tokens) and _count (requests)
                if name.startswith("gen_ai_client_token_usage") and \
                        (name.endswith("_sum") or name.endswith("_count")):
                    billed += 1
        return samples, lines, billed

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def prom_yaml(sim, interval, disable_compression=False):
    # disable_compression is a VictoriaMetrics scrape_config key (no
    # Accept-Encoding: gzip); Prometheus 2.42 has no such option (it came in
    # 2.49 as enable_compression), so it always asks for gzip
    tl = ", ".join("'%s'" % u for u in sim.urls())
    return ("global:\n  scrape_interval: %ds\n  scrape_timeout: %ds\n"
            "scrape_configs:\n  - job_name: sim\n    metrics_path: /metrics\n%s"
            "    static_configs:\n      - targets: [%s]\n" % (
                interval, interval,
                "    disable_compression: true\n" if disable_compression else "", tl))


class Scraper:
    """Base: start/stop a scraper process in its own temp dir."""
    name = "?"

    def __init__(self, args, sim, port, workdir):
        self.args, self.sim, self.port, self.dir = args, sim, port, workdir
        self.proc = None

    def start(self):
        cmd = self.command()
        self.log = open(os.path.join(self.dir, "stderr.log"), "ab")
        self.proc = subprocess.Popen(cmd, cwd=self.dir, stdout=self.log, stderr=self.log)
        wait_http(self.ready_url(), 60, self.proc, self.name)

    def stop(self):
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Meterd(Scraper):
    name = "meterd"
    compression = "gzip"

    def command(self):
        cfg = os.path.join(self.dir, "meterd.yaml")
        with open(cfg, "w") as f:
            f.write("cluster: bench\nlisten: 127.0.0.1:%d\n"
                    "storage:\n  path: %s\n"
                    "scrape:\n  interval: %ds\n  timeout: %ds\n  compression: %s\n"
                    "log:\n  level: warn\n"
                    "targets:\n" % (self.port, os.path.join(self.dir, "var", "meterd.db"),
                                    self.args.interval, self.args.interval, self.compression))
            for u in self.sim.urls():
                f.write("  - url: http://%s/metrics\n    namespace: bench\n" % u)
        return [self.args.meterd, "run", "-c", cfg]

    def ready_url(self):
        return "http://127.0.0.1:%d/readyz" % self.port

    def counters(self):
        doc = json.loads(get("http://127.0.0.1:%d/api/v1/targets" % self.port))
        samples = billed = 0
        ok = 0
        for t in doc["targets"]:
            good = t["scrapes"] - sum(t["failures"].values())
            ok += good
            samples += good * t["samples"]      # approximation: last body size
            billed += t["billed_series"]
        fails = sum(sum(t["failures"].values()) for t in doc["targets"])
        return {"samples": samples, "series": billed, "ok_scrapes": ok, "failed_scrapes": fails}


class MeterdIdentity(Meterd):
    """meterd with scrape.compression: identity (no gzip on the wire)."""
    name = "meterd-identity"
    compression = "identity"


class MeterdBase(Meterd):
    """meterd from another build (--meterd-base), e.g. the commit before an
    optimisation, interleaved with the others in the same run."""
    name = "meterd-base"

    def command(self):
        cmd = Meterd.command(self)
        cmd[0] = self.args.meterd_base
        return cmd


class Prometheus(Scraper):
    name = "prometheus"

    def command(self):
        cfg = os.path.join(self.dir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write(prom_yaml(self.sim, self.args.interval))
        return [self.args.prometheus, "--config.file=" + cfg,
                "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
                "--web.listen-address=127.0.0.1:%d" % self.port,
                "--log.level=warn"]

    def ready_url(self):
        return "http://127.0.0.1:%d/-/ready" % self.port

    def counters(self):
        m = prom_metrics("http://127.0.0.1:%d/metrics" % self.port)
        return {"samples": msum(m, "prometheus_tsdb_head_samples_appended_total"),
                "series": msum(m, "prometheus_tsdb_head_series"),
                "ok_scrapes": None,
                "failed_scrapes": msum(m, "prometheus_target_scrapes_exceeded_sample_limit_total")}


class Victoria(Scraper):
    name = "victoriametrics"
    disable_compression = False

    def command(self):
        cfg = os.path.join(self.dir, "scrape.yml")
        with open(cfg, "w") as f:
            f.write(prom_yaml(self.sim, self.args.interval, self.disable_compression))
        return [self.args.victoria, "-promscrape.config=" + cfg,
                "-storageDataPath=" + os.path.join(self.dir, "data"),
                "-httpListenAddr=127.0.0.1:%d" % self.port,
                "-retentionPeriod=1d", "-loggerLevel=WARN"]

    def ready_url(self):
        return "http://127.0.0.1:%d/health" % self.port

    def counters(self):
        m = prom_metrics("http://127.0.0.1:%d/metrics" % self.port)
        return {"samples": msum(m, "vm_rows_inserted_total"),
                "series": msum(m, "vm_cache_entries", 'type="storage/hour_metric_ids"'),
                "ok_scrapes": msum(m, "vm_promscrape_scrapes_total"),
                "failed_scrapes": msum(m, "vm_promscrape_scrapes_failed_total")}


class VictoriaIdentity(Victoria):
    """VictoriaMetrics with disable_compression: true in its scrape_config."""
    name = "victoriametrics-identity"
    disable_compression = True


SYSTEMS = {"meterd": Meterd, "meterd-identity": MeterdIdentity, "meterd-base": MeterdBase,
           "prometheus": Prometheus,
           "victoriametrics": Victoria, "victoriametrics-identity": VictoriaIdentity}


def one_run(args, sim, cls, port, body):
    wd = tempfile.mkdtemp(prefix="bench-ingest-%s-" % cls.name, dir=args.tmp)
    s = cls(args, sim, port, wd)
    res = {"system": cls.name, "targets": sim.n}
    try:
        s.start()
        pid = s.proc.pid
        time.sleep(args.warmup)
        c0, d0, k0 = cpu_s(pid), sim.delivered(), s.counters()
        sim_c0 = cpu_s(sim.proc.pid)
        t0 = time.time()
        la0 = loadavg()
        rss = []
        while time.time() - t0 < args.window:
            time.sleep(1.0)
            rss.append(rss_kb(pid))
        c1, d1, k1 = cpu_s(pid), sim.delivered(), s.counters()
        sim_c1 = cpu_s(sim.proc.pid)
        t1 = time.time()
        # the bodies grow a little while histogram buckets fill: count them
        # again and use the mean of before and after
        after, _, billed_after = sim.body_stats()
        res["body_samples_before"] = body["samples"]
        res["body_samples_after"] = after
        res["body_billed_after"] = billed_after
        body["samples"], body["billed"] = after, billed_after
        half = rss[len(rss) // 2:]
        res.update({
            "window_s": round(t1 - t0, 2),
            "cpu_s": round(c1 - c0, 2),
            "sim_cpu_s": round(sim_c1 - sim_c0, 2),
            "delivered_scrapes": d1 - d0,
            "expected_scrapes": round(sim.n * (t1 - t0) / args.interval),
            "sim_samples": (d1 - d0) * (res["body_samples_before"] + after) / 2 / sim.n,
            "own_samples": k1["samples"] - k0["samples"],
            "own_series": k1["series"],
            "failed_scrapes": (k1["failed_scrapes"] or 0) - (k0["failed_scrapes"] or 0),
            "rss_kb": statistics.median(half),
            "rss_kb_max": max(rss),
            "load": la0,
        })
        spm = res["sim_samples"] / 1e6
        res["cpu_per_msample"] = res["cpu_s"] / spm if spm else None
    finally:
        s.stop()
        if not args.keep:
            shutil.rmtree(wd, ignore_errors=True)
    return res


def on_signal(signum, frame):
    # a background sh starts us with SIGINT ignored: install both handlers so
    # `kill PID` stops the scraper and the simulator through the finally
    # blocks instead of orphaning them
    raise KeyboardInterrupt("signal %d" % signum)


def main():
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(root, "build"))
    ap.add_argument("--meterd")
    ap.add_argument("--meterd-base", help="meterd binary of the meterd-base system")
    ap.add_argument("--sim")
    ap.add_argument("--prometheus", default="/usr/bin/prometheus")
    ap.add_argument("--victoria", default="/usr/bin/victoria-metrics")
    ap.add_argument("--scales", default="50,200,500")
    ap.add_argument("--systems", default="meterd,prometheus,victoriametrics")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=20)
    ap.add_argument("--window", type=float, default=60)
    ap.add_argument("--interval", type=int, default=2)
    ap.add_argument("--base-port", type=int, default=31000)
    ap.add_argument("--port", type=int, default=30990, help="first scraper port (3 used)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", default="-", help="JSON lines output (- = stdout)")
    args = ap.parse_args()
    args.meterd = args.meterd or os.path.join(args.build, "meterd")
    args.sim = args.sim or os.path.join(args.build, "extproc-sim")
    out = sys.stdout if args.out == "-" else open(args.out, "a")
    systems = args.systems.split(",")
    if "meterd-base" in systems and not args.meterd_base:
        ap.error("system meterd-base needs --meterd-base (run.sh: METERD_BASE)")
    for n in [int(x) for x in args.scales.split(",")]:
        sim = Sim(args.sim, n, args.base_port, args.base_port - 1, args.seed)
        try:
            time.sleep(3)
            samples, lines, billed = sim.body_stats()
            body = {"samples": samples, "lines": lines, "billed": billed}
            out.write(json.dumps({"scale": n, "body": body}) + "\n")
            out.flush()
            for r in range(args.runs):
                for i, name in enumerate(systems):
                    res = one_run(args, sim, SYSTEMS[name], args.port + i, body)
                    res["run"] = r
                    out.write(json.dumps(res) + "\n")
                    out.flush()
                    sys.stderr.write("%s\n" % json.dumps(res))
        finally:
            sim.stop()


if __name__ == "__main__":
    main()
