"""run.py: Cost Management API p99 for a month of a 1,000-project
installation, beside a bare SQLite select of the same rows, in one run.

  python3 bench/costmgmt/run.py --build BUILD [--seconds 15] [--projects 1000]

Seeds a database (seed.py), compiles bare_select.c, starts meterd on it with
auth on (an admin token: the bearer check is part of what is measured), then
for each query runs wrk -t1 -c1 --latency (one request at a time, so the
latency is the service time, as for the serial bare select) and the bare
select in a loop.  Prints a Markdown table for bench/RESULTS.md."""
import argparse
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
CM = "/platform/cost.alauda.io/v1beta1"
TOKEN = "bench-admin-token"
RANGE = "start=2025-06-01&end=2025-06-30"
BASE = ("FROM usage_hourly u JOIN dims d ON d.id = u.dim_id "
        "WHERE u.hour_s >= ?1 AND u.hour_s < ?2")
SCAN = "SELECT u.dim_id, u.hour_s, u.tokens FROM usage_hourly u WHERE u.hour_s >= ?1 AND u.hour_s < ?2"
SCAN_NS = ("SELECT u.dim_id, u.hour_s, u.tokens FROM dims d CROSS JOIN usage_hourly u "
           "ON u.dim_id = d.id WHERE u.hour_s >= ?1 AND u.hour_s < ?2 AND d.namespace = ?3")
QUERIES = [
    # name, API path, [(bare label, SQL, text param, iterations)]
    ("project_all, month, page 1 of 20", CM + "/costs/usage?" + RANGE, [
        ("read the rows", SCAN, None, 10),
        ("GROUP BY namespace", "SELECT d.namespace, sum(u.tokens) " + BASE +
         " GROUP BY d.namespace", None, 5)]),
    ("project_all, month, pageSize=1000", CM + "/costs/usage?pageSize=1000&" + RANGE, [
        ("read the rows", SCAN, None, 10)]),
    ("namespace_all, day, pageSize=1000 (of 30,000 items)",
     CM + "/costs/usage?kind=namespace_all&step=day&pageSize=1000&" + RANGE, [
         ("read the rows", SCAN, None, 10),
         ("GROUP BY day, cluster, namespace", "SELECT u.hour_s / 86400, d.cluster, "
          "d.namespace, sum(u.tokens) " + BASE + " GROUP BY 1, 2, 3", None, 5)]),
    ("one project (project route), month", CM + "/projects/proj-0500/costs/usage?" + RANGE, [
        ("read the project's rows", SCAN_NS, "proj-0500", 500)]),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ms(v, unit):
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def wrk(url, seconds):
    out = subprocess.run(["wrk", "-t1", "-c1", "-d%ds" % seconds, "--timeout", "120s",
                          "--latency", "-H",
                          "Authorization: Bearer " + TOKEN, url],
                         capture_output=True, text=True, check=True).stdout
    pct = {k: ms(v, u) for k, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$",
                                                   out, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit("wrk saw %s error answers for %s" % (non2xx.group(1), url))
    return pct["50"], pct["99"], rps, reqs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--projects", type=int, default=1000)
    a = ap.parse_args()
    meterd = os.path.join(os.path.abspath(a.build), "meterd")
    work = tempfile.mkdtemp(prefix="bench-costmgmt-")
    try:
        subprocess.run([sys.executable, os.path.join(HERE, "seed.py"), "--meterd", meterd,
                        "--dir", work, "--projects", str(a.projects)], check=True)
        bare = os.path.join(work, "bare_select")
        subprocess.run(["cc", "-O2", "-o", bare, os.path.join(HERE, "bare_select.c"),
                        "-lsqlite3"], check=True)
        db = os.path.join(work, "meterd.db")
        port = free_port()
        cfg = os.path.join(work, "bench.yaml")
        with open(cfg, "w") as f:
            f.write("listen: 127.0.0.1:%d\nstorage:\n  path: %s\nlog:\n  level: warn\n"
                    "http:\n  threads: 2\n"
                    "auth:\n  tokens:\n    - {name: bench, sha256: \"%s\", scope: admin}\n"
                    % (port, db, hashlib.sha256(TOKEN.encode()).hexdigest()))
        p = subprocess.Popen([meterd, "run", "-c", cfg])
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if urllib.request.urlopen("http://127.0.0.1:%d/readyz" % port).status == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("meterd not ready")
                time.sleep(0.05)
            rows = []
            for name, path, bares in QUERIES:
                url = "http://127.0.0.1:%d%s" % (port, path)
                a50, a99, rps, reqs = wrk(url, a.seconds)
                for label, sql, param, iters in bares:
                    cmd = [bare, db, str(iters), sql] + ([param] if param else [])
                    out = subprocess.run(cmd, capture_output=True, text=True,
                                         check=True).stdout
                    b = dict(kv.split("=") for kv in out.split())
                    b50, b99 = float(b["p50_ms"]), float(b["p99_ms"])
                    rows.append("| %s | %d | %.1f | %.1f | %s (%s rows) | %d | %.1f | %.1f | "
                                "%.2f |" % (name, reqs, a50, a99, label, b["rows"], iters, b50,
                                            b99, a99 / max(b99, 1e-3)))
                    print(rows[-1], file=sys.stderr)
        finally:
            p.terminate()
            p.wait()
        print("| API query | requests | API p50 ms | API p99 ms | bare SQLite select | runs | "
              "bare p50 ms | bare p99 ms | API p99 / bare p99 |")
        print("|---|---|---|---|---|---|---|---|---|")
        print("\n".join(rows))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
