"""test_sim_reset_rule.py: the ExtProc simulator resets a target (a simulated
sidecar restart) only after a scrape of its frozen counters that the client
provably received in full, so its ground truth never holds tokens that no
completed scrape could see (RELIABILITY 18: an hour's soak came out 0.6-1.7 %
short on a loaded machine).

MHD reports a response "completed" as soon as its last byte is in the socket
buffer, whether or not the client ever reads it: a scraper that timed out or
dropped the target already closed (or is closing) that connection.  Only the
next request on the same keep-alive connection proves the previous response
was read to its end (an HTTP/1.1 client cannot send it before).  So:

1. (simulator alone) a meterd-like client that sends requests and closes
   without reading: the target stays frozen, never resets, its truth keeps
   everything; a client that reads and sends the next request on the same
   connection: the reset happens, at that request.
2. (meterd) meterd is stopped (SIGSTOP) longer than its scrape timeout over
   and over while the simulator answers, so its transfers time out with the
   whole response already written; usage must still equal the truth exactly
   and the run must really have had resets and timeouts."""
import json
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import simctl  # noqa: E402
import test_usage_exact as tue  # noqa: E402
from harness import Meterd, wait_until  # noqa: E402


def request(port):
    return ("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: meterd/test\r\n"
            "Accept: text/plain\r\n\r\n" % port).encode()


def read_response(sock):
    """One HTTP/1.1 response with Content-Length, read to its end."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before the headers"
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    length = None
    for line in head.split(b"\r\n")[1:]:
        k, v = line.split(b":", 1)
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    assert length is not None, head
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the body"
        body += chunk
    assert len(body) == length, (len(body), length)
    return head, body.decode()


def exposed_tokens(text):
    samples, _ = simctl.parse_text(text)
    return sum(int(v) for name, _, v in samples if name == "gen_ai_client_token_usage_token_sum")


def target0(sim):
    return sim.truth()["targets"][0]


def truth_tokens(sim):
    return sum(r["tokens"] for r in sim.truth()["series"])


def test_unread_scrapes_never_reset():
    sim = simctl.Sim(simctl.binary(harness.ARGS.build), targets=1, tick_ms=20, seed=3,
                     args=["--reset-every", "1", "--reset-scrapes", "2"]).start()
    try:
        port = sim.port(0)
        time.sleep(1.3)                       # the reset is due
        # three scrapes written out in full but never read: the client
        # closes each connection with the response in its receive buffer
        for k in range(1, 4):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(request(port))
            # MHD reports it completed: the whole response is in the buffers
            wait_until(lambda: target0(sim)["delivered"] == k, 5, "response %d written out" % k)
            s.close()
        wait_until(lambda: target0(sim)["unconfirmed"] == 3, 5, "three unconfirmed deliveries")
        t = target0(sim)
        assert t["resets"] == 0, "a reset on scrapes nobody read: %s" % t
        assert t["frozen"] == 1 and t["confirmed"] == 0, t
        frozen_truth = truth_tokens(sim)
        # one keep-alive connection, each response read to its end: request
        # 2 confirms 1 (1 of 2), request 3 confirms 2, so the reset happens
        # before 3 is answered
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        seen = []
        try:
            for _ in range(3):
                s.sendall(request(port))
                _, body = read_response(s)
                seen.append(exposed_tokens(body))
            t = target0(sim)
            assert t["resets"] == 1 and t["confirmed"] == 2, t
            # the frozen counters, twice, equal to the truth (nothing was
            # counted while frozen); the third body is the restarted sidecar
            assert seen[0] == seen[1] == frozen_truth, (seen, frozen_truth)
            assert seen[2] < seen[1], seen
            # held: the clock records until the restart shows (every series
            # below its old value), then waits for a scraper to see it
            time.sleep(0.5)
            held = truth_tokens(sim)
            assert target0(sim)["held"] == 1, target0(sim)
            time.sleep(0.3)
            assert truth_tokens(sim) == held, "the clock ran on a restart nobody saw"
            assert held > frozen_truth, "nothing recorded after the restart"
            # a scrape that shows it, read (confirmed by the next request):
            # the hold ends and the clock runs again
            s.sendall(request(port))
            _, body = read_response(s)
            assert 0 < exposed_tokens(body) < seen[1], (exposed_tokens(body), seen)
            s.sendall(request(port))
            read_response(s)
        finally:
            s.close()
        t = target0(sim)
        assert t["held"] == 0 and t["unseeable"] == 0, t
        wait_until(lambda: truth_tokens(sim) > held, 5, "the clock running again")
    finally:
        sim.cleanup()


class HoldingProxy:
    """A TCP proxy per simulator target: one upstream connection per
    downstream one, bytes forwarded both ways, except that during a
    blackout the simulator's responses are read in full (so the simulator
    sees them completed) and thrown away (so meterd times out).  A
    downstream close closes the upstream connection."""

    def __init__(self, sim_port, blackout):
        self.sim_port = sim_port
        self.blackout = blackout
        self.dropped = 0
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while not self.closed:
            try:
                down, _ = self.lsock.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.sim_port), timeout=5)
            except OSError:
                down.close()
                continue
            up.settimeout(None)
            threading.Thread(target=self.pump, args=(down, up, False), daemon=True).start()
            threading.Thread(target=self.pump, args=(up, down, True), daemon=True).start()

    def pump(self, src, dst, from_sim):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_sim and self.blackout():
                    self.dropped += len(data)
                    continue
                dst.sendall(data)
        except OSError:
            pass
        for sk in (src, dst):
            try:
                sk.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sk.close()

    def url(self):
        return "http://127.0.0.1:%d/metrics" % self.port

    def close(self):
        self.closed = True
        self.lsock.close()


def test_exact_when_meterd_never_receives_a_written_scrape():
    n = 3
    sim = simctl.Sim(simctl.binary(harness.ARGS.build), targets=n, tick_ms=20, seed=5,
                     args=["--reset-every", "2", "--reset-scrapes", "1"]).start()
    t0 = time.monotonic()
    held = {"on": True}

    def blackout():
        # 0.9 s of every 2 s (a reset falls due every second), until the
        # final phase
        return held["on"] and (time.monotonic() - t0) % 2.0 >= 1.1

    proxies = [HoldingProxy(sim.port(i), blackout) for i in range(n)]
    namespaces = ["held-%d" % i for i in range(n)]
    targets = "targets:\n" + "".join("  - url: %s\n    namespace: %s\n" % (p.url(), ns)
                                     for p, ns in zip(proxies, namespaces))
    # first_scrape count: the simulator started before meterd
    m = Meterd(extra_yaml="scrape:\n  interval: 200ms\n  timeout: 150ms\n"
                          "ledger:\n  first_scrape: count\n" + targets)
    try:
        m.start()
        time.sleep(14)
        held["on"] = False
        truth, _ = tue.settle_and_compare(m, sim, namespaces, timeout=30)
        tl = truth["targets"]
        assert sum(t["resets"] for t in tl) >= 4, tl
        # the case itself happened: scrapes written out in full that meterd
        # never received (it timed out), some of them of frozen counters
        assert sum(p.dropped for p in proxies) > 0
        assert sum(t["unconfirmed"] for t in tl) >= 1, tl
        # every restart was shown to meterd before its series regrew
        assert all(t["unseeable"] == 0 for t in tl), tl
        assert m.metric_sum("meterd_scrape_failures_total", {"reason": "timeout"}) >= 1
    finally:
        m.cleanup()
        for p in proxies:
            p.close()
        sim.cleanup()


def test_exact_when_a_target_goes_away_right_after_its_restart():
    """The soak's loss (RELIABILITY 18): a target restarts and is dropped
    (a pod unlisted; here a reload) before meterd's next scrape, and comes
    back after its series regrew past their old values.  By value that is
    absence followed by growth, not a restart (DESIGN.md), so only the growth
    past the old values can be billed: the simulator must not let the
    restart go unseen, or its truth holds what no scraper can bill."""
    sim = simctl.Sim(simctl.binary(harness.ARGS.build), targets=2, tick_ms=20, seed=7,
                     args=["--reset-every", "3", "--reset-scrapes", "1"]).start()
    namespaces = ["stays", "leaves"]
    m = Meterd()
    scrape = ("scrape:\n  interval: 2s\n  timeout: 1s\n"
              "ledger:\n  first_scrape: count\n")
    both = scrape + tue.targets_yaml(sim, namespaces)
    only0 = scrape + "targets:\n  - url: %s\n    namespace: stays\n" % sim.url(0)
    m.write_config(both)
    try:
        m.start()
        # target 1's first reset: drop it from meterd at once, 2 s before
        # its next scrape would have shown the restart
        wait_until(lambda: sim.truth()["targets"][1]["resets"] >= 1, 20, "target 1 restarts",
                   interval=0.005)
        m.write_config(only0)
        m.signal(signal.SIGHUP)
        wait_until(lambda: len(json.loads(m.get("/api/v1/targets").body)["targets"]) == 1, 5,
                   "target 1 dropped")
        gone = sim.truth()["targets"][1]["meterd_scrapes"]
        time.sleep(9)             # three times its life before the restart
        assert sim.truth()["targets"][1]["meterd_scrapes"] == gone, "scraped while dropped"
        m.write_config(both)
        m.signal(signal.SIGHUP)
        truth, _ = tue.settle_and_compare(m, sim, namespaces, timeout=30)
        assert truth["targets"][1]["resets"] >= 1 and truth["targets"][1]["unseeable"] == 0, \
            truth["targets"]
        assert "too few for a restart" not in m.log()
    finally:
        m.cleanup()
        sim.cleanup()


def test_meterd_keeps_one_connection_per_target():
    """More targets than libcurl's default connection cache (4 per handle in
    the multi): every target's next scrape reuses its connection, which is
    also what lets the simulator confirm a scrape and restart a target."""
    n = 8
    sim = simctl.Sim(simctl.binary(harness.ARGS.build), targets=n, tick_ms=20, seed=2,
                     args=["--reset-every", "1"]).start()
    namespaces = ["ka-%d" % i for i in range(n)]
    m = Meterd(extra_yaml="scrape:\n  interval: 300ms\n  timeout: 250ms\n"
                          + tue.targets_yaml(sim, namespaces))
    try:
        m.start()
        wait_until(lambda: all(t["resets"] >= 2 for t in sim.truth()["targets"]), 30,
                   "two restarts of every target (each needs a reused connection)")
        tl = sim.truth()["targets"]
        # a scrape of frozen counters written out and never confirmed: its
        # connection closed, which only a failed scrape (a timeout on a
        # loaded machine) should do; without keep-alive nearly all were
        fails = m.metric_sum("meterd_scrape_failures_total")
        assert sum(t["unconfirmed"] for t in tl) <= fails + 2, (fails, tl)
        assert sum(t["meterd_scrapes"] for t in tl) >= 5 * n, tl
    finally:
        m.cleanup()
        sim.cleanup()


def billed_vote(before, after):
    """meterd's restart vote (ledger.h R2), computed here from two bodies:
    the billed series (token _sum and the input token _count of every
    operation but count_tokens) present in both with a value above 0
    before; returns (went down, in both)."""
    def billed(text):
        out = {}
        samples, _ = simctl.parse_text(text)
        for name, labels, v in samples:
            if labels.get("gen_ai_operation_name") == "count_tokens":
                continue
            if name == "gen_ai_client_token_usage_token_sum" or (
                    name == "gen_ai_client_token_usage_token_count" and
                    labels.get("gen_ai_token_type") == "input"):
                out[(name, tuple(sorted(labels.items())))] = v
        return out
    old, new = billed(before), billed(after)
    down = both = 0
    for k, v in new.items():
        if k in old and (old[k] > 0 or v < old[k]):
            both += 1
            down += v < old[k]
    return down, both


def test_a_visible_restart_shows_to_the_billed_vote():
    """The simulator holds a restarted target until a scrape shows the
    restart, and lets the clock run again once such a scrape was read: every
    scrape it counts as showing the restart must show it to meterd's vote,
    which only billed series take part in.  A count_tokens series that went
    down made a state "visible" that meterd could not see; a series born
    after the reset was then billed in full twice (test_usage_exact billed
    one request above its truth)."""
    n, seconds = 6, 10.0
    sim = simctl.Sim(simctl.binary(harness.ARGS.build), targets=n, tick_ms=10, seed=9,
                     args=["--reset-every", "1", "--reset-scrapes", "1", "--count-tokens",
                           "--new-series-every", "1", "--requests-per-tick", "1",
                           "--log-scrapes"]).start()
    bodies = [dict() for _ in range(n)]
    errors = []

    def client(i):
        port = sim.port(i)
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        k = 0
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                s.sendall(request(port))
                _, body = read_response(s)
                k += 1                       # the only client: the sim's n
                bodies[i][k] = body
                time.sleep(0.02)
        except Exception as e:              # noqa: BLE001 (reported below)
            errors.append("target %d: %r" % (i, e))
        finally:
            s.close()
    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        tl = sim.truth()["targets"]
        assert sim.stop() == 0
    finally:
        sim.cleanup()
    armed, shown = {}, []
    for line in sim.output().splitlines():
        if not line.startswith("sim-scrape "):
            continue
        f = dict(kv.split("=", 1) for kv in line.split()[1:])
        i, k = int(f["target"]), int(f["n"])
        if f["armed"] == "1":
            armed.setdefault(i, []).append(k)
        if f["post_reset"] == "1":
            shown.append((i, k))
    assert sum(t["resets"] for t in tl) >= 3 * n, tl
    assert len(shown) >= 3 * n, (len(shown), tl)
    bad = []
    for i, k in shown:
        # the frozen scrape that the reset followed: the last armed before
        frozen = max(a for a in armed[i] if a < k)
        down, both = billed_vote(bodies[i][frozen], bodies[i][k])
        if down == 0 or 2 * down < both:
            bad.append((i, frozen, k, down, both))
    assert not bad, "scrapes counted as showing a restart that meterd's vote does not " \
        "see (target, frozen n, n, down, in both): %s" % bad[:10]


if __name__ == "__main__":
    harness.main([test_unread_scrapes_never_reset,
                  test_exact_when_meterd_never_receives_a_written_scrape,
                  test_exact_when_a_target_goes_away_right_after_its_restart,
                  test_meterd_keeps_one_connection_per_target,
                  test_a_visible_restart_shows_to_the_billed_vote])
