"""test_rel_http.py: reliability scenario 16, the connection part
(RELIABILITY.md): 1,000 idle connections from one address are capped at
http.max_connections_per_ip while another address is still served, and a
client sending one byte per second is closed at http.connection_timeout.

The client side opens real TCP connections from 127.0.0.1 and, for the other
address, binds its socket to 127.0.0.2 (all of 127.0.0.0/8 is loopback on
Linux).  Which connections meterd holds is read from both ends: the client
sees the refused ones closed (EOF or reset), and /proc/net/tcp lists the
server side of the established ones."""
import os
import resource
import select
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rel  # noqa: E402
from rel import Meterd, wait_until, figure  # noqa: E402
import harness  # noqa: E402

IDLE = 1000             # idle connections opened from 127.0.0.1
PER_IP = 64             # http.max_connections_per_ip (the default)
OTHER_BOUND = 2.0       # seconds: 127.0.0.2's /healthz answer, worst of 5
TIMEOUT = 2.0           # http.connection_timeout for the slow-client part
TICK = 0.1              # meterd's deadline thread period (http.c)
SLACK = 1.0             # scheduling on a loaded 2-core machine


def raise_fd_limit(need):
    """The test holds `need` sockets at once; meterd inherits the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise AssertionError("ulimit -n hard limit %d < %d sockets this test needs"
                                 % (hard, need))
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def closed_by_peer(s):
    """True when the server has closed s (EOF or reset), False while open."""
    r, _, _ = select.select([s], [], [], 0)
    if not r:
        return False
    try:
        return s.recv(1, socket.MSG_PEEK) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def established_set(port, want_peer):
    """One read of /proc/net/tcp: the (local, remote) pairs of ESTABLISHED
    sockets on `port` from `want_peer` (little-endian hex on x86)."""
    pairs = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, st = fields[1], fields[2], fields[3]
            if st == "01" and int(local.split(":")[1], 16) == port and \
                    remote.split(":")[0] == want_peer:
                pairs.add((local, remote))
    return pairs


def server_established(port, peer="127.0.0.1"):
    """Server-side ESTABLISHED sockets of meterd's port with a peer address.
    The kernel writes /proc/net/tcp a chunk at a time from a walk of its hash
    table, so while other sockets open and close (the other tests of the
    suite) one read can list a socket twice or skip one: a read once counted
    65 of the 64 held here, and a churn of 50 connections beside 1,000 held
    ones gave duplicates in 48 of 79 reads.  So sockets are counted once by
    their address pair, and only when two reads in a row agree."""
    want_peer = socket.inet_aton(peer)[::-1].hex().upper()
    prev = established_set(port, want_peer)
    for _ in range(100):
        cur = established_set(port, want_peer)
        if cur == prev:
            return len(cur)
        prev = cur
    raise AssertionError("/proc/net/tcp never read the same twice in a row")


def get_healthz(port, source=None, timeout=10):
    """(status line, seconds) of GET /healthz over a fresh connection from
    `source`; status None when the server closed the connection unanswered."""
    t0 = time.monotonic()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if source:
            s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        data = b""
    finally:
        s.close()
    line = data.split(b"\r\n", 1)[0].decode("latin-1") if data else None
    return line, time.monotonic() - t0


def test_16_idle_connections_capped_other_address_served():
    raise_fd_limit(IDLE + 256)
    m = Meterd(extra_yaml="http:\n  max_connections: 256\n  max_connections_per_ip: %d\n"
                          "  connection_timeout: 60s\n" % PER_IP)
    m.start()
    socks = []
    try:
        # the other address must work at all before it can prove anything
        line, _ = get_healthz(m.port, "127.0.0.2")
        assert line == "HTTP/1.1 200 OK", line
        wait_until(lambda: server_established(m.port) == 0, 10, "harness connections gone")
        t0 = time.monotonic()
        for _ in range(IDLE):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(("127.0.0.1", m.port))
            socks.append(s)
        t_open = time.monotonic() - t0

        def refused():
            return sum(1 for s in socks if closed_by_peer(s))
        # meterd accepts and closes every connection past the cap
        wait_until(lambda: refused() >= IDLE - PER_IP, 20,
                   "%d of %d connections refused" % (IDLE - PER_IP, IDLE))
        time.sleep(0.5)     # none more is closed: the cap holds, not a slow drain
        n_refused = refused()
        held = server_established(m.port)
        assert n_refused == IDLE - PER_IP, (n_refused, IDLE - PER_IP)
        assert held == PER_IP, "meterd holds %d connections from 127.0.0.1, cap %d" % (
            held, PER_IP)
        # the capped address gets nothing more, the other one is served
        line_same, _ = get_healthz(m.port, "127.0.0.1")
        assert line_same is None, "a 65th connection from 127.0.0.1 was answered: %s" % line_same
        times = []
        for _ in range(5):
            line, dt = get_healthz(m.port, "127.0.0.2")
            assert line == "HTTP/1.1 200 OK", line
            times.append(dt)
        assert max(times) < OTHER_BOUND, times
        # the held slots are freed when the client goes away
        for s in socks:
            s.close()
        socks = []
        wait_until(lambda: get_healthz(m.port, "127.0.0.1")[0] == "HTTP/1.1 200 OK", 10,
                   "127.0.0.1 served again after its idle connections closed")
        figure(16, "%d idle connections from 127.0.0.1 opened in %.2fs: meterd held %d "
               "(http.max_connections_per_ip) and closed %d at once; a further 127.0.0.1 "
               "request got no answer, while 127.0.0.2 got 200 on /healthz in %.1f ms at "
               "worst of 5 (bound %.0f ms); 127.0.0.1 served again once its connections closed"
               % (IDLE, t_open, held, n_refused, max(times) * 1e3, OTHER_BOUND * 1e3))
        assert m.stop() == 0
    finally:
        for s in socks:
            s.close()
        m.cleanup()


def test_16_slow_client_closed_at_timeout():
    m = Meterd(extra_yaml="http:\n  connection_timeout: %gs\n" % TIMEOUT)
    m.start()
    try:
        cuts0 = m.metric("meterd_http_connection_deadline_cuts_total")
        assert cuts0 is not None
        req = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"     # 41 s at 1 B/s
        s = socket.create_connection(("127.0.0.1", m.port), timeout=10)
        t0 = time.monotonic()
        sent = 0
        closed_at = None
        try:
            while sent < len(req) and time.monotonic() - t0 < 4 * TIMEOUT:
                s.send(req[sent:sent + 1])
                sent += 1
                # one byte per second, watching for the server's close meanwhile
                r, _, _ = select.select([s], [], [], max(0.0, t0 + sent - time.monotonic()))
                if r:
                    if closed_by_peer(s):
                        closed_at = time.monotonic() - t0
                        break
                    raise AssertionError("answered before the request was whole: %r"
                                         % s.recv(200))
        except (BrokenPipeError, ConnectionResetError):
            closed_at = time.monotonic() - t0
        finally:
            s.close()
        assert closed_at is not None, "a 1 byte/s client still open after %.1fs (%d bytes " \
            "sent; connection_timeout %gs)" % (time.monotonic() - t0, sent, TIMEOUT)
        assert TIMEOUT - 0.05 <= closed_at <= TIMEOUT + TICK + SLACK, closed_at
        # an idle connection (nothing sent) goes at the same time
        s = socket.create_connection(("127.0.0.1", m.port), timeout=10)
        t1 = time.monotonic()
        r, _, _ = select.select([s], [], [], 4 * TIMEOUT)
        idle_at = time.monotonic() - t1
        assert r and closed_by_peer(s), "idle connection open after %.1fs" % idle_at
        s.close()
        assert TIMEOUT - 0.05 <= idle_at <= TIMEOUT + TICK + SLACK, idle_at
        cuts1 = m.metric("meterd_http_connection_deadline_cuts_total")
        assert cuts1 >= cuts0 + 1, (cuts0, cuts1)
        # a normal client on a fresh connection is unaffected
        line, _ = get_healthz(m.port)
        assert line == "HTTP/1.1 200 OK", line
        figure("16b", "connection_timeout %gs: a client sending 1 byte/s was closed after "
               "%.2fs (%d of %d request bytes sent); an idle connection after %.2fs; "
               "meterd_http_connection_deadline_cuts_total +%d"
               % (TIMEOUT, closed_at, sent, len(req), idle_at, cuts1 - cuts0))
        assert m.stop() == 0
    finally:
        m.cleanup()


if __name__ == "__main__":
    harness.main([
        test_16_idle_connections_capped_other_address_served,
        test_16_slow_client_closed_at_timeout,
    ])
