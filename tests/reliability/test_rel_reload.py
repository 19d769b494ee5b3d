"""test_rel_reload.py: a reload while a scrape is still connecting (found by
the soak, scenario 18).

libcurl reads a transfer's request-header list when it builds the request,
after the connection is up.  meterd used one header list for every target
and replaced it on every configuration sync (SIGHUP, and each discovery
refresh), so a transfer started before a sync and connected after it read
freed memory: SIGSEGV in curl_multi_perform after ~2 minutes of the soak
(at once under ASan).  Each target now owns its list and replaces it only
between its transfers.

Here the connection is held back on purpose: the target's listen backlog
(0) is filled by one connection the test never accepts, so meterd's SYN is
dropped and retransmitted a second later.  Meanwhile meterd reloads three
times with a different scrape.accept.  Then the test starts accepting:
the request that was connecting must carry the Accept header of the
configuration it was started under, byte for byte (read from freed memory
it would be garbage, or an ASan report), later requests the new one, and
meterd must still be running."""
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rel import Meterd, figure, wait_until  # noqa: E402
import harness  # noqa: E402
from faketarget import series_body  # noqa: E402

ACCEPT_A = "text/plain;version=0.0.4;q=0.9,*/*;q=0.1"
ACCEPT_B = "text/plain;version=0.0.4;q=0.8,*/*;q=0.2"


class Backlogged:
    """A target whose accept queue is full until release()."""

    def __init__(self):
        self.srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(0)
        self.port = self.srv.getsockname()[1]
        # one finished handshake fills a backlog of 0: further SYNs are dropped
        self.filler = socket.create_connection(("127.0.0.1", self.port))
        self.requests = []
        self.lock = threading.Lock()
        self.body = series_body({"gpt-4o": 100})

    @property
    def url(self):
        return "http://127.0.0.1:%d/metrics" % self.port

    def release(self):
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(c,), daemon=True).start()

    def _answer(self, c):
        try:
            c.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = c.recv(4096)
                if not chunk:
                    return          # the filler: closed by the test
                data += chunk
            with self.lock:
                self.requests.append(data)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                      b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(self.body)
                      + self.body)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.filler.close()
        self.srv.close()


def syn_sent_to(port):
    """True while some socket is in SYN_SENT towards 127.0.0.1:port."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[3] == "02" and fields[2] == "0100007F:%04X" % port:
                return True
    return False


def accept_of(req):
    for line in req.split(b"\r\n"):
        if line.lower().startswith(b"accept:"):
            return line[7:].strip().decode("latin-1")
    return None


def config(m, t, accept):
    m.write_config("scrape:\n  interval: 5s\n  timeout: 4s\n  accept: \"%s\"\n"
                   "targets:\n  - url: %s\n    namespace: a\n" % (accept, t.url))


def test_18b_reload_while_connecting():
    t = Backlogged()
    m = Meterd()
    config(m, t, ACCEPT_A)
    try:
        m.start()
        # the first scrape is connecting (its SYN dropped); reload under it
        wait_until(lambda: syn_sent_to(t.port), 10, "meterd's SYN waiting", interval=0.01)
        for i in range(3):
            config(m, t, ACCEPT_B if i % 2 == 0 else ACCEPT_A)
            m.signal(signal.SIGHUP)
            time.sleep(0.1)
        config(m, t, ACCEPT_B)
        m.signal(signal.SIGHUP)
        wait_until(lambda: m.log().count("reload: configuration") >= 4, 10, "four reloads")
        t.release()
        wait_until(lambda: len(t.requests) >= 3, 30, "three requests served")
        assert m.proc.poll() is None, "meterd died:\n" + m.log()[-3000:]
        accepts = [accept_of(r) for r in t.requests]
        for r in t.requests:
            assert b"\r\nAccept-Encoding: gzip\r\n" in r, r
        # the first request was started under ACCEPT_A and kept its headers;
        # every later one has the configuration of its own start
        assert accepts[0] == ACCEPT_A, accepts
        assert all(a == ACCEPT_B for a in accepts[1:]), accepts
        figure("18b", "4 reloads (scrape.accept changed) while the first scrape waited for "
                      "its SYN retransmit: that request carried the Accept it was started "
                      "with, the next %d the new one, meterd kept running" % (len(accepts) - 1))
        assert m.stop() == 0
    except BaseException:
        print("meterd exit status %s; log tail:\n%s" % (
            m.proc.poll() if m.proc else None, m.log()[-4000:]), flush=True)
        raise
    finally:
        m.cleanup()
        t.close()


if __name__ == "__main__":
    harness.main([test_18b_reload_while_connecting])
