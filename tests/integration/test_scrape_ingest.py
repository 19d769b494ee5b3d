"""test_scrape_ingest.py: what the scraper asks for and what it counts.

- scrape.compression: with the default (gzip) a target sees
  `Accept-Encoding: gzip` and answers gzip; with `identity` it sees
  `Accept-Encoding: identity` (never gzip) and answers the body as is; a
  target that gzips anyway is still inflated and billed.
- The counters stay exact with the parser's fast skip (samples meterd never
  bills are not decoded): one scrape of each ExtProc fixture, then the
  target answers 503, so `meterd_scrape_samples` and
  `meterd_samples_dropped_total{reason}` hold one body's worth, compared with
  counts made here from the fixture's lines.
Python 3 stdlib only."""
import gzip
import http.server
import os
import re
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

FIXTURES = [
    ("extproc_newest_text.prom", "text/plain; version=0.0.4; charset=utf-8; escaping=underscores"),
    ("extproc_v04_text.prom", "text/plain; version=0.0.4; charset=utf-8; escaping=underscores"),
    ("extproc_utf8.txt", "text/plain; version=0.0.4; charset=utf-8; escaping=allow-utf-8"),
]


class Target:
    """Serves `body` to the first request (gzip'ed when asked, or always
    with force_gzip), 503 afterwards; records every request's headers."""

    def __init__(self, body, content_type, force_gzip=False):
        self.body = body
        self.requests = []
        self.mu = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                with outer.mu:
                    first = not outer.requests
                    outer.requests.append(dict((k.lower(), v) for k, v in self.headers.items()))
                if not first:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = outer.body
                ae = self.headers.get("Accept-Encoding", "")
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                if force_gzip or "gzip" in ae:
                    data = gzip.compress(data)
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
    extra = "scrape:\n  interval: 1s\n  timeout: 900ms\n"
    if compression:
        extra += "  compression: %s\n" % compression
    extra += "targets:\n  - url: %s\n" % tgt.url
    m = harness.Meterd(extra_yaml=extra)
    try:
        m.start()
        # the first scrape succeeds, the second fails (503): one body counted
        harness.wait_until(lambda: len(tgt.requests) >= 2, 15, "two scrapes")
        harness.wait_until(lambda: (m.metric_sum("meterd_scrape_failures_total") or 0) >= 1,
                           10, "the failed second scrape")
        got = {"samples": int(m.metric_sum("meterd_scrape_samples"))}
        for r in ("histogram_bucket", "other_family", "count_not_input"):
            got[r] = int(m.metric("meterd_samples_dropped_total", {"reason": r}) or 0)
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


if __name__ == "__main__":
    harness.main([test_gzip_default_asks_for_gzip, test_identity_does_not_ask_for_gzip,
                  test_gzip_explicit_every_fixture, test_identity_target_gzips_anyway])
