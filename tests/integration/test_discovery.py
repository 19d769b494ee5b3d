"""test_discovery.py: Kubernetes pod discovery end to end: `meterd discover`
against a fake Kubernetes API server (http.server on 127.0.0.1) serving the
PodList fixtures of tests/fixtures/k8s/ in pages, checking the bearer token,
the namespace paths, limit and labelSelector, following continue tokens,
answering 410 for an expired token, rotating the token, speaking https with
a throwaway CA for the in-cluster settings.  Expected targets are written
out by hand from the fixtures (see make_fixtures.py)."""
import base64
import gzip
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

TOKEN = "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QifQ.c2VjcmV0LXBheWxvYWQ.sig-AAAA"
TOKEN2 = "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QifQ.cm90YXRlZC1wYXlsb2Fk.sig-BBBB"


def fixture(name):
    with open(os.path.join(harness.ARGS.source, "tests", "fixtures", "k8s", name)) as f:
        return json.load(f)


def all_pods():
    return fixture("podlist_mixed.json")["items"] + fixture("podlist_ipv6.json")["items"]


# The qualifying pods of the fixtures, by hand: (namespace, pod, url, container, port_name)
LEGACY = ("team-a", "envoy-legacy-gw-5b8f9c7d6-qh2vn", "http://10.244.2.31:1064/metrics",
          "ai-gateway-extproc", "aigw-metrics")
GW_A = ("team-a", "envoy-team-a-gw-7c9d5f6b8-4xkqp", "http://10.244.1.17:1064/metrics",
        "ai-gateway-extproc", "aigw-admin")
GW_B = ("team-b", "envoy-team-b-gw-66f7d8c9b5-lm4ns", "http://10.244.3.9:1064/metrics",
        "ai-gateway-extproc", "aigw-admin")
GW_C = ("team-c", "envoy-team-c-gw-5f6d7c8b9-v6qq2", "http://[fd00:10:244:1::1a]:1064/metrics",
        "ai-gateway-extproc", "aigw-admin")


def selector_matches(sel, labels):
    """Equality-based selectors (k=v, k==v, k!=v, k, !k), comma = and."""
    for term in filter(None, sel.split(",")):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k) != v:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class FakeKube:
    """A Kubernetes API server that lists pods, two per page."""

    def __init__(self, items, token=TOKEN, page_size=2, tls=None):
        self.items = items
        self.token = token
        self.page_size = page_size
        self.requests = []          # (path, raw query, parsed query, Authorization)
        self.expire_next_continue = False
        self.forbidden_namespaces = set()
        self.raw_body = None        # (status, bytes): answer this to every request
        self.on_request = None      # called with the request index before answering
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                fake.handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, scheme="http"):
        return "%s://127.0.0.1:%d" % (scheme, self.port)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def reply(self, h, code, obj):
        body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        if "gzip" in h.headers.get("Accept-Encoding", "") and len(body) > 512:
            body = gzip.compress(body)
            h.send_header("Content-Encoding", "gzip")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def handle(self, h):
        u = urllib.parse.urlsplit(h.path)
        q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        with self.lock:
            self.requests.append((u.path, u.query, q, h.headers.get("Authorization")))
            idx = len(self.requests) - 1
            expected_token = self.token
            expire = self.expire_next_continue and "continue" in q
            if expire:
                self.expire_next_continue = False
        if self.raw_body is not None:
            code, body = self.raw_body
            h.send_response(code)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            return
        if expected_token and h.headers.get("Authorization") != "Bearer " + expected_token:
            return self.reply(h, 401, status(401, "Unauthorized", "Unauthorized"))
        parts = u.path.strip("/").split("/")
        if parts == ["api", "v1", "pods"]:
            ns = None
        elif len(parts) == 5 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
            ns = parts[3]
        else:
            return self.reply(h, 404, status(404, "NotFound", "the server could not find the requested resource"))
        if ns in self.forbidden_namespaces:
            return self.reply(h, 403, fixture("status_forbidden.json"))
        if expire:
            return self.reply(h, 410, fixture("status_expired.json"))
        sel = q.get("labelSelector", [""])[0]
        pods = [p for p in self.items
                if (ns is None or p["metadata"]["namespace"] == ns) and
                selector_matches(sel, p["metadata"].get("labels") or {})]
        off = 0
        if "continue" in q:
            try:
                tok = json.loads(base64.urlsafe_b64decode(q["continue"][0]))
                off = tok["start"]
                assert tok["ns"] == ns and tok["sel"] == sel
            except Exception:  # noqa: BLE001
                return self.reply(h, 400, status(400, "BadRequest", "invalid continue token"))
        if self.on_request is not None:
            self.on_request(idx)
        page = pods[off:off + self.page_size]
        meta = {"resourceVersion": "482113"}
        if off + self.page_size < len(pods):
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                {"ns": ns, "sel": sel, "start": off + self.page_size}).encode()).decode()
            if not sel:
                meta["remainingItemCount"] = len(pods) - off - self.page_size
        self.reply(h, 200, {"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": page})


class Env:
    """A temp dir with a token file and a config."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="meterd-k8s-")
        self.token_file = os.path.join(self.dir, "token")
        self.write_token(TOKEN + "\n")
        self.config = os.path.join(self.dir, "meterd.yaml")

    def write_token(self, text):
        with open(self.token_file + ".tmp", "w") as f:
            f.write(text)
        os.replace(self.token_file + ".tmp", self.token_file)

    def write_config(self, kube_yaml):
        with open(self.config, "w") as f:
            f.write("cluster: it\nkubernetes:\n" + kube_yaml)

    def discover(self, *extra, env=None, timeout=60):
        e = dict(os.environ)
        for k in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT",
                  "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            e.pop(k, None)
        e.update(env or {})
        p = subprocess.run([harness.ARGS.meterd, "discover", "-c", self.config] + list(extra),
                           capture_output=True, timeout=timeout, env=e, cwd=self.dir)
        out, err = p.stdout.decode(), p.stderr.decode()
        for secret in (TOKEN, TOKEN2):
            assert secret not in out and secret not in err, "the token leaked into the output"
        return p.returncode, [json.loads(line) for line in out.splitlines()], err

    def cleanup(self):
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)


def targets(lines):
    return [(t["namespace"], t["pod"], t["url"], t["container"], t["port_name"]) for t in lines]


def test_all_namespaces_paged():
    kube, env = FakeKube(all_pods()), Env()
    try:
        env.write_config("  enabled: true\n  api_server: %s/\n  token_file: %s\n" %
                         (kube.url(), env.token_file))
        rc, lines, err = env.discover()
        assert rc == 0, err
        assert targets(lines) == [LEGACY, GW_A, GW_B, GW_C], targets(lines)
        b = lines[2]
        assert b["uid"] == "b41f7e22-5d6a-4b3c-9e8f-7a6b5c4d3e06" and b["node"] == "worker-3", b
        assert b["port"] == 1064
        assert b["labels"] == {
            "app.kubernetes.io/component": "proxy", "app.kubernetes.io/managed-by": "envoy-gateway",
            "app.kubernetes.io/name": "envoy", "gateway.envoyproxy.io/owning-gateway-name": "gw",
            "gateway.envoyproxy.io/owning-gateway-namespace": "team-b",
            "pod-template-hash": "66f7d8c9b5"}, b["labels"]
        assert list(b["labels"]) == sorted(b["labels"]), "labels are sorted by name"
        # 10 pods, 2 a page: 5 requests chained by continue tokens
        assert len(kube.requests) == 5, kube.requests
        for i, (path, raw, q, auth) in enumerate(kube.requests):
            assert path == "/api/v1/pods", path
            assert q["limit"] == ["500"], q
            assert "labelSelector" not in q
            assert auth == "Bearer " + TOKEN, "token sent as read, trailing newline trimmed"
            assert ("continue" in q) == (i > 0), (i, q)
        assert ("4 targets from 10 pods in 5 pages (skipped: not_running=2 deleting=1 no_ip=1 "
                "no_port=2 invalid=0 duplicate=0; labels_dropped=0)") in err, err
    finally:
        kube.close()
        env.cleanup()


def test_namespaces_and_selector():
    kube, env = FakeKube(all_pods()), Env()
    sel = "app.kubernetes.io/name=envoy,gateway.envoyproxy.io/owning-gateway-name!=oldinit"
    try:
        env.write_config("  api_server: %s\n  token_file: %s\n  namespaces: [team-b, team-c]\n"
                         "  label_selector: \"%s\"\n" % (kube.url(), env.token_file, sel))
        rc, lines, err = env.discover()
        assert rc == 0, err
        assert targets(lines) == [GW_B, GW_C], targets(lines)
        paths = [r[0] for r in kube.requests]
        assert paths == ["/api/v1/namespaces/team-b/pods", "/api/v1/namespaces/team-c/pods"], paths
        for path, raw, q, auth in kube.requests:
            assert q["labelSelector"] == [sel], q
            # every reserved character percent-encoded
            assert ("labelSelector=app.kubernetes.io%2Fname%3Denvoy%2Cgateway.envoyproxy.io"
                    "%2Fowning-gateway-name%21%3Doldinit") in raw, raw
        # the selector left redis, the job and the plain-init pod out server-side
        assert "2 targets from 2 pods in 2 pages" in err, err
        assert "kubernetes.enabled is false" in err, "the CLI notes a disabled section"
        # preference order from the config: aigw-metrics first
        env.write_config("  api_server: %s\n  token_file: %s\n  namespaces: [team-b]\n"
                         "  port_names: [aigw-metrics, aigw-admin]\n" % (kube.url(), env.token_file))
        rc, lines, err = env.discover()
        assert rc == 0, err
        assert [(t["pod"], t["port_name"]) for t in lines] == [
            ("envoy-team-b-gw-66f7d8c9b5-lm4ns", "aigw-metrics")], lines
    finally:
        kube.close()
        env.cleanup()


def test_api_errors_carry_the_status_message():
    kube, env = FakeKube(all_pods(), token=TOKEN2), Env()
    try:
        env.write_config("  api_server: %s\n  token_file: %s\n" % (kube.url(), env.token_file))
        rc, lines, err = env.discover()
        assert rc == 1 and lines == [], (rc, lines, err)
        assert "list pods in all namespaces (%s): HTTP 401: Unauthorized: Unauthorized" % kube.url() in err, err
        kube.token = TOKEN
        kube.forbidden_namespaces = {"team-b"}
        env.write_config("  api_server: %s\n  token_file: %s\n  namespaces: [team-a, team-b]\n" %
                         (kube.url(), env.token_file))
        rc, lines, err = env.discover()
        assert rc == 1 and lines == [], (rc, lines, err)
        assert ('list pods in namespace "team-b" (%s): HTTP 403: Forbidden: pods is forbidden: '
                'User "system:serviceaccount:meterd:meterd" cannot list' % kube.url()) in err, err
        # a 200 that is not JSON, and a 502 page from a proxy
        kube.raw_body = (200, b"<html>hello</html>")
        rc, lines, err = env.discover()
        assert rc == 1 and "malformed JSON at line 1" in err, err
        kube.raw_body = (502, b"<html>Bad Gateway</html>")
        rc, lines, err = env.discover()
        assert rc == 1 and "HTTP 502: <html>Bad Gateway</html>" in err, err
        # token file problems name the file, never the content
        env.write_token("\n")
        kube.raw_body = None
        rc, lines, err = env.discover()
        assert rc == 1 and 'token file "%s" is empty' % env.token_file in err, err
        env.write_token("two words\n")
        rc, lines, err = env.discover()
        assert rc == 1 and "holds a space" in err and "two" not in err, err
        os.unlink(env.token_file)
        rc, lines, err = env.discover()
        assert rc == 1 and "No such file or directory" in err, err
    finally:
        kube.close()
        env.cleanup()


def test_api_down():
    env = Env()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # closed again: nothing listens
    try:
        env.write_config("  api_server: http://127.0.0.1:%d\n  request_timeout: 2s\n" % port)
        rc, lines, err = env.discover()
        assert rc == 1 and lines == [], (rc, err)
        assert "list pods in all namespaces (http://127.0.0.1:%d)" % port in err, err
        assert "onnect" in err, err   # "Failed to connect ... Connection refused"
        # not in a cluster and no api_server
        env.write_config("  enabled: true\n")
        rc, lines, err = env.discover()
        assert rc == 1 and "not running in a cluster (KUBERNETES_SERVICE_HOST is unset)" in err, err
        rc, lines, err = env.discover(env={"KUBERNETES_SERVICE_HOST": "10.96.0.1",
                                           "KUBERNETES_SERVICE_PORT": "x"})
        assert rc == 1 and "KUBERNETES_SERVICE_PORT is not a port" in err, err
        # a bad configuration is reported like check-config does
        env.write_config("  namespaces: [Team_A]\n")
        rc, lines, err = env.discover()
        assert rc == 1 and "meterd.yaml:3:16: kubernetes.namespaces[0]" in err, err
    finally:
        env.cleanup()


def test_expired_continue_restarts_the_list():
    kube, env = FakeKube(all_pods()), Env()
    try:
        kube.expire_next_continue = True
        env.write_config("  api_server: %s\n  token_file: %s\n" % (kube.url(), env.token_file))
        rc, lines, err = env.discover()
        assert rc == 0, err
        assert targets(lines) == [LEGACY, GW_A, GW_B, GW_C], targets(lines)
        # page 1, page 2 -> 410, then pages 1..5 again
        assert len(kube.requests) == 7, [r[1] for r in kube.requests]
        assert "continue" not in kube.requests[2][2], "the list restarted without continue"
        assert "continue token expired (410); listing again" in err, err
        assert "4 targets from 10 pods in 5 pages" in err, "the aborted pages do not count twice"
        # a second 410 in the same list fails it
        kube.requests.clear()

        def expire_again(idx):
            if idx == 2:    # the restarted list's first page: expire its token too
                kube.expire_next_continue = True
        kube.expire_next_continue = True
        kube.on_request = expire_again
        rc, lines, err = env.discover()
        assert rc == 1 and "HTTP 410: Expired: The provided continue parameter is too old" in err, err
    finally:
        kube.close()
        env.cleanup()


def test_token_is_reread_on_every_list():
    kube, env = FakeKube(all_pods(), page_size=100), Env()
    try:
        def rotate(idx):
            # after answering the first list, the kubelet rotates the token
            if idx == 0:
                env.write_token(TOKEN2)
                kube.token = TOKEN2
        kube.on_request = rotate
        env.write_config("  api_server: %s\n  token_file: %s\n  refresh: 1s\n" %
                         (kube.url(), env.token_file))
        rc, lines, err = env.discover("--rounds", "2")
        assert rc == 0, err
        assert len(lines) == 8 and targets(lines[:4]) == targets(lines[4:]), lines
        assert [r[3] for r in kube.requests] == ["Bearer " + TOKEN, "Bearer " + TOKEN2], \
            [r[3] for r in kube.requests]
        assert "round 1: 4 targets" in err and "round 2: 4 targets" in err, err
    finally:
        kube.close()
        env.cleanup()


def make_cert(d):
    """A self-signed certificate for IP 127.0.0.1 (openssl CLI)."""
    key, crt = os.path.join(d, "tls.key"), os.path.join(d, "tls.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", crt, "-days", "1", "-subj", "/CN=kubernetes",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return crt, key


def test_in_cluster_https():
    env = Env()
    crt, key = make_cert(env.dir)
    kube = FakeKube(all_pods(), tls=(crt, key))
    incluster = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(kube.port)}
    try:
        # in cluster: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, the CA verified
        env.write_config("  enabled: true\n  token_file: %s\n  ca_file: %s\n  namespaces: [team-c]\n"
                         % (env.token_file, crt))
        rc, lines, err = env.discover(env=incluster)
        assert rc == 0, err
        assert targets(lines) == [GW_C], lines
        assert kube.requests[-1][0] == "/api/v1/namespaces/team-c/pods"
        # the service-account CA is used when ca_file is empty (absent here)
        env.write_config("  token_file: %s\n" % env.token_file)
        rc, lines, err = env.discover(env=incluster)
        assert rc == 1 and lines == [], err
        n = len(kube.requests)
        # out of cluster with the system store: the throwaway CA is not trusted
        env.write_config("  api_server: %s\n  token_file: %s\n" % (kube.url("https"), env.token_file))
        rc, lines, err = env.discover()
        assert rc == 1 and "certificate" in err.lower(), err
        assert len(kube.requests) == n, "no request (and no token) went to an unverified server"
        # insecure_skip_verify (tests only) connects, and says so
        env.write_config("  api_server: %s\n  token_file: %s\n  insecure_skip_verify: true\n"
                         % (kube.url("https"), env.token_file))
        rc, lines, err = env.discover()
        assert rc == 0, err
        assert targets(lines) == [LEGACY, GW_A, GW_B, GW_C]
        assert "insecure_skip_verify is on" in err, err
    finally:
        kube.close()
        env.cleanup()


def test_usage_lists_discover():
    p = subprocess.run([harness.ARGS.meterd, "--help"], capture_output=True)
    assert p.returncode == 0 and b"discover -c FILE" in p.stdout, p.stdout
    p = subprocess.run([harness.ARGS.meterd, "discover"], capture_output=True)
    assert p.returncode == 2 and b"-c FILE is required" in p.stderr, p.stderr
    p = subprocess.run([harness.ARGS.meterd, "discover", "-c", "x", "--rounds", "0"],
                       capture_output=True)
    assert p.returncode == 2 and b"--rounds" in p.stderr, p.stderr


if __name__ == "__main__":
    harness.main([test_all_namespaces_paged, test_namespaces_and_selector,
                  test_api_errors_carry_the_status_message, test_api_down,
                  test_expired_continue_restarts_the_list, test_token_is_reread_on_every_list,
                  test_in_cluster_https, test_usage_lists_discover])
