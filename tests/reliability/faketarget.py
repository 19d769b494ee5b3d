"""faketarget.py: a scrape target on 127.0.0.1 that serves exact bytes.

The reliability tests need bodies no real exporter sends on purpose: a
malformed last line, a body cut before its Content-Length, a chunked body
without its last chunk, a gzip stream cut short, a gzip bomb, one byte per
second.  Each scrape takes the next queued response; when the queue is
empty the default response is served again (so "scrape N serves body N" is
`queue([...])`).  Python 3 stdlib only.
"""
import collections
import gzip
import select
import socket
import struct
import threading
import time
import zlib


def series_body(values, ts_ms=None, type_line=True):
    """Exposition text of gen_ai token usage: one _sum per (model, value)
    with a _count of 1; values is {model: tokens}."""
    out = []
    if type_line:
        out.append("# TYPE gen_ai_client_token_usage_token histogram")
    ts = "" if ts_ms is None else " %d" % ts_ms
    for model, v in values.items():
        lab = ('{gen_ai_operation_name="chat",gen_ai_provider_name="openai",'
               'gen_ai_request_model="%s",gen_ai_token_type="input"}' % model)
        out.append("gen_ai_client_token_usage_token_sum%s %s%s" % (lab, v, ts))
        out.append("gen_ai_client_token_usage_token_count%s 1%s" % (lab, ts))
    return ("\n".join(out) + "\n").encode()


class Resp:
    """One scripted answer.  kind: ok | gzip | short_cl | chunked_nolast |
    gzip_cut | gzip_bomb | slow | status | close."""

    def __init__(self, kind, body=b"", **kw):
        self.kind = kind
        self.body = body
        self.kw = kw


def ok(body):
    return Resp("ok", body)


class FakeTarget:
    def __init__(self, default=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.mu = threading.Lock()
        self.default = default or ok(b"")
        self.script = collections.deque()
        self.served = 0          # responses begun
        self.finished = 0        # responses written to the end (or cut on purpose)
        self.starts = []         # monotonic time of each request
        self.cut_after = []      # slow responses: seconds until the client hung up
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d/metrics" % self.port

    def set_default(self, resp):
        with self.mu:
            self.default = resp

    def queue(self, resps):
        with self.mu:
            self.script.extend(resps)

    def pending(self):
        with self.mu:
            return len(self.script)

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(30)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = c.recv(4096)
                if not chunk:
                    return
                data += chunk
            with self.mu:
                r = self.script.popleft() if self.script else self.default
                self.served += 1
                self.starts.append(time.monotonic())
            try:
                self._answer(c, r)
            except OSError:
                pass
            with self.mu:
                self.finished += 1
        finally:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    @staticmethod
    def _head(status, headers):
        h = "HTTP/1.1 %s\r\nContent-Type: text/plain; version=0.0.4\r\nConnection: close\r\n" % status
        for k, v in headers:
            h += "%s: %s\r\n" % (k, v)
        return (h + "\r\n").encode()

    def _answer(self, c, r):
        k = r.kind
        if k == "ok":
            c.sendall(self._head("200 OK", [("Content-Length", len(r.body))]) + r.body)
        elif k == "gzip":
            z = gzip.compress(r.body)
            c.sendall(self._head("200 OK", [("Content-Length", len(z)),
                                             ("Content-Encoding", "gzip")]) + z)
        elif k == "short_cl":
            # promises the whole body, sends all but the last bytes, closes
            cut = r.kw.get("cut", 10)
            c.sendall(self._head("200 OK", [("Content-Length", len(r.body))]) + r.body[:-cut])
        elif k == "chunked_nolast":
            out = self._head("200 OK", [("Transfer-Encoding", "chunked")])
            for i in range(0, len(r.body), 1000):
                part = r.body[i:i + 1000]
                out += b"%x\r\n" % len(part) + part + b"\r\n"
            c.sendall(out)               # no "0\r\n\r\n": the body never ends
        elif k == "gzip_cut":
            z = gzip.compress(r.body)
            z = z[:len(z) // 2]
            c.sendall(self._head("200 OK", [("Content-Length", len(z)),
                                             ("Content-Encoding", "gzip")]) + z)
        elif k == "gzip_cut_line":
            # the stream is cut right after a sync flush that ends a line:
            # what arrives decompresses to whole lines, but the gzip member
            # has no end (no final block, no CRC/length trailer)
            co = zlib.compressobj(6, zlib.DEFLATED, 31)
            half = r.body.rfind(b"\n", 0, len(r.body) // 2) + 1
            z = co.compress(r.body[:half]) + co.flush(zlib.Z_SYNC_FLUSH)
            c.sendall(self._head("200 OK", [("Content-Length", len(z)),
                                             ("Content-Encoding", "gzip")]) + z)
        elif k == "gzip_bomb":
            z = r.kw["blob"]
            c.sendall(self._head("200 OK", [("Content-Length", len(z)),
                                             ("Content-Encoding", "gzip")]) + z)
        elif k == "slow":
            c.sendall(self._head("200 OK", [("Content-Length", len(r.body))]))
            # one byte per delay; the time the scraper hangs up is recorded
            t0 = time.monotonic()
            for i in range(len(r.body)):
                if self.stopping:
                    return
                c.sendall(r.body[i:i + 1])
                rd, _, _ = select.select([c], [], [], r.kw.get("delay", 1.0))
                if rd and not c.recv(1):
                    with self.mu:
                        self.cut_after.append(time.monotonic() - t0)
                    return
        elif k == "status":
            body = b"unavailable\n"
            c.sendall(self._head("%d X" % r.kw.get("code", 503),
                                 [("Content-Length", len(body))]) + body)
        elif k == "close":
            return
        else:
            raise ValueError(k)

    def close(self):
        self.stopping = True
        try:
            self.sock.close()
        except OSError:
            pass


def gzip_bomb(expanded, block=1 << 20):
    """A gzip member of about expanded/1000 bytes expanding to `expanded`
    zero bytes: one deflate block of `block` zeros ended by a full flush
    (which resets the compressor, so every later block compresses to the
    same bytes) repeated, then the final block and the gzip trailer."""
    z = bytes(block)
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    one = co.compress(z) + co.flush(zlib.Z_FULL_FLUSH)
    n = expanded // block
    fin = zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    crc = 0
    for _ in range(n):
        crc = zlib.crc32(z, crc)
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + one * n + fin +
            struct.pack("<II", crc, (n * block) & 0xffffffff))
