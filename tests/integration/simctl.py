"""simctl.py: start and stop the ExtProc simulator (<build>/extproc-sim) on
free loopback ports, pause/resume its clock, fetch its ground truth, scrape
its targets, and parse Prometheus text (classic and UTF-8 quoted names).

Python 3 stdlib only.  Typical use in an integration test:

    sim = simctl.Sim(simctl.binary(harness.ARGS.build), targets=2,
                     args=["--reset-every", "3"]).start()
    try:
        ... meterd scrapes sim.urls ...
        sim.pause()            # counters stop moving
        ... let meterd scrape once more ...
        truth = sim.truth()    # exact ground truth
    finally:
        sim.cleanup()
"""
import gzip
import http.client as httpclient
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Response, http  # noqa: E402,F401  (simctl.http is used by tests)

EAIG_TOKEN_BOUNDS = ["1", "4", "16", "64", "256", "1024", "4096", "16384", "65536",
                     "262144", "1.048576e+06", "4.194304e+06", "1.6777216e+07",
                     "6.7108864e+07", "+Inf"]
EAIG_DURATION_BOUNDS = ["0.01", "0.02", "0.04", "0.08", "0.16", "0.32", "0.64", "1.28",
                        "2.56", "5.12", "10.24", "20.48", "40.96", "81.92", "+Inf"]


def binary(build_dir):
    return os.path.join(build_dir, "extproc-sim")


def _port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port_range(n, lo=20000, hi=60000, tries=200):
    """A base port P with P..P+n-1 all free on 127.0.0.1 right now."""
    for _ in range(tries):
        base = random.randint(lo, hi - n)
        if all(_port_free(base + i) for i in range(n)):
            return base
    raise RuntimeError("no free range of %d ports" % n)


class Sim:
    """One extproc-sim process on free ports."""

    def __init__(self, binary_path, targets=1, args=(), tick_ms=None, seed=None):
        self.binary = binary_path
        self.n = targets
        self.args = list(args)
        if tick_ms is not None:
            self.args += ["--tick-ms", str(tick_ms)]
        if seed is not None:
            self.args += ["--seed", str(seed)]
        self.dir = tempfile.mkdtemp(prefix="extproc-sim-")
        self.log_path = os.path.join(self.dir, "sim.log")
        self.proc = None
        self.base_port = None
        self.control_port = None

    # -- lifecycle --
    def start(self, timeout=15):
        last = ""
        for _ in range(5):   # ports can be taken between the probe and the bind
            self.base_port = free_port_range(self.n + 1)
            self.control_port = self.base_port + self.n
            cmd = [self.binary, "--targets", str(self.n), "--base-port", str(self.base_port),
                   "--control-port", str(self.control_port)] + self.args
            self.log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    if http("GET", self.control_url + "/healthz", timeout=2).status == 200:
                        return self
                except OSError:
                    pass
                time.sleep(0.02)
            last = self.output()
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("extproc-sim did not become healthy:\n" + last)
            if "cannot listen" not in last:
                raise AssertionError("extproc-sim exited with %s:\n%s" % (
                    self.proc.returncode, last))
        raise AssertionError("extproc-sim could not bind:\n" + last)

    def stop(self, timeout=15):
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("extproc-sim did not stop within %ss" % timeout)

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def output(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # -- addresses --
    @property
    def control_url(self):
        return "http://127.0.0.1:%d" % self.control_port

    def port(self, i):
        return self.base_port + i

    def target(self, i):
        return "127.0.0.1:%d" % self.port(i)

    def url(self, i):
        return "http://127.0.0.1:%d/metrics" % self.port(i)

    @property
    def urls(self):
        return [self.url(i) for i in range(self.n)]

    # -- control --
    def pause(self):
        r = http("POST", self.control_url + "/pause", body=b"")
        assert r.status == 200, (r.status, r.text)
        return json.loads(r.body)

    def resume(self):
        r = http("POST", self.control_url + "/resume", body=b"")
        assert r.status == 200, (r.status, r.text)
        return json.loads(r.body)

    def truth(self):
        r = http("GET", self.control_url + "/truth")
        assert r.status == 200, (r.status, r.text)
        return json.loads(r.body)

    def scrape(self, i=0, ua="simctl/1", accept=None, gzip_ok=False, timeout=10,
               confirm=False):
        """GET /metrics of target i.  confirm: on a keep-alive connection,
        followed by a second request (GET /confirm, a 404 that is not a
        scrape) that tells the simulator this response was read to its end;
        only such scrapes count towards a --reset-every reset (and end the
        hold of a restarted target)."""
        h = {"User-Agent": ua}
        if accept:
            h["Accept"] = accept
        if gzip_ok:
            h["Accept-Encoding"] = "gzip"
        if confirm:
            c = httpclient.HTTPConnection("127.0.0.1", self.port(i), timeout=timeout)
            try:
                c.request("GET", "/metrics", headers=h)
                resp = c.getresponse()
                r = Response(resp.status, dict(resp.getheaders()), resp.read())
                c.request("GET", "/confirm", headers={"User-Agent": "simctl/confirm"})
                c.getresponse().read()
            finally:
                c.close()
        else:
            r = http("GET", self.url(i), headers=h, timeout=timeout)
        if r.headers.get("Content-Encoding") == "gzip":
            r.body = gzip.decompress(r.body)
        return r


# -- truth helpers --
def truth_key(row):
    """(target, operation, provider, model, department, token_type)"""
    return (row["target"], row["operation"], row["provider"], row["model"],
            row["department"], row["token_type"])


def truth_totals(truth, key_fn, billable_only=True):
    """{key_fn(row): [tokens, requests]} summed over truth rows."""
    out = {}
    for row in truth["series"]:
        if billable_only and (row["excluded"] or row["overflow"]):
            continue
        k = key_fn(row)
        cur = out.setdefault(k, [0, 0])
        cur[0] += row["tokens"]
        cur[1] += row["requests"]
    return out


# -- Prometheus text parser (test use: small, strict about what it accepts) --
def _parse_quoted(s, i):
    assert s[i] == '"', (s, i)
    i += 1
    out = []
    while s[i] != '"':
        if s[i] == "\\":
            nxt = s[i + 1]
            out.append({"n": "\n", "\\": "\\", '"': '"'}.get(nxt, "\\" + nxt))
            i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out), i + 1


def _parse_ident(s, i):
    j = i
    while j < len(s) and (s[j].isalnum() or s[j] in "_:"):
        j += 1
    assert j > i, "name expected at %d in %r" % (i, s)
    return s[i:j], j


def parse_sample(line):
    """'name{a="b"} v' or '{"name","a.b"="c"} v' -> (name, {labels}, float)."""
    i = 0
    name = None
    labels = {}
    if line[0] != "{":
        name, i = _parse_ident(line, 0)
    if i < len(line) and line[i] == "{":
        i += 1
        first = True
        while line[i] != "}":
            if not first:
                assert line[i] == ",", line
                i += 1
            first = False
            if line[i] == '"':
                key, i = _parse_quoted(line, i)
            else:
                key, i = _parse_ident(line, i)
            if i < len(line) and line[i] == "=":
                val, i = _parse_quoted(line, i + 1)
                assert key not in labels, "duplicate label %s in %r" % (key, line)
                labels[key] = val
            else:  # a quoted metric name inside the braces
                assert name is None, line
                name = key
        i += 1
    assert line[i] == " ", line
    return name, labels, float(line[i + 1:].split(" ")[0])


def parse_text(text):
    """[(name, labels, value)] and {family: (type, help)}."""
    samples, families = [], {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            rest = line[7:]
            if rest.startswith('"'):
                fam, j = _parse_quoted(rest, 0)
            else:
                fam, j = _parse_ident(rest, 0)
            cur = families.setdefault(fam, [None, None])
            cur[0 if line[2] == "T" else 1] = rest[j + 1:]
            continue
        if line.startswith("#"):
            continue
        samples.append(parse_sample(line))
    return samples, families


def histograms(samples, family):
    """{frozenset(labels without le): {"buckets": [(le, v)], "sum": v, "count": v}}"""
    out = {}
    for name, labels, v in samples:
        if not name.startswith(family + "_"):
            continue
        suffix = name[len(family) + 1:]
        if suffix not in ("bucket", "sum", "count"):
            continue
        ls = dict(labels)
        le = ls.pop("le", None)
        h = out.setdefault(frozenset(ls.items()), {"buckets": [], "sum": None, "count": None})
        if suffix == "bucket":
            h["buckets"].append((le, v))
        else:
            assert h[suffix] is None, "duplicate %s for %s" % (suffix, ls)
            h[suffix] = v
    return out


def check_histogram(key, h, bounds):
    """Raises unless h is a valid cumulative histogram with exactly these bounds."""
    les = [le for le, _ in h["buckets"]]
    assert les == bounds, "bounds %s != %s for %s" % (les, bounds, dict(key))
    vals = [v for _, v in h["buckets"]]
    assert all(a <= b for a, b in zip(vals, vals[1:])), "not cumulative: %s %s" % (vals, dict(key))
    assert h["count"] is not None and h["sum"] is not None, dict(key)
    assert vals[-1] == h["count"], "+Inf %s != _count %s for %s" % (vals[-1], h["count"], dict(key))
