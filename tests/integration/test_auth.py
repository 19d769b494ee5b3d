"""test_auth.py: bearer-token authentication and tenant isolation with usage
produced by meterd scraping the ExtProc simulator.

A matrix of tokens (admin, reader, tenant A, tenant B, bad, none) x
endpoints (usage API, targets, Cost Management routes, /metrics, probes,
unknown paths) x tenants' data: statuses, WWW-Authenticate, no row of
another tenant in any answer, tenant views equal to the simulator's truth
restricted to the tenant, byte-identical answers for another tenant's
existing data and for data that does not exist, 403 on admin routes, and
the per-address throttle (429 + Retry-After) that leaves other addresses
served.  Tokens must never appear in the log."""
import hashlib
import http.client
import json
import os
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import simctl  # noqa: E402
from harness import Meterd, wait_until  # noqa: E402

CM = "/platform/cost.alauda.io/v1beta1"
TOKENS = {
    "admin": "adm-7f3c2a91e8d4b6",
    "reader": "rdr-0a9b8c7d6e5f41",
    "tenant_a": "tna-5e4d3c2b1a0f99",
    "tenant_b": "tnb-1122334455667788",
}
BAD = "adm-7f3c2a91e8d4b7"          # one character away from the admin token
NAMESPACES = ["team-a", "team-b", "team-c"]
# tenant A: its namespace; tenant B: its namespace OR the finance department
VIEW = {
    "tenant_a": ({"team-a"}, set()),
    "tenant_b": ({"team-b"}, {"finance"}),
}


def sha(t):
    return hashlib.sha256(t.encode()).hexdigest()


def auth_yaml(failure_limit=5):
    return ("auth:\n"
            "  open_paths: [/healthz, /readyz]\n"
            "  failure_limit: %d\n"
            "  failure_backoff_max: 2s\n"
            "  tokens:\n"
            "    - {name: ops, sha256: \"%s\", scope: admin}\n"
            "    - {name: finance, sha256: \"%s\", scope: reader}\n"
            "    - {name: team-a, sha256: \"%s\", scope: tenant, namespaces: [team-a], "
            "departments: []}\n"
            "    - {name: team-b, sha256: \"%s\", scope: tenant, namespaces: [team-b], "
            "departments: [finance]}\n" % (failure_limit, sha(TOKENS["admin"]),
                                           sha(TOKENS["reader"]), sha(TOKENS["tenant_a"]),
                                           sha(TOKENS["tenant_b"])))


def req(m, path, token=None, source="127.0.0.1", raw_auth=None):
    """GET from a chosen loopback source address; returns (status, headers, body)."""
    c = http.client.HTTPConnection("127.0.0.1", m.port, timeout=10, source_address=(source, 0))
    h = {}
    if token is not None:
        h["Authorization"] = "Bearer " + token
    if raw_auth is not None:
        h["Authorization"] = raw_auth
    try:
        c.request("GET", path, headers=h)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def day_range():
    now = time.time()
    return (time.strftime("%Y-%m-%d", time.gmtime(now - 86400)),
            time.strftime("%Y-%m-%d", time.gmtime(now + 86400)))


def visible(who, ns, dept):
    if who in ("admin", "reader"):
        return True
    nss, depts = VIEW[who]
    return ns in nss or dept in depts


def truth_rows(sim):
    """[(namespace, department, token_type, tokens)] of billable usage."""
    ns_of = {"127.0.0.1:%d" % sim.port(i): NAMESPACES[i] for i in range(sim.n)}
    out = []
    for r in sim.truth()["series"]:
        if r["excluded"] or r["overflow"] or r["tokens"] == 0:
            continue
        dept = r["department"] if r["has_department"] and r["department"] else "unassigned"
        out.append((ns_of[r["target"]], dept, r["token_type"], r["tokens"]))
    return out


def strip_date(h):
    return {k: v for k, v in h.items() if k != "date"}


def test_auth_matrix():
    sim = simctl.Sim(simctl.binary(harness.ARGS.build), targets=3, tick_ms=30, seed=7,
                     args=["--max-ticks", "25", "--new-series-every", "0"]).start()
    targets = "targets:\n" + "".join("  - url: %s\n    namespace: %s\n" % (sim.url(i), ns)
                                     for i, ns in enumerate(NAMESPACES))
    m = Meterd(extra_yaml="scrape:\n  interval: 200ms\n  timeout: 200ms\n"
                          "ledger:\n  first_scrape: count\n" + targets + auth_yaml() +
               "pricing:\n  file: %s\n" % os.path.join(harness.ARGS.source, "config",
                                                     "pricing.yaml"))
    try:
        m.start()
        # the clock stops after 25 ticks; wait for two scrapes after that
        wait_until(lambda: sim.truth()["ticks"] >= 25, 20, "simulator finished")
        before = {t["port"]: t["meterd_scrapes"] for t in sim.truth()["targets"]}
        wait_until(lambda: all(t["meterd_scrapes"] >= before[t["port"]] + 2
                               for t in sim.truth()["targets"]), 20, "two more scrapes")
        truth = truth_rows(sim)
        frm, to = day_range()
        assert {ns for ns, _, _, _ in truth} == set(NAMESPACES), truth
        assert any(d == "finance" and ns != "team-b" for ns, d, _, _ in truth), \
            "the seed gives tenant B no finance rows outside team-b; pick another"

        usage_q = "/api/v1/usage?" + urllib.parse.urlencode(
            {"from": frm, "to": to, "group_by": "namespace,department,token_type"})

        def expected_total(who):
            return sum(t for ns, d, _, t in truth if visible(who, ns, d))

        def wait_exact():
            st, _, body = req(m, usage_q, TOKENS["admin"])
            return st == 200 and json.loads(body)["totals"]["tokens"] == expected_total("admin")
        wait_until(wait_exact, 20, "admin total == truth")

        # ---- usage API per token: only own rows, totals equal truth ----
        for who in ("admin", "reader", "tenant_a", "tenant_b"):
            st, _, body = req(m, usage_q, TOKENS[who])
            assert st == 200, (who, st, body)
            doc = json.loads(body)
            for row in doc["rows"]:
                assert visible(who, row["namespace"], row["department"]), (who, row)
            want = {}
            for ns, d, tt, t in truth:
                if visible(who, ns, d):
                    want[(ns, d, tt)] = want.get((ns, d, tt), 0) + t
            got = {}
            for row in doc["rows"]:
                k = (row["namespace"], row["department"], row["token_type"])
                got[k] = got.get(k, 0) + row["tokens"]
            got = {k: v for k, v in got.items() if v}
            assert got == want, (who, got, want)
            assert doc["totals"]["tokens"] == expected_total(who) > 0, (who, doc["totals"])

        # ---- Cost Management API per token ----
        cm_q = "?" + urllib.parse.urlencode({"start": frm, "end": to, "step": "day",
                                              "kind": "namespace_all", "pageSize": "1000"})
        for who in ("admin", "reader", "tenant_a", "tenant_b"):
            st, _, body = req(m, CM + "/costs/usage" + cm_q, TOKENS[who])
            assert st == 200, (who, st, body)
            doc = json.loads(body)
            by_ns = {}
            for it in doc["items"]:
                by_ns[it["namespace"]] = by_ns.get(it["namespace"], 0) + it["usage"]
            want = {}
            for ns, d, _, t in truth:
                if visible(who, ns, d):
                    want[ns] = want.get(ns, 0) + t
            assert by_ns == want, (who, by_ns, want)
            if who == "tenant_a":
                assert set(by_ns) == {"team-a"}, by_ns
            for ns in NAMESPACES:
                st, _, body = req(m, CM + "/projects/%s/costs/usage" % ns + cm_q, TOKENS[who])
                assert st == 200, (who, ns, st)
                got = sum(it["usage"] for it in json.loads(body)["items"])
                assert got == want.get(ns, 0), (who, ns, got, want)

        # ---- bills per token: a tenant sees only its lines ----
        bills_q = "/api/v1/bills?" + urllib.parse.urlencode({"from": frm, "to": to})
        seen = {}
        for who in ("admin", "reader", "tenant_a", "tenant_b"):
            st, _, body = req(m, bills_q, TOKENS[who])
            assert st == 200, (who, st, body)
            lines = json.loads(body)["lines"]
            for ln in lines:
                assert visible(who, ln["namespace"], ln["department"]), (who, ln)
            seen[who] = {(ln["namespace"], ln["department"]) for ln in lines}
        assert seen["admin"] == seen["reader"] and len(seen["admin"]) > len(seen["tenant_a"]) > 0
        assert {ns for ns, _ in seen["tenant_a"]} == {"team-a"}, seen["tenant_a"]
        assert seen["tenant_b"] == {k for k in seen["admin"] if visible("tenant_b", *k)}

        # ---- probing another tenant: byte-identical to a tenant that does not exist ----
        probes = [
            (CM + "/projects/team-b/costs/usage" + cm_q,
             CM + "/projects/no-such-team/costs/usage" + cm_q),
            (CM + "/projects/team-c/costs/usage" + cm_q,
             CM + "/projects/no-such-team/costs/usage" + cm_q),
            (CM + "/costs/usage" + cm_q.replace("namespace_all", "project") + "&name=team-b",
             CM + "/costs/usage" + cm_q.replace("namespace_all", "project") + "&name=nope"),
            (usage_q + "&namespace=team-b", usage_q + "&namespace=no-such-team"),
            (bills_q + "&namespace=team-b", bills_q + "&namespace=no-such-team"),
            (usage_q + "&namespace=team-c&department=sales",
             usage_q + "&namespace=no-such-team&department=sales"),
        ]
        for existing, missing in probes:
            a = req(m, existing, TOKENS["tenant_a"])
            b = req(m, missing, TOKENS["tenant_a"])
            assert a[0] == b[0] == 200 and a[2] == b[2], (existing, a, b)
            assert strip_date(a[1]) == strip_date(b[1]), (a[1], b[1])
            # and the data really exists for an admin
            adm = req(m, existing, TOKENS["admin"])
            assert adm[2] != a[2], existing

        # ---- status matrix ----
        targets_p = "/api/v1/targets"
        endpoints = {
            "usage": (usage_q, {"admin": 200, "reader": 200, "tenant_a": 200, "tenant_b": 200}),
            "targets": (targets_p, {"admin": 200, "reader": 403, "tenant_a": 403,
                                    "tenant_b": 403}),
            "cm": (CM + "/costs/usage" + cm_q, {"admin": 200, "reader": 200, "tenant_a": 200,
                                                "tenant_b": 200}),
            "cm_project": (CM + "/projects/team-b/costs/usage" + cm_q,
                           {"admin": 200, "reader": 200, "tenant_a": 200, "tenant_b": 200}),
            "metrics": ("/metrics", {"admin": 200, "reader": 200, "tenant_a": 403,
                                     "tenant_b": 403}),
            "unknown_api": ("/api/v1/nope", {"admin": 404, "reader": 404, "tenant_a": 404,
                                             "tenant_b": 404}),
            "unknown": ("/nope", {"admin": 404, "reader": 404, "tenant_a": 404,
                                  "tenant_b": 404}),
        }
        src = 10
        for name, (path, want) in endpoints.items():
            for who, code in want.items():
                st, h, body = req(m, path, TOKENS[who])
                assert st == code, (name, who, st, body[:200])
            # no token: 401 with a Bearer challenge and no data
            st, h, body = req(m, path)
            assert st == 401 and h.get("www-authenticate", "").startswith("Bearer"), \
                (name, st, h)
            assert b"team-" not in body, body
            # a bad token (each from a fresh address, so the throttle stays out)
            st, h, body = req(m, path, BAD, source="127.0.0.%d" % src)
            src += 1
            assert st == 401 and 'error="invalid_token"' in h.get("www-authenticate", ""), \
                (name, st, h)
            st, h, body = req(m, path, raw_auth="Basic " + TOKENS["admin"],
                              source="127.0.0.%d" % src)
            src += 1
            assert st == 401, (name, "basic", st)
        # errors keep the shape of their API
        st, _, body = req(m, CM + "/costs/usage" + cm_q)
        doc = json.loads(body)
        assert (doc["kind"], doc["reason"], doc["code"]) == ("Status", "Unauthorized", 401)
        st, _, body = req(m, usage_q, TOKENS["tenant_a"] + "x", source="127.0.0.99")
        assert json.loads(body)["error"]["code"] == "unauthorized", body
        st, _, body = req(m, targets_p, TOKENS["reader"])
        assert json.loads(body)["error"]["code"] == "forbidden", body
        # open paths need nothing
        for p in ("/healthz", "/readyz"):
            assert req(m, p)[0] == 200

        # ---- throttle: 5 bad tokens from 127.0.0.2, then 429 for that address only ----
        for i in range(5):
            st, _, _ = req(m, usage_q, BAD, source="127.0.0.2")
            assert st == 401, (i, st)
        st, h, body = req(m, usage_q, TOKENS["admin"], source="127.0.0.2")
        assert st == 429 and int(h["retry-after"]) >= 1, (st, h)
        assert req(m, usage_q, TOKENS["admin"])[0] == 200          # other address served
        assert req(m, "/healthz", source="127.0.0.2")[0] == 200     # open paths too
        time.sleep(int(h["retry-after"]) + 0.1)
        assert req(m, usage_q, TOKENS["admin"], source="127.0.0.2")[0] == 200

        # ---- counters and logs ----
        st, _, body = req(m, "/metrics", TOKENS["reader"])
        fails = {}
        for line in body.decode().splitlines():
            if line.startswith("meterd_auth_failures_total{"):
                fails[line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
        assert fails["invalid"] >= 2 * len(endpoints) + 5, fails
        assert fails["missing"] >= len(endpoints) + 1, fails
        assert fails["scope"] >= 5 and fails["throttled"] >= 1, fails
        assert m.stop() == 0, m.log()
        log = m.log()
        for t in list(TOKENS.values()) + [BAD]:
            assert t not in log, "a token appears in the log"
            assert sha(t) not in log, "a token digest appears in the log"
    finally:
        m.cleanup()
        sim.cleanup()


def test_open_without_auth_section():
    """No auth section: everything answers without a token and meterd warns."""
    m = Meterd()
    try:
        m.start()
        frm, to = day_range()
        assert m.get("/api/v1/usage").status == 200
        assert m.get(CM + "/costs/usage?start=%s&end=%s" % (frm, to)).status == 200
        assert m.get("/metrics").status == 200
        assert "are open to anyone" in m.log()
        assert m.stop() == 0
    finally:
        m.cleanup()


def test_limits_413_431():
    """A declared body over 1 MiB: 413 before it is read; oversized headers:
    431 (libmicrohttpd refuses them past the connection memory limit)."""
    import socket
    m = Meterd(extra_yaml=auth_yaml())
    try:
        m.start()
        s = socket.create_connection(("127.0.0.1", m.port), timeout=10)
        s.sendall(b"POST /api/v1/usage HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n")
        data = s.recv(4096)
        s.close()
        assert data.startswith(b"HTTP/1.1 413"), data[:100]
        s = socket.create_connection(("127.0.0.1", m.port), timeout=10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200000 + b"\r\n\r\n")
        data = b""
        try:
            while True:
                d = s.recv(4096)
                if not d:
                    break
                data += d
        except OSError:
            pass
        s.close()
        assert data.startswith(b"HTTP/1.1 431"), data[:100]
        assert m.stop() == 0
    finally:
        m.cleanup()


if __name__ == "__main__":
    harness.main([test_auth_matrix, test_open_without_auth_section, test_limits_413_431])
