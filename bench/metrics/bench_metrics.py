#!/usr/bin/env python3
"""bench_metrics.py: /metrics exposition throughput of meterd with 100,000
exported usage series, beside the /metrics of Prometheus 2.42 and
VictoriaMetrics 1.79 (Debian packages), in the same run, on loopback.

    python3 bench/metrics/bench_metrics.py --meterd build/meterd \
        [--series 100000] [--runs 3] [--duration 10] [--threads 2] [--connections 50]

Seeds a meterd database directly (schema from a first meterd start, then
dims + usage_hourly rows: namespace x department x model x 4 token types,
the input type also exporting requests), so the snapshot meterd loads at
start exports exactly --series usage series.  Each server is measured with
`wrk -t T -c C -d D --latency` in turn, `--runs` rounds interleaved; the
table gives medians.  Series per second = requests/s x series in one body;
bytes per second = requests/s x body bytes.  CPU ms per request: the
server's (utime + stime from /proc) and wrk's (its rusage) over one wrk run,
divided by the requests: steadier than requests/s on a shared machine.
A second meterd on a copy of the same database runs with
`http.send_buffer: 0B` (the kernel's send-buffer autotuning, meterd's
behaviour before that setting) as a same-run control.  Needs: wrk, prometheus,
victoria-metrics (apt-get install -y wrk victoria-metrics prometheus)."""
import argparse
import os
import re
import resource
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib

TOKEN_TYPES = ["input", "output", "cached_input", "reasoning"]   # input: +requests


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=30):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def wait_http(url, proc, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("%s exited with %s" % (what, proc.returncode))
        try:
            get(url, timeout=2)
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("%s did not answer %s" % (what, url))


def seed(db, series):
    """series usage series: groups of 4 token types give 5 series each."""
    groups = series // 5
    con = sqlite3.connect(db)
    hour = int(time.time()) // 3600 * 3600
    with con:
        dims, usage = [], []
        i = 0
        for g in range(groups):
            ns = "tenant-%04d" % (g // 200)
            dept = "dept-%02d" % (g // 10 % 20)
            model = "model-%d" % (g % 10)
            for t in TOKEN_TYPES:
                i += 1
                dims.append((i, "bench", ns, dept, model, "openai", "chat", t))
                usage.append((hour, i, 1000 + g * 7 + len(t), 10 + g % 97 if t == "input" else 0))
        con.executemany("INSERT INTO dims(id, cluster, namespace, department, model, provider, "
                        "operation, token_type) VALUES (?,?,?,?,?,?,?,?)", dims)
        con.executemany("INSERT INTO usage_hourly(hour_s, dim_id, tokens, requests) "
                        "VALUES (?,?,?,?)", usage)
    con.close()
    return groups * 5


def body_stats(url, accept=None, gzip=False):
    h = {"Accept": accept} if accept else {}
    if gzip:
        h["Accept-Encoding"] = "gzip"
    req = urllib.request.Request(url, headers=h)
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read()
        enc = r.headers.get("Content-Encoding")
    wire = len(body)
    if enc == "gzip":
        body = zlib.decompress(body, 31)
    elif gzip:
        raise SystemExit("%s did not answer gzip" % url)
    lines = [ln for ln in body.decode("utf-8", "replace").split("\n")
             if ln and not ln.startswith("#")]
    return len(lines), wire


UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
SIZE = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3}


def cpu_s(pid):
    """utime + stime of a process in seconds (/proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(url, threads, conns, duration, gzip, server_pid):
    hdr = ["-H", "Accept-Encoding: gzip"] if gzip else []
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    srv0 = cpu_s(server_pid)
    out = subprocess.run(["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % duration,
                          "--timeout", "30s", "--latency"] + hdr + [url],
                         capture_output=True, text=True, check=True).stdout
    srv = cpu_s(server_pid) - srv0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    nreq = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    m = re.search(r"^\s+99%\s+([0-9.]+)(us|ms|s|m)\s*$", out, re.M)
    p99 = float(m.group(1)) * UNITS[m.group(2)]
    m = re.search(r"Transfer/sec:\s+([0-9.]+)(B|KB|MB|GB)", out)
    tput = float(m.group(1)) * SIZE[m.group(2)]
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p99": p99, "transfer": tput,
            "srv_ms": srv * 1e3 / max(nreq, 1), "wrk_ms": wrk_cpu * 1e3 / max(nreq, 1),
            "non2xx": int(errs.group(1)) if errs else 0,
            "sockerr": sock.group(1) if sock else "", "raw": out}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--meterd", required=True)
    ap.add_argument("--series", type=int, default=100000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=50)
    a = ap.parse_args()
    for tool in ("wrk", "prometheus", "victoria-metrics"):
        if shutil.which(tool) is None:
            raise SystemExit("missing %s: apt-get install -y wrk prometheus victoria-metrics"
                             % tool)
    work = tempfile.mkdtemp(prefix="bench-metrics-")
    procs = []
    try:
        # meterd: migrate an empty database, seed it, start on it
        def meterd_cfg(name, port, db, extra=""):
            cfg = os.path.join(work, name + ".yaml")
            with open(cfg, "w") as f:
                f.write("cluster: bench\nlisten: 127.0.0.1:%d\nstorage:\n  path: %s\n"
                        "metrics:\n  max_series: %d\nhttp:\n  threads: 4\n"
                        "  max_connections: 256\n  max_connections_per_ip: 256\n%s"
                        "log:\n  level: warn\n" % (port, db, max(a.series, 1), extra))
            return cfg

        mport, cport = free_port(), free_port()
        db = os.path.join(work, "meterd.db")
        cfg = meterd_cfg("meterd", mport, db)
        log = open(os.path.join(work, "meterd.log"), "ab")
        p = subprocess.Popen([a.meterd, "run", "-c", cfg], stdout=log, stderr=log)
        wait_http("http://127.0.0.1:%d/readyz" % mport, p, "meterd")
        p.terminate()
        p.wait(30)
        want = seed(db, a.series)
        # the control: the same database, the kernel's send-buffer autotuning
        cdb = os.path.join(work, "control.db")
        shutil.copyfile(db, cdb)
        ccfg = meterd_cfg("control", cport, cdb, "  send_buffer: 0B\n")
        for c, port in ((cfg, mport), (ccfg, cport)):
            p = subprocess.Popen([a.meterd, "run", "-c", c], stdout=log, stderr=log)
            procs.append(p)
            wait_http("http://127.0.0.1:%d/readyz" % port, p, "meterd")

        pport = free_port()
        with open(os.path.join(work, "prometheus.yml"), "w") as f:
            f.write("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
        p = subprocess.Popen(["prometheus", "--config.file=" + os.path.join(work, "prometheus.yml"),
                              "--storage.tsdb.path=" + os.path.join(work, "prom"),
                              "--web.listen-address=127.0.0.1:%d" % pport, "--log.level=warn"],
                             stdout=log, stderr=log)
        procs.append(p)
        wait_http("http://127.0.0.1:%d/-/ready" % pport, p, "prometheus")

        vport = free_port()
        p = subprocess.Popen(["victoria-metrics", "-storageDataPath=" + os.path.join(work, "vm"),
                              "-httpListenAddr=127.0.0.1:%d" % vport, "-loggerLevel=ERROR"],
                             stdout=log, stderr=log)
        procs.append(p)
        wait_http("http://127.0.0.1:%d/health" % vport, p, "victoria-metrics")

        servers = [
            ("meterd (%d usage series)" % want, "http://127.0.0.1:%d/metrics" % mport),
            ("meterd, send_buffer: 0B (control)", "http://127.0.0.1:%d/metrics" % cport),
            ("Prometheus 2.42", "http://127.0.0.1:%d/metrics" % pport),
            ("VictoriaMetrics 1.79", "http://127.0.0.1:%d/metrics" % vport),
        ]
        # warm up (meterd renders its usage body once per snapshot)
        for _, url in servers:
            get(url)
        om = body_stats(servers[0][1], "application/openmetrics-text;version=1.0.0")
        rss = {}
        for gz in (False, True):
            stats = {name: body_stats(url, gzip=gz) for name, url in servers}
            results = {name: [] for name, _ in servers}
            for r in range(a.runs):
                for (name, url), proc in zip(servers, procs):
                    res = run_wrk(url, a.threads, a.connections, a.duration, gz, proc.pid)
                    results[name].append(res)
                    sys.stderr.write("%s run %d %-34s %10.1f req/s  p99 %8.2f ms  "
                                     "CPU ms/req server %.3f wrk %.3f  %s%s\n" % (
                        "gzip" if gz else "identity", r + 1, name, res["rps"],
                        res["p99"] * 1e3, res["srv_ms"], res["wrk_ms"],
                        "non-2xx %d " % res["non2xx"] if res["non2xx"] else "",
                        "socket errors: " + res["sockerr"] if res["sockerr"] else ""))
            for (name, _), p in zip(servers, procs):
                try:
                    with open("/proc/%d/status" % p.pid) as f:
                        rss[name] = int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) // 1024
                except OSError:
                    rss[name] = None
            print("%s (wrk %s):" % ("gzip, as Prometheus scrapes" if gz else "identity",
                                    "-H 'Accept-Encoding: gzip'" if gz else "without headers"))
            print()
            print("| server | series in body | body bytes on the wire | requests/s | series/s "
                  "| MB/s on the wire | p99 ms | server CPU ms/req | wrk CPU ms/req "
                  "| peak RSS MiB so far |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for name, _ in servers:
                n, size = stats[name]
                med = {k: statistics.median(x[k] for x in results[name])
                       for k in ("rps", "p99", "srv_ms", "wrk_ms")}
                rps = med["rps"]
                print("| %s | %d | %d | %.1f | %s | %.1f | %.2f | %.3f | %.3f | %s |" % (
                    name, n, size, rps, format(int(rps * n), ","), rps * size / 1e6,
                    med["p99"] * 1e3, med["srv_ms"], med["wrk_ms"],
                    rss[name] if rss[name] is not None else "?"))
            print()
            errs = sum(x["non2xx"] for v in results.values() for x in v)
            if errs:
                print("non-2xx responses: %d\n" % errs)
        print("meterd body: %d usage series + health; OpenMetrics %d bytes (%d samples); "
              "wrk -t%d -c%d -d%ds, median of %d interleaved runs." % (
                  want, om[1], om[0], a.threads, a.connections, a.duration, a.runs))
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
