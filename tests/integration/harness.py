"""harness.py: start the real meterd on a free loopback port, wait with
deadlines (never a bare sleep), talk HTTP, send signals, stop it.

Every test file imports this module and calls `main(tests)`; the results end
with the plain line "N passed, N failed".
"""
import argparse
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

ARGS = None


def parse_args():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--meterd", required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--build", required=True)
    p.add_argument("-k", default="", help="run only tests whose name contains this")
    ARGS = p.parse_args()
    return ARGS


def free_port():
    """A port free on 127.0.0.1 right now (bound then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout=10.0, what="condition", interval=0.02):
    """Polls pred() until it is truthy or the deadline passes."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - report the last one on timeout
            last_exc = e
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s%s" % (
        timeout, what, (": last error %r" % last_exc) if last_exc else ""))


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")


def http(method, url, body=None, headers=None, timeout=10):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Response(r.status, dict(r.headers), r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, dict(e.headers), e.read())


class Meterd:
    """One meterd process with its own directory, config and port."""

    def __init__(self, workdir=None, extra_yaml="", port=None, db=None):
        self.dir = workdir or tempfile.mkdtemp(prefix="meterd-it-")
        self.port = port or free_port()
        self.db = db or os.path.join(self.dir, "var", "meterd.db")
        self.config = os.path.join(self.dir, "meterd.yaml")
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.proc = None
        self.write_config(extra_yaml)

    def base_yaml(self):
        return ("cluster: it\n"
                "listen: 127.0.0.1:%d\n"
                "storage:\n  path: %s\n"
                "log:\n  level: debug\n" % (self.port, self.db))

    def write_config(self, extra_yaml="", raw=None):
        with open(self.config + ".tmp", "w") as f:
            f.write(raw if raw is not None else self.base_yaml() + extra_yaml)
        os.replace(self.config + ".tmp", self.config)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, wait=True, env=None, preexec=None):
        """env: extra environment variables for meterd only; preexec: run in
        the child before meterd (e.g. to lower a resource limit)."""
        self.stderr = open(self.stderr_path, "ab")
        penv = None
        if env:
            penv = dict(os.environ)
            penv.update(env)
        self.proc = subprocess.Popen([ARGS.meterd, "run", "-c", self.config],
                                     cwd=self.dir, stdout=self.stderr, stderr=self.stderr,
                                     env=penv, preexec_fn=preexec)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=20):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("meterd exited with %s:\n%s" % (self.proc.returncode, self.log()))
            return self.get("/readyz").status == 200
        wait_until(ready, timeout, "meterd /readyz")

    def get(self, path, **kw):
        return http("GET", self.url + path, **kw)

    def request(self, method, path, **kw):
        return http(method, self.url + path, **kw)

    def metric(self, name, labels=None):
        """Value of one sample of /metrics, or None."""
        for line in self.get("/metrics").text.splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            head, _, val = line.rpartition(" ")
            if head == name or (head.startswith(name + "{") and
                                all('%s="%s"' % kv in head for kv in (labels or {}).items())):
                if head == name and labels:
                    continue
                return float(val)
        return None

    def metric_sum(self, name, labels=None):
        """Sum of every sample of a family matching labels (0 if none)."""
        total = 0.0
        for line in self.get("/metrics").text.splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            head, _, val = line.rpartition(" ")
            if head != name and not head.startswith(name + "{"):
                continue
            if all('%s="%s"' % kv in head for kv in (labels or {}).items()):
                total += float(val)
        return total

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=20):
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("meterd did not stop within %ss after SIGTERM" % timeout)

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def log(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def integrity_ok(db_path):
    con = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()


def main(tests):
    parse_args()
    passed = failed = 0
    for t in tests:
        if ARGS.k and ARGS.k not in t.__name__:
            continue
        t0 = time.monotonic()
        try:
            t()
            passed += 1
            print("ok   %s (%.2fs)" % (t.__name__, time.monotonic() - t0), flush=True)
        except Exception:  # noqa: BLE001 - every failure is reported
            failed += 1
            print("FAIL %s" % t.__name__, flush=True)
            traceback.print_exc()
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)
