"""test_extproc_sim.py: the ExtProc simulator (tools/extproc-sim) against its
own promises: EAIG-shaped, valid histograms; /metrics sums equal /truth when
paused; a due reset happens only after a meterd/ scrape the client provably
read to its end (its next request on the same connection) and loses nothing
from truth; a restart is held until a scrape showing it was read; other
User-Agents never reset; faults on schedule
and never reset; v0.5 naming, UTF-8 names, gzip; new series; determinism;
500 targets; clean SIGTERM with a hung scrape in flight."""
import gzip
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import simctl  # noqa: E402
from harness import wait_until  # noqa: E402
from simctl import (EAIG_DURATION_BOUNDS, EAIG_TOKEN_BOUNDS, check_histogram,  # noqa: E402
                    histograms, parse_text)

V04_TOK = "gen_ai_client_token_usage_token"
V05_TOK = "gen_ai_client_token_usage"
DUR = "gen_ai_server_request_duration_seconds"
CLASSIC_CT = "text/plain; version=0.0.4; charset=utf-8; escaping=underscores"
UTF8_CT = "text/plain; version=0.0.4; charset=utf-8; escaping=allow-utf-8"
SCOPE = {"otel_scope_name": "envoyproxy/ai-gateway", "otel_scope_schema_url": "",
         "otel_scope_version": ""}


def new_sim(targets=1, args=(), tick_ms=20):
    return simctl.Sim(simctl.binary(harness.ARGS.build), targets=targets, args=args,
                      tick_ms=tick_ms)


def token_view(body, family=V04_TOK, dept_label="department", tt_label="gen_ai_token_type",
               prefix="gen_ai_"):
    """{(operation, provider, request model, department, token type): (sum, count)} of
    one scrape, after checking every histogram in it."""
    samples, families = parse_text(body)
    toks = histograms(samples, family)
    for k, h in toks.items():
        check_histogram(k, h, EAIG_TOKEN_BOUNDS)
    for k, h in histograms(samples, DUR if prefix == "gen_ai_" else
                           "gen_ai.server.request.duration_seconds").items():
        check_histogram(k, h, EAIG_DURATION_BOUNDS)
    out = {}
    for k, h in toks.items():
        ls = dict(k)
        if ls.get("otel_metric_overflow", ls.get("otel.metric.overflow")) == "true":
            key = ("", "", "", "", "")
        else:
            key = (ls[prefix + "operation" + ("_" if prefix == "gen_ai_" else ".") + "name"],
                   ls[prefix + "provider" + ("_" if prefix == "gen_ai_" else ".") + "name"],
                   ls[prefix + "request" + ("_" if prefix == "gen_ai_" else ".") + "model"],
                   ls.get(dept_label, ""), ls[tt_label])
        assert key not in out, "duplicate series %s" % (key,)
        out[key] = (int(h["sum"]), int(h["count"]))
        assert h["sum"] == int(h["sum"]), "token _sum not integral: %s" % h["sum"]
    return out, families


def truth_view(truth, target):
    out = {}
    for r in truth["series"]:
        if r["target"] != target:
            continue
        key = (r["operation"], r["provider"], r["model"], r["department"], r["token_type"])
        assert key not in out, key
        out[key] = (r["tokens"], r["requests"])
    return out


def test_metrics_equal_truth_when_paused():
    sim = new_sim(targets=2, args=["--count-tokens", "--overflow"]).start()
    try:
        wait_until(lambda: sim.truth()["ticks"] >= 15, 10, "15 ticks")
        sim.pause()
        t0 = sim.truth()
        time.sleep(0.1)
        t1 = sim.truth()
        assert t0 == t1, "truth moved while paused"
        for i in range(2):
            r = sim.scrape(i)
            assert r.status == 200 and r.headers["Content-Type"] == CLASSIC_CT, r.headers
            got, families = token_view(r.text)
            want = truth_view(t1, sim.target(i))
            assert got == want, "target %d\n got %s\nwant %s" % (i, got, want)
            assert families[V04_TOK] == ["histogram", "Number of tokens processed."], families
            assert families["target_info"][0] == "gauge"
            assert 'target_info{service_name="unknown_service:app",telemetry_sdk_language="go",' \
                   'telemetry_sdk_name="opentelemetry",telemetry_sdk_version="1.38.0"} 1\n' in r.text
            # label shapes of EAIG v0.4
            samples, _ = parse_text(r.text)
            for name, labels, _ in samples:
                if name.startswith(V04_TOK) and "otel_metric_overflow" not in labels:
                    for k, v in SCOPE.items():
                        assert labels[k] == v, labels
                    assert labels["gen_ai_token_type"] in ("input", "cached_input", "output"), labels
            # promtool (Prometheus 2.42) accepts the exposition
            p = subprocess.run(["promtool", "check", "metrics"], input=r.body, capture_output=True)
            assert p.returncode == 0, p.stdout + p.stderr
        # truth marks what a biller must exclude, and its totals add up
        rows = t1["series"]
        assert any(r["excluded"] and r["operation"] == "count_tokens" for r in rows)
        assert any(r["overflow"] for r in rows)
        assert not any(r["excluded"] and r["operation"] != "count_tokens" for r in rows)
        assert t1["totals"]["tokens"] == sum(r["tokens"] for r in rows)
        # requests: the input series' _count (one sample per type per request), plus
        # the overflow series (it has no token type)
        assert t1["totals"]["requests"] == sum(r["requests"] for r in rows
                                               if r["token_type"] == "input" or r["overflow"])
        assert t1["billable"]["tokens"] == sum(r["tokens"] for r in rows
                                               if not r["excluded"] and not r["overflow"])
        # departments eng/finance/sales and series without the label
        depts = {r["department"] for r in rows if r["has_department"]}
        assert depts == {"eng", "finance", "sales"}, depts
        assert any(not r["has_department"] for r in rows)
        t2 = sim.truth()
        assert t2["resets"] == 0 and t2["scrapes"] == 2, (t2["resets"], t2["scrapes"])
        # resume: counters move again
        sim.resume()
        wait_until(lambda: sim.truth()["totals"]["tokens"] > t1["totals"]["tokens"], 10,
                   "tokens after resume")
        assert sim.stop() == 0, sim.output()
    finally:
        sim.cleanup()


def test_reset_only_after_received_meterd_scrape():
    sim = new_sim(args=["--reset-every", "1"]).start()
    try:
        wait_until(lambda: sim.truth()["ticks"] >= 10, 10, "ticks")
        time.sleep(1.1)     # the reset is due now
        # other User-Agents never reset, however often they scrape
        prev = None
        for ua in ("curl/8.0", "Prometheus/2.42.0", "meterdx", "Meterd/1.0", "xmeterd/1"):
            r = sim.scrape(0, ua=ua, confirm=True)
            assert r.status == 200
            cur, _ = token_view(r.text)
            if prev is not None:
                for k, (s, c) in prev.items():
                    assert cur[k][0] >= s and cur[k][1] >= c, (k, prev[k], cur[k])
            prev = cur
        assert sim.truth()["resets"] == 0
        # paused: the meterd scrape delivers exactly truth; written out on a
        # connection that then closes, nobody knows it was read: no reset
        sim.pause()
        before = sim.truth()
        r = sim.scrape(0, ua="meterd/0.1.0")
        delivered, _ = token_view(r.text)
        assert delivered == truth_view(before, sim.target(0)), "delivered != truth"
        wait_until(lambda: sim.truth()["targets"][0]["unconfirmed"] == 1, 5, "unconfirmed")
        assert sim.truth()["resets"] == 0 and sim.truth()["targets"][0]["frozen"]
        # read, and the next request on the connection says so: the restart
        r = sim.scrape(0, ua="meterd/0.1.0", confirm=True)
        assert token_view(r.text)[0] == delivered
        wait_until(lambda: sim.truth()["resets"] == 1, 5, "the reset")
        after = sim.truth()
        assert truth_view(after, sim.target(0)) == truth_view(before, sim.target(0)), \
            "truth changed at the reset"
        r = sim.scrape(0, ua="curl/8")
        empty, _ = token_view(r.text)
        assert empty == {}, "series survived the restart: %s" % empty
        assert DUR not in r.text, "duration series survived the restart"
        assert "target_info{" in r.text
        # the clock runs on: what is exposed now + what was delivered == truth
        sim.resume()
        wait_until(lambda: sim.truth()["ticks"] >= after["ticks"] + 10, 10, "ticks")
        sim.pause()
        t2 = sim.truth()
        now, _ = token_view(sim.scrape(0, ua="curl/8").text)
        want = truth_view(t2, sim.target(0))
        for k, (tok, req) in want.items():
            d = delivered.get(k, (0, 0))
            n = now.get(k, (0, 0))
            assert (d[0] + n[0], d[1] + n[1]) == (tok, req), (k, d, n, tok, req)
        assert t2["resets"] == 1
        assert t2["targets"][0]["meterd_scrapes"] == 2
        # the clock recorded until the restart showed (its series mostly
        # below their values at the restart), then held the target
        assert t2["targets"][0]["held"], t2["targets"][0]
        assert now, "nothing recorded after the restart"
        assert sum(r for _, r in now.values()) < sum(r for _, r in delivered.values()), \
            (now, delivered)
    finally:
        sim.cleanup()


def test_reset_while_ticking_loses_nothing():
    """The clock keeps running: a meterd scrape freezes the target until it
    was received, so the counters at the reset equal the received body."""
    sim = new_sim(args=["--reset-every", "1", "--requests-per-tick", "20"], tick_ms=5).start()
    try:
        delivered_total = {}
        resets = 0
        deadline = time.monotonic() + 6
        while resets < 3 and time.monotonic() < deadline:
            r = sim.scrape(0, ua="meterd/1", confirm=True)
            body, _ = token_view(r.text)
            # an armed scrape keeps the target frozen until it was received
            t = wait_until(lambda: (lambda t: None if t["targets"][0]["frozen"] else t)(
                sim.truth()), 5, "delivery settled")
            if t["resets"] > resets:        # this scrape was the last before a restart
                assert t["resets"] == resets + 1
                resets = t["resets"]
                for k, v in body.items():
                    d = delivered_total.setdefault(k, [0, 0])
                    d[0] += v[0]
                    d[1] += v[1]
            time.sleep(0.15)
        assert resets >= 2, "only %d resets in 6s" % resets
        sim.pause()
        t = sim.truth()
        now, _ = token_view(sim.scrape(0, ua="curl/1").text)
        for k, (tok, req) in truth_view(t, sim.target(0)).items():
            d = delivered_total.get(k, [0, 0])
            n = now.get(k, (0, 0))
            assert (d[0] + n[0], d[1] + n[1]) == (tok, req), (k, d, n, tok, req)
    finally:
        sim.cleanup()


def test_custom_reset_ua_prefix_and_reset_scrapes():
    sim = new_sim(args=["--reset-every", "1", "--reset-ua-prefix", "probe/",
                        "--reset-scrapes", "2"]).start()
    try:
        time.sleep(1.1)
        sim.pause()
        sim.scrape(0, ua="meterd/1", confirm=True)
        assert sim.truth()["resets"] == 0, "meterd/ reset despite --reset-ua-prefix probe/"
        sim.scrape(0, ua="probe/1", confirm=True)
        time.sleep(0.2)
        t = sim.truth()
        assert t["resets"] == 0 and t["targets"][0]["frozen"], t["targets"]
        sim.scrape(0, ua="probe/1", confirm=True)
        wait_until(lambda: sim.truth()["resets"] == 1, 5, "reset after the second probe scrape")
    finally:
        sim.cleanup()


def test_faults_on_schedule_and_never_reset():
    sim = new_sim(args=["--timeout-every", "3", "--timeout-ms", "200", "--error-every", "4",
                        "--reset-every", "1"]).start()
    try:
        time.sleep(1.1)     # reset due: only a successful meterd scrape may do it
        got = []
        for n in range(1, 13):
            resets_before = sim.truth()["resets"]
            t0 = time.monotonic()
            try:
                r = sim.scrape(0, ua="meterd/1", timeout=0.6, confirm=True)
                got.append(r.status)
            except OSError:     # urllib raises on a read timeout
                got.append("timeout")
                assert time.monotonic() - t0 >= 0.55
            if n in (3, 4, 6, 8, 9, 12):
                time.sleep(0.05)
                assert sim.truth()["resets"] == resets_before, "fault scrape %d reset" % n
            else:
                # a successful meterd scrape: a due reset happens once received
                wait_until(lambda: sim.truth()["targets"][0]["frozen"] is False, 5, "unfrozen")
            if n == 1:
                assert sim.truth()["resets"] == 1, "the due reset did not happen on scrape 1"
        want = [200, 200, "timeout", 500, 200, "timeout", 200, 500, "timeout", 200, 200,
                "timeout"]
        assert got == want, got
        t = sim.truth()["targets"][0]
        assert (t["scrapes"], t["timeouts"], t["errors"]) == (12, 4, 2), t
        # a patient client gets the held-back answer after timeout-ms + 1s
        sim.pause()
        for _ in range(2):
            sim.scrape(0, ua="curl/1")          # scrapes 13, 14
        t0 = time.monotonic()
        r = sim.scrape(0, ua="curl/1", timeout=10)   # 15: held back
        assert r.status == 200 and time.monotonic() - t0 >= 1.15, time.monotonic() - t0
    finally:
        sim.cleanup()


def test_error_and_timeout_every_scrape_never_reset():
    sim = new_sim(args=["--error-every", "1", "--reset-every", "1"]).start()
    try:
        time.sleep(1.1)
        for _ in range(5):
            assert sim.scrape(0, ua="meterd/1").status == 500
        assert sim.truth()["resets"] == 0
    finally:
        sim.cleanup()
    sim = new_sim(args=["--timeout-every", "1", "--timeout-ms", "100", "--reset-every", "1"]).start()
    try:
        time.sleep(1.1)
        for _ in range(3):
            r = sim.scrape(0, ua="meterd/1", timeout=5)   # waits out the hang
            assert r.status == 200
        time.sleep(0.1)
        t = sim.truth()
        assert t["resets"] == 0 and t["targets"][0]["timeouts"] == 3, t["targets"]
    finally:
        sim.cleanup()


def test_v05_naming():
    sim = new_sim(args=["--naming", "v05", "--department-label", "department.id"]).start()
    try:
        wait_until(lambda: sim.truth()["ticks"] >= 40, 10, "ticks")
        sim.pause()
        t = sim.truth()
        r = sim.scrape(0)
        assert r.headers["Content-Type"] == CLASSIC_CT
        assert "gen_ai_client_token_usage_bucket{" in r.text and V04_TOK not in r.text
        got, _ = token_view(r.text, family=V05_TOK, dept_label="department_id")
        assert got == truth_view(t, sim.target(0))
        types = {}
        for (op, prov, model, dept, tt) in got:
            types.setdefault((op, prov), set()).add(tt)
        assert types[("chat", "openai")] == {"input", "cached_input", "cache_creation_input",
                                            "output", "reasoning"}, types
        assert types[("chat", "aws.bedrock")] == {"input", "output"}, types
        assert types[("messages", "anthropic")] == {"input", "cached_input",
                                                   "cache_creation_input", "output"}, types
        assert 'telemetry_sdk_version="1.44.0"' in r.text
        p = subprocess.run(["promtool", "check", "metrics"], input=r.body, capture_output=True)
        assert p.returncode == 0, p.stdout + p.stderr
        # v0.5+ bodies are underscored in every negotiation; the Content-Type echoes
        r2 = sim.scrape(0, accept="text/plain;version=0.0.4;escaping=allow-utf-8")
        assert r2.headers["Content-Type"] == UTF8_CT and r2.body == r.body
    finally:
        sim.cleanup()


def test_utf8_names_and_gzip():
    sim = new_sim(args=["--department-label", "department.id"]).start()
    try:
        wait_until(lambda: sim.truth()["ticks"] >= 20, 10, "ticks")
        sim.pause()
        t = sim.truth()
        classic = sim.scrape(0)
        assert classic.headers["Content-Type"] == CLASSIC_CT
        assert 'department_id="eng"' in classic.text
        u = sim.scrape(0, accept="application/openmetrics-text;version=1.0.0;"
                                 "escaping=allow-utf-8;q=0.6,text/plain;version=0.0.4;q=0.3")
        assert u.headers["Content-Type"] == UTF8_CT, u.headers
        assert u.text.startswith('# HELP "gen_ai.client.token.usage_token" Number of tokens '
                                 'processed.\n# TYPE "gen_ai.client.token.usage_token" histogram\n')
        assert '{"gen_ai.client.token.usage_token_bucket","department.id"="eng",' in u.text
        assert 'target_info{"service.name"="unknown_service:app"' in u.text
        got, _ = token_view(u.text, family="gen_ai.client.token.usage_token",
                            dept_label="department.id", tt_label="gen_ai.token.type",
                            prefix="gen_ai.")
        assert got == truth_view(t, sim.target(0))
        # gzip: same bytes once decompressed
        r = simctl.http("GET", sim.url(0), headers={"Accept-Encoding": "gzip"})
        assert r.headers.get("Content-Encoding") == "gzip"
        assert gzip.decompress(r.body) == classic.body
    finally:
        sim.cleanup()
    sim = new_sim(args=["--names", "utf8"]).start()
    try:
        wait_until(lambda: sim.truth()["ticks"] >= 5, 10, "ticks")
        r = sim.scrape(0)
        assert r.headers["Content-Type"] == UTF8_CT and '# TYPE "gen_ai.client' in r.text
    finally:
        sim.cleanup()


def test_new_series_appear():
    sim = new_sim(args=["--new-series-every", "1"]).start()
    try:
        def new_ones():
            rows = sim.truth()["series"]
            return {(r["model"], r["department"]) for r in rows
                    if r["model"] == "gpt-4.1-mini" or r["department"].startswith("team-")}
        got = wait_until(lambda: len(new_ones()) >= 2 and new_ones(), 10, "two new combinations")
        assert ("gpt-4.1-mini", "eng") in got, got
        sim.pause()
        view, _ = token_view(sim.scrape(0).text)
        for model, dept in new_ones():
            assert any(k[2] == model and k[3] == dept for k in view), (model, dept)
    finally:
        sim.cleanup()


def test_deterministic_for_a_seed():
    def run(seed):
        sim = new_sim(args=["--max-ticks", "30", "--seed", str(seed), "--count-tokens"],
                      tick_ms=2).start()
        try:
            wait_until(lambda: sim.truth()["ticks"] == 30, 10, "30 ticks")
            time.sleep(0.05)
            t = sim.truth()
            assert t["ticks"] == 30
            return sorted((r["operation"], r["model"], r["department"], r["token_type"],
                           r["tokens"], r["requests"]) for r in t["series"])
        finally:
            sim.cleanup()
    a, b, c = run(7), run(7), run(8)
    assert a == b, "same seed, different traffic"
    assert a != c, "different seeds, same traffic"


def test_many_targets_and_sigterm_with_hung_scrape():
    sim = new_sim(targets=500, args=["--quiet", "--timeout-every", "1", "--timeout-ms", "30000"],
                  tick_ms=200).start()
    try:
        out = sim.output()
        assert "http://127.0.0.1:%d/truth" % sim.control_port in out, out
        assert "%d..%d" % (sim.base_port, sim.base_port + 499) in out, out
        wait_until(lambda: sim.truth()["ticks"] >= 2, 10, "ticks")
        t = sim.truth()
        assert len(t["targets"]) == 500
        assert {r["port"] for r in t["series"]} <= set(range(sim.base_port, sim.base_port + 500))
        # a scrape held back for 31s must not stop a clean shutdown
        th = threading.Thread(target=lambda: _ignore(lambda: sim.scrape(499, timeout=20)))
        th.start()
        wait_until(lambda: sim.truth()["targets"][499]["timeouts"] == 1, 5, "held scrape")
        with open("/proc/%d/status" % sim.proc.pid) as f:
            rss = [l for l in f if l.startswith("VmRSS")][0]
        print("    500 targets: %s" % rss.strip())
        t0 = time.monotonic()
        assert sim.stop() == 0, sim.output()
        assert time.monotonic() - t0 < 5
        th.join(10)
    finally:
        sim.cleanup()


def _ignore(fn):
    try:
        fn()
    except Exception:  # noqa: BLE001 - the connection is cut at shutdown
        pass


def test_bad_flags():
    b = simctl.binary(harness.ARGS.build)
    r = subprocess.run([b, "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for flag in ("--targets", "--base-port", "--control-port", "--naming", "--names",
                 "--department-label", "--seed", "--tick-ms", "--reset-every",
                 "--reset-ua-prefix", "--new-series-every", "--timeout-every", "--timeout-ms",
                 "--error-every", "--count-tokens", "--overflow", "--max-ticks"):
        assert flag in r.stdout, flag
    for bad in (["--targets", "0"], ["--targets", "x"], ["--naming", "v03"],
                ["--names", "dots"], ["--base-port", "65535", "--targets", "2"],
                ["--base-port", "30000", "--targets", "3", "--control-port", "30001"],
                ["stray"]):
        r = subprocess.run([b] + bad, capture_output=True, text=True, timeout=10)
        assert r.returncode == 2 and r.stderr, (bad, r.returncode, r.stderr)


if __name__ == "__main__":
    harness.main([
        test_metrics_equal_truth_when_paused,
        test_reset_only_after_received_meterd_scrape,
        test_reset_while_ticking_loses_nothing,
        test_custom_reset_ua_prefix_and_reset_scrapes,
        test_faults_on_schedule_and_never_reset,
        test_error_and_timeout_every_scrape_never_reset,
        test_v05_naming,
        test_utf8_names_and_gzip,
        test_new_series_appear,
        test_deterministic_for_a_seed,
        test_many_targets_and_sigterm_with_hung_scrape,
        test_bad_flags,
    ])
