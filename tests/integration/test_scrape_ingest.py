"""test_scrape_ingest.py: what the scraper asks for and what it counts.

- scrape.compression: with the default (gzip) a target sees
  `Accept-Encoding: gzip` and answers gzip; with `identity` it sees
  `Accept-Encoding: identity` (never gzip) and answers the body as is; a
  target that gzips anyway is still inflated and billed.
- meterd checks the gzip trailer: a body whose CRC-32 or length in the
  trailer is wrong (larger or smaller than the real length), or that has
  bytes after the member, fails the scrape (reason transfer, the error names
  the check) and nothing of it is counted; so does an FHCRC header (zlib
  then checks everything itself), when its CRC-16 is wrong.  libdeflate
  inflates first; whatever it does not accept goes to zlib, which words
  the error, so these cover both paths.
- The counters stay exact with the parser's fast skip (samples meterd never
  bills are not decoded): each ExtProc fixture is scraped repeatedly;
  `meterd_scrape_samples` must equal the body's samples and
  `meterd_samples_dropped_total{reason}` that many bodies' worth as there
  were successful scrapes, compared with counts made here from the
  fixture's lines.
- Against keep-alive targets each target's connection is reused from
  scrape to scrape (CURLMOPT_MAXCONNECTS), also with more targets than the
  256 connections meterd used to allow (300 simulator targets: every one
  keeps its connection open between scrapes).
- A proxy in the environment (http_proxy, HTTPS_PROXY, all_proxy) is not
  used for scrapes: a scrape goes to the pod, as Prometheus does by default
  (proxy_from_environment: false).
Python 3 stdlib only."""
import gzip
import http.server
import json
import os
import re
import resource
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import simctl  # noqa: E402

FIXTURES = [
    ("extproc_newest_text.prom", "text/plain; version=0.0.4; charset=utf-8; escaping=underscores"),
    ("extproc_v04_text.prom", "text/plain; version=0.0.4; charset=utf-8; escaping=underscores"),
    ("extproc_utf8.txt", "text/plain; version=0.0.4; charset=utf-8; escaping=allow-utf-8"),
]


class Target:
    """Serves `body` (gzip'ed when asked, or always with force_gzip, then
    passed through mangle) to every request; records every request's
    headers."""

    def __init__(self, body, content_type, force_gzip=False, mangle=None, keep_alive=False):
        self.body = body
        self.requests = []
        self.peers = []         # the client's (address, port) of every request
        self.mu = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            # HTTP/1.1 keeps the connection open after a response
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def do_GET(self):  # noqa: N802 - http.server's name
                with outer.mu:
                    outer.requests.append(dict((k.lower(), v) for k, v in self.headers.items()))
                    outer.peers.append(self.client_address)
                data = outer.body
                ae = self.headers.get("Accept-Encoding", "")
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                if force_gzip or "gzip" in ae:
                    data = gzip.compress(data)
                    if mangle:
                        data = mangle(data)
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d/metrics" % self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def expected_counts(text):
    """Samples and the drop reasons decided by name, from the lines alone."""
    samples = bucket = other = count_not_input = 0
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        samples += 1
        m = re.match(r'\{"([^"]+)"', line) or re.match(r"([^{ ]+)", line)
        name = m.group(1)
        token = name.replace(".", "_").startswith("gen_ai_client_token_usage")
        if not token:
            other += 1
        elif name.endswith("_bucket"):
            bucket += 1
        elif name.endswith("_count"):
            tt = re.search(r'"?gen_ai[._]token[._]type"?="([^"]*)"', line)
            if tt is None or tt.group(1) != "input":
                count_not_input += 1
    return {"samples": samples, "histogram_bucket": bucket, "other_family": other,
            "count_not_input": count_not_input}


def scrape_once(fixture, ct, compression=None, force_gzip=False):
    path = os.path.join(harness.ARGS.source, "tests", "fixtures", "extproc", fixture)
    with open(path, "rb") as f:
        body = f.read()
    tgt = Target(body, ct, force_gzip)
    extra = "scrape:\n  interval: 1s\n  timeout: 1s\n"
    if compression:
        extra += "  compression: %s\n" % compression
    extra += "targets:\n  - url: %s\n" % tgt.url
    m = harness.Meterd(extra_yaml=extra)

    def ok_scrapes():
        t = json.loads(m.get("/api/v1/targets").text)["targets"][0]
        return t["scrapes"] - sum(t["failures"].values())

    try:
        m.start()
        harness.wait_until(lambda: ok_scrapes() >= 1, 30, "a successful scrape")
        # the drop counters add up over the successful scrapes (a slow one
        # may time out and count nothing): read them between two equal
        # counts of successful scrapes, so they belong to exactly `ok` bodies
        for _ in range(50):
            ok = ok_scrapes()
            got = {"samples": int(m.metric_sum("meterd_scrape_samples"))}
            for r in ("histogram_bucket", "other_family", "count_not_input"):
                got[r] = int(m.metric("meterd_samples_dropped_total", {"reason": r}) or 0)
            if ok_scrapes() == ok:
                break
        else:
            raise AssertionError("scrapes kept completing while the counters were read")
        for r in ("histogram_bucket", "other_family", "count_not_input"):
            assert got[r] % ok == 0, (r, got[r], ok)
            got[r] //= ok
        return tgt.requests, got, expected_counts(body.decode("utf-8")), m.log()
    finally:
        m.stop()
        m.cleanup()
        tgt.close()


def check(fixture, ct, compression, want_ae, force_gzip=False):
    reqs, got, want, log = scrape_once(fixture, ct, compression, force_gzip)
    ae = reqs[0].get("accept-encoding")
    assert ae == want_ae, "%s: Accept-Encoding %r, want %r" % (fixture, ae, want_ae)
    assert got == want, "%s (%s): counters %s, want %s\n%s" % (fixture, compression, got,
                                                               want, log[-2000:])


def test_gzip_default_asks_for_gzip():
    check(FIXTURES[0][0], FIXTURES[0][1], None, "gzip")


def test_identity_does_not_ask_for_gzip():
    for fx, ct in FIXTURES:
        check(fx, ct, "identity", "identity")


def test_gzip_explicit_every_fixture():
    for fx, ct in FIXTURES[1:]:
        check(fx, ct, "gzip", "gzip")


def test_identity_target_gzips_anyway():
    check(FIXTURES[0][0], FIXTURES[0][1], "identity", "identity", force_gzip=True)


def flip(pos):
    """A gzip member with one byte changed at pos (negative: from the end)."""
    def f(data):
        b = bytearray(data)
        b[pos] ^= 0x01
        return bytes(b)
    return f


def isize_minus_one(data):
    """The member with its trailer's ISIZE one less than the real length:
    libdeflate, given exactly ISIZE bytes of room, runs out of it."""
    n = int.from_bytes(data[-4:], "little")
    return data[:-4] + ((n - 1) & 0xffffffff).to_bytes(4, "little")


def trailing_isize(data):
    """The member followed by a copy of its ISIZE: the body's last 4 bytes
    still give the right length, so libdeflate inflates the member and
    only the count of bytes it consumed tells that more follow."""
    return data + data[-4:]


def with_fhcrc(bad):
    """The member with FLG.FHCRC set and a CRC-16 of the header inserted
    after the 10-byte header (wrong when bad)."""
    def f(data):
        import zlib
        head = bytearray(data[:10])
        head[3] |= 0x02
        crc16 = zlib.crc32(bytes(head)) & 0xffff
        if bad:
            crc16 ^= 0x5555
        return bytes(head) + crc16.to_bytes(2, "little") + data[10:]
    return f


def scrape_failing(mangle):
    """One target answering mangled gzip every time; returns (failures by
    reason, last_error, meterd_scrape_samples, dropped samples) after two
    scrapes."""
    path = os.path.join(harness.ARGS.source, "tests", "fixtures", "extproc", FIXTURES[0][0])
    with open(path, "rb") as f:
        body = f.read()
    tgt = Target(body, FIXTURES[0][1], force_gzip=True, mangle=mangle)
    m = harness.Meterd(extra_yaml="scrape:\n  interval: 1s\n  timeout: 1s\n"
                       "targets:\n  - url: %s\n" % tgt.url)
    try:
        m.start()
        harness.wait_until(lambda: len(tgt.requests) >= 2, 30, "two scrapes")
        harness.wait_until(lambda: (m.metric_sum("meterd_scrape_failures_total") or 0) >= 2,
                           30, "two failed scrapes")
        doc = json.loads(m.get("/api/v1/targets").text)
        t = doc["targets"][0]
        return (t["failures"], t["last_error"], m.metric_sum("meterd_scrape_samples"),
                m.metric_sum("meterd_samples_dropped_total"))
    finally:
        m.stop()
        m.cleanup()
        tgt.close()


def test_gzip_trailer_checked():
    # every scrape gets the mangled member: each fails, nothing is counted
    for what, mangle, err in (("CRC-32", flip(-8), "incorrect data check (CRC-32"),
                              ("ISIZE", flip(-2), "incorrect length check ("),
                              ("ISIZE - 1", isize_minus_one, "incorrect length check ("),
                              ("4 bytes after the member", trailing_isize,
                               "4 bytes after the end of the stream"),
                              ("header CRC-16", with_fhcrc(True), "header crc mismatch")):
        fails, last, samples, dropped = scrape_failing(mangle)
        assert fails.get("transfer", 0) >= 2 and sum(fails.values()) == fails["transfer"], \
            (what, fails, last)
        assert samples == 0 and dropped == 0, (what, samples, dropped)
        assert err in last, (what, last)


def test_fhcrc_header_accepted_when_right():
    """A correct FHCRC header goes through zlib's own checks and is billed."""
    path = os.path.join(harness.ARGS.source, "tests", "fixtures", "extproc", FIXTURES[0][0])
    with open(path, "rb") as f:
        body = f.read()
    tgt = Target(body, FIXTURES[0][1], force_gzip=True, mangle=with_fhcrc(False))
    m = harness.Meterd(extra_yaml="scrape:\n  interval: 1s\n  timeout: 1s\n"
                       "targets:\n  - url: %s\n" % tgt.url)
    try:
        m.start()
        harness.wait_until(lambda: (m.metric_sum("meterd_scrape_samples") or 0) > 0, 30,
                           "a successful scrape")
        assert int(m.metric_sum("meterd_scrape_samples")) == \
            expected_counts(body.decode("utf-8"))["samples"]
    finally:
        m.stop()
        m.cleanup()
        tgt.close()


def test_keep_alive_connections_reused():
    """Eight keep-alive targets, scraped one after another: each target's
    connection is reused from scrape to scrape (libcurl's default cache, 4 x
    the handles in flight, kept about 4 connections, so most scrapes
    opened a new one)."""
    path = os.path.join(harness.ARGS.source, "tests", "fixtures", "extproc", FIXTURES[0][0])
    with open(path, "rb") as f:
        body = f.read()
    tgts = [Target(body, FIXTURES[0][1], keep_alive=True) for _ in range(8)]
    m = harness.Meterd(extra_yaml="scrape:\n  interval: 1s\n  timeout: 1s\ntargets:\n" +
                       "".join("  - url: %s\n" % t.url for t in tgts))
    try:
        m.start()
        harness.wait_until(lambda: all(len(t.requests) >= 5 for t in tgts), 60,
                           "five scrapes of every target")
        for t in tgts:
            with t.mu:
                conns, reqs = len(set(t.peers)), len(t.peers)
            # one connection per target; one reconnect is tolerated
            assert conns <= 2, "%d connections for %d scrapes of %s" % (conns, reqs, t.url)
    finally:
        m.stop()
        m.cleanup()
        for t in tgts:
            t.close()


def established_to(pid, ports):
    """meterd's ESTABLISHED TCP connections to 127.0.0.1 ports in `ports`:
    its socket inodes (/proc/PID/fd) matched with /proc/net/tcp."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    # by inode: the kernel writes the file a chunk at a time from a walk of
    # its hash table, so while sockets open and close one read can list a
    # socket twice (tests/reliability/test_rel_http.py)
    held = set()
    with open("/proc/%d/net/tcp" % pid) as f:
        next(f)
        for line in f:
            col = line.split()
            rem_port = int(col[2].split(":")[1], 16)
            if col[3] == "01" and col[9] in inodes and rem_port in ports:
                held.add(col[9])
    return len(held)


def sim_meterd(n):
    """A simulator with n keep-alive targets and a meterd scraping all of
    them every 2 s (not started)."""
    sim = simctl.Sim(simctl.binary(harness.ARGS.build), targets=n).start()
    m = harness.Meterd(extra_yaml="scrape:\n  interval: 2s\n  timeout: 2s\ntargets:\n" +
                       "".join("  - url: %s\n" % u for u in sim.urls))
    return sim, m, set(sim.port(i) for i in range(n))


def min_scrapes(m):
    """the fewest scrapes of any of meterd's targets"""
    doc = json.loads(m.get("/api/v1/targets").text)
    return min(t["scrapes"] for t in doc["targets"])


def test_keep_alive_beyond_256_targets():
    """300 keep-alive simulator targets every 2 s: after three rounds
    meterd holds an open connection to every one of them (the bound is the
    open-file limit less a reserve, not 256, which made about every other
    scrape reconnect at 500 targets)."""
    n = 300
    sim, m, ports = sim_meterd(n)
    try:
        m.start()
        harness.wait_until(lambda: min_scrapes(m) >= 3, 90, "three scrapes of every target")
        held = established_to(m.proc.pid, ports)
        assert held >= n - 5, "%d connections held to %d targets" % (held, n)
    finally:
        m.stop()
        m.cleanup()
        sim.cleanup()


def test_connections_bounded_by_open_file_limit():
    """An open-file limit of 300 leaves meterd 300 - 256 = 44 connections
    for scrapes: 80 keep-alive simulator targets every 2 s are all scraped,
    and meterd never holds more than 44 connections to them.  Half of the
    bound goes to the targets in connection-cache groups (22 targets, one
    connection each), half to the multi handle's own cache for the rest;
    a group's cache is not counted by libcurl's total limit, so without
    that split meterd held 22 + 44."""
    n, bound = 80, 300 - 256
    sim, m, ports = sim_meterd(n)
    try:
        m.start(preexec=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300)))
        most = 0

        def rounds():
            nonlocal most
            most = max(most, established_to(m.proc.pid, ports))
            return min_scrapes(m)
        harness.wait_until(lambda: rounds() >= 4, 90, "four scrapes of every target")
        for _ in range(20):
            most = max(most, established_to(m.proc.pid, ports))
            time.sleep(0.1)
        doc = json.loads(m.get("/api/v1/targets").text)
        failed = [(t["url"], t["failures"]) for t in doc["targets"] if t["failures"]]
        assert not failed, failed
        assert most <= bound, "%d connections held, bound %d" % (most, bound)
        assert most >= bound // 2, "%d connections held: no reuse at all?" % most
    finally:
        m.stop()
        m.cleanup()
        sim.cleanup()


def test_environment_proxy_not_used():
    """http_proxy and friends pointing at a closed port: meterd still
    scrapes its target directly (libcurl would otherwise send every scrape to
    the proxy and fail it)."""
    import socket
    path = os.path.join(harness.ARGS.source, "tests", "fixtures", "extproc", FIXTURES[0][0])
    with open(path, "rb") as f:
        body = f.read()
    tgt = Target(body, FIXTURES[0][1], keep_alive=True)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = "http://127.0.0.1:%d" % s.getsockname()[1]   # bound, never listening
    env = {k: dead for k in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                             "all_proxy", "ALL_PROXY")}
    env.update({"no_proxy": "", "NO_PROXY": ""})
    m = harness.Meterd(extra_yaml="scrape:\n  interval: 300ms\n  timeout: 300ms\ntargets:\n"
                       "  - url: %s\n" % tgt.url)
    try:
        m.start(env=env)
        harness.wait_until(lambda: len(tgt.requests) >= 3, 20, "three scrapes at the target")
        harness.wait_until(lambda: m.metric("meterd_target_up", {"target": tgt.url}) == 1, 10,
                           "target up")
        assert not m.metric_sum("meterd_scrape_failures_total"), m.log()
    finally:
        m.stop()
        m.cleanup()
        tgt.close()
        s.close()


def test_named_host_across_reloads():
    """A target named by host name (localhost) is resolved through the
    target's own DNS cache (scrape.c, struct target.dns), scraped, and still
    scraped on the same connection after a reload that resets the handle's
    options (a new timeout), which attaches the cache again."""
    import signal
    import socket
    addrs = {a[4][0] for a in socket.getaddrinfo("localhost", 80, proto=socket.IPPROTO_TCP)}
    assert "127.0.0.1" in addrs, "localhost does not resolve to 127.0.0.1 here: %s" % addrs
    path = os.path.join(harness.ARGS.source, "tests", "fixtures", "extproc", FIXTURES[0][0])
    with open(path, "rb") as f:
        body = f.read()
    tgt = Target(body, FIXTURES[0][1], keep_alive=True)
    named = tgt.url.replace("127.0.0.1", "localhost")
    yaml = "scrape:\n  interval: 300ms\n  timeout: %s\ntargets:\n  - url: " + named + "\n"
    m = harness.Meterd(extra_yaml=yaml % "300ms")
    try:
        m.start()
        harness.wait_until(lambda: len(tgt.requests) >= 3, 20, "three scrapes at the target")
        m.write_config(yaml % "250ms")
        m.signal(signal.SIGHUP)
        harness.wait_until(lambda: "reload: configuration" in m.log(), 10, "the reload logged")
        n = len(tgt.requests)
        harness.wait_until(lambda: len(tgt.requests) >= n + 3, 20, "three scrapes after the reload")
        assert m.metric("meterd_target_up", {"target": named}) == 1, m.log()
        assert not m.metric_sum("meterd_scrape_failures_total"), m.log()
        with tgt.mu:
            conns, reqs = len(set(tgt.peers)), len(tgt.peers)
        assert conns <= 2, "%d connections for %d scrapes" % (conns, reqs)
    finally:
        m.stop()
        m.cleanup()
        tgt.close()


if __name__ == "__main__":
    harness.main([test_gzip_default_asks_for_gzip, test_identity_does_not_ask_for_gzip,
                  test_gzip_explicit_every_fixture, test_identity_target_gzips_anyway,
                  test_gzip_trailer_checked, test_fhcrc_header_accepted_when_right,
                  test_keep_alive_connections_reused, test_keep_alive_beyond_256_targets,
                  test_connections_bounded_by_open_file_limit,
                  test_environment_proxy_not_used,
                  test_named_host_across_reloads])
