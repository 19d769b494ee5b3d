"""test_daemon.py: the foundation end to end: the real binary, /readyz,
/metrics through promtool, 404/405, SIGHUP good and bad, SIGTERM exit 0,
check-config errors, kill -9 during writes."""
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Meterd, wait_until, integrity_ok  # noqa: E402


def test_ready_metrics_and_routes():
    m = Meterd().start()
    try:
        r = m.get("/readyz")
        assert r.status == 200, r.status
        assert m.get("/healthz").status == 200
        r = m.get("/metrics")
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
        for name in ("meterd_build_info", "process_start_time_seconds",
                     "meterd_config_last_reload_successful",
                     "meterd_config_last_reload_success_timestamp_seconds",
                     "meterd_http_requests_total"):
            assert ("\n# TYPE %s " % name) in "\n" + r.text, name
        start = m.metric("process_start_time_seconds")
        assert abs(start - time.time()) < 120, start
        # promtool (Debian's prometheus package) accepts the exposition
        p = subprocess.run(["promtool", "check", "metrics"], input=r.body,
                           capture_output=True)
        assert p.returncode == 0, p.stdout + p.stderr
        # unknown path, wrong method, API errors in JSON
        r = m.get("/nope")
        assert r.status == 404, r.status
        r = m.request("POST", "/metrics", body=b"x")
        assert r.status == 405 and "GET" in r.headers.get("Allow", ""), (r.status, r.headers)
        r = m.request("DELETE", "/readyz")
        assert r.status == 405
        r = m.get("/api/v1/nothing-here")
        assert r.status == 404
        assert r.headers["Content-Type"] == "application/json"
        import json
        j = json.loads(r.body)
        assert j["error"]["code"] == "not_found" and j["error"]["message"], j
        # the request counter saw them, with bounded labels
        assert m.metric("meterd_http_requests_total", {"path": "other", "code": "404"}) >= 1
        assert m.metric("meterd_http_requests_total", {"path": "/metrics", "code": "405"}) >= 1
        assert m.stop() == 0, m.log()
    finally:
        m.cleanup()


def test_sighup_good_and_bad():
    m = Meterd().start()
    try:
        ok_ts = m.metric("meterd_config_last_reload_success_timestamp_seconds")
        assert m.metric("meterd_config_last_reload_successful") == 1
        # a good file: swapped in
        time.sleep(0.01)
        m.write_config("scrape:\n  interval: 30s\n  timeout: 5s\n")
        m.signal(signal.SIGHUP)
        wait_until(lambda: m.metric("meterd_config_reloads_total") == 1, what="reload counted")
        assert m.metric("meterd_config_last_reload_successful") == 1
        assert m.metric("meterd_config_last_reload_success_timestamp_seconds") > ok_ts
        # a bad file with two errors: rejected, both logged, old config stays
        m.write_config(raw=m.base_yaml() + "scrape:\n  interval: 5\nbogus: 1\n")
        m.signal(signal.SIGHUP)
        wait_until(lambda: m.metric("meterd_config_reloads_total") == 2, what="2nd reload")
        assert m.metric("meterd_config_last_reload_successful") == 0
        assert m.metric("meterd_config_reload_failures_total") == 1
        log = m.log()
        assert 'meterd.yaml:8:13: scrape.interval: \\"5\\" needs a unit' in log, log
        assert "meterd.yaml:9:1: bogus: unknown key" in log, log
        assert "keeping the running configuration" in log
        assert m.get("/readyz").status == 200
        # fixing the file recovers
        m.write_config("")
        m.signal(signal.SIGHUP)
        wait_until(lambda: m.metric("meterd_config_last_reload_successful") == 1, what="recovery")
        assert m.stop() == 0
        con = sqlite3.connect(m.db)
        kinds = [r[0] for r in con.execute("SELECT kind FROM events ORDER BY id")]
        con.close()
        assert kinds == ["start", "config_reload", "config_reload_failed", "config_reload",
                         "stop"], kinds
    finally:
        m.cleanup()


def test_sigterm_and_sigint_exit_zero():
    for sig in (signal.SIGTERM, signal.SIGINT):
        m = Meterd().start()
        try:
            m.signal(sig)
            assert m.proc.wait(20) == 0, m.log()
            assert "stopped" in m.log()
        finally:
            m.cleanup()


def test_check_config_reports_every_error():
    d = Meterd()
    try:
        path = os.path.join(d.dir, "three.yaml")
        with open(path, "w") as f:
            f.write("cluster: prod\n"
                    "listen: localhost\n"          # 2:9 no port
                    "scrape:\n"
                    "  interval: 10\n"             # 4:13 no unit
                    "  body_size_limit: 1MiB\n"
                    "targets:\n"
                    "  - url: http://127.0.0.1:1064/metrics\n"
                    "    namspace: team-a\n")      # 8:5 unknown key
        p = subprocess.run([harness.ARGS.meterd, "check-config", "-c", path],
                           capture_output=True, text=True)
        assert p.returncode == 1, p
        lines = p.stderr.strip().splitlines()
        assert lines == [
            path + ':2:9: listen: "localhost": expected host:port with a port from 1 to 65535 '
                   '(e.g. 127.0.0.1:9180)',
            path + ':4:13: scrape.interval: "10" needs a unit (e.g. 15s)',
            path + ':8:5: targets[0].namspace: unknown key (did you mean "namespace"?)',
        ], lines
        assert p.stdout == ""
        good = os.path.join(harness.ARGS.source, "config", "meterd.yaml")
        p = subprocess.run([harness.ARGS.meterd, "check-config", "-c", good],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        p = subprocess.run([harness.ARGS.meterd, "check-config", "-c", path + ".missing"],
                           capture_output=True, text=True)
        assert p.returncode == 1 and "cannot open" in p.stderr
        p = subprocess.run([harness.ARGS.meterd, "--help"], capture_output=True, text=True)
        assert p.returncode == 0 and "check-config" in p.stdout
        p = subprocess.run([harness.ARGS.meterd, "version"], capture_output=True, text=True)
        assert p.returncode == 0 and p.stdout.startswith("meterd ")
        p = subprocess.run([harness.ARGS.meterd, "--help-config"], capture_output=True, text=True)
        assert p.returncode == 0 and "scrape.body_size_limit" in p.stdout
    finally:
        d.cleanup()


def test_newer_database_refused():
    m = Meterd()
    try:
        os.makedirs(os.path.dirname(m.db))
        con = sqlite3.connect(m.db)
        con.execute("PRAGMA user_version=999")
        con.close()
        before = open(m.db, "rb").read()
        m.start(wait=False)
        assert m.proc.wait(20) == 1
        assert "newer than this meterd" in m.log(), m.log()
        assert open(m.db, "rb").read() == before
    finally:
        m.cleanup()


def test_bind_failure_is_clear():
    a = Meterd().start()
    b = Meterd(port=a.port)
    try:
        b.start(wait=False)
        assert b.proc.wait(20) == 1
        assert "listen" in b.log() and str(a.port) in b.log(), b.log()
        assert a.stop() == 0
    finally:
        a.cleanup()
        b.cleanup()


def test_kill9_during_writes_leaves_clean_db():
    """SIGHUP storms make the writer commit event rows continuously; kill -9
    at random moments, then the database must open, check clean and keep
    every row committed before the kill."""
    rnd = random.Random(7)
    m = Meterd()
    try:
        for i in range(8):
            m.start()
            stop_at = time.monotonic() + rnd.uniform(0.05, 0.4)
            while time.monotonic() < stop_at:
                m.signal(signal.SIGHUP)
                time.sleep(0.002)
            m.kill9()
            assert integrity_ok(m.db), "integrity_check failed after kill %d" % i
        m.start()
        assert m.stop() == 0
        con = sqlite3.connect(m.db)
        n_start = con.execute("SELECT count(*) FROM events WHERE kind='start'").fetchone()[0]
        con.close()
        assert n_start == 9, n_start
        assert integrity_ok(m.db)
    finally:
        m.cleanup()


if __name__ == "__main__":
    harness.main([
        test_ready_metrics_and_routes,
        test_sighup_good_and_bad,
        test_sigterm_and_sigint_exit_zero,
        test_check_config_reports_every_error,
        test_newer_database_refused,
        test_bind_failure_is_clear,
        test_kill9_during_writes_leaves_clean_db,
    ])
