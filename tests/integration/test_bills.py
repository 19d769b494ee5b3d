"""test_bills.py: meterd scraping the ExtProc simulator with a pricing file;
the bills API (provisional lines of today) must equal amounts computed here
independently with Python's Decimal from the usage API and the pricing rule
(pricing.h): cache carve-out per provider, reasoning split, unpriced usage,
a tenant discount, one half-even rounding per line.  Then CSV parses back to
the JSON, FOCUS is checked column by column, the CLI prints the same, and
the pricing, revisions, diff, milestones, finalize and backfill endpoints
answer as documented."""
import csv
import io
import json
import os
import subprocess
import sys
import time
import urllib.parse
from decimal import Decimal, ROUND_HALF_EVEN

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import simctl  # noqa: E402
from harness import Meterd, wait_until  # noqa: E402

PRICING = """pricing_models:
  - name: standard
    currency: USD
    clusters: [it]
    effective_from: 2026-01-01
    cache_included_in_input: true
    providers:
      aws.bedrock: false
    adjustments:
      - namespace: team-b
        percent: "-10"
    items:
      - models: ["gpt-4o-mini*"]
        per_million:
          input: "0.15"
          cached_input: "0.075"
          cache_creation_input: "0.1875"
          output: "0.60"
          reasoning: "1.2"
      - models: ["re:claude-3-5-.*"]
        per_million: {input: "0.8", cached_input: "0.08", cache_creation_input: "1", output: "4"}
      - models: ["anthropic.claude*"]
        per_million: {input: "3", cached_input: "0.3", output: "15"}
      - models: [gpt-4.1-mini]
        per_million: {input: "0.4", output: "1.6"}
"""
# text-embedding-3-small has no item: unpriced

ITEMS = [
    (lambda m: m.startswith("gpt-4o-mini"),
     {"input": "0.15", "cached_input": "0.075", "cache_creation_input": "0.1875",
      "output": "0.60", "reasoning": "1.2"}),
    (lambda m: m.startswith("claude-3-5-"),
     {"input": "0.8", "cached_input": "0.08", "cache_creation_input": "1", "output": "4"}),
    (lambda m: m.startswith("anthropic.claude"),
     {"input": "3", "cached_input": "0.3", "output": "15"}),
    (lambda m: m == "gpt-4.1-mini", {"input": "0.4", "output": "1.6"}),
]
NANO = Decimal("0.000000001")


def unit_price(list_price, ns):
    p = Decimal(list_price)
    if ns == "team-b":
        p = (p * Decimal(90) / Decimal(100)).quantize(NANO, rounding=ROUND_HALF_EVEN)
    return p


def price_group(model, provider, ns, tokens):
    """[(token_type, tokens, unit_price|None)] by THE PRICING RULE."""
    prices = None
    for match, pr in ITEMS:
        if match(model):
            prices = pr
            break
    prices = prices or {}
    included = provider != "aws.bedrock"
    out = []
    carved = 0
    for t in ("cached_input", "cache_creation_input"):
        n = tokens.get(t, 0)
        if n == 0:
            continue
        if t in prices:
            out.append((t, n, prices[t]))
            carved += n if included else 0
        elif not included:
            out.append((t, n, None))
    uncached = max(tokens.get("input", 0) - carved, 0)
    if uncached:
        out.append(("input", uncached, prices.get("input")))
    o, r = tokens.get("output", 0), tokens.get("reasoning", 0)
    if "reasoning" in prices and r:
        out.append(("reasoning", r, prices["reasoning"]))
        o = max(o - r, 0)
    if o:
        out.append(("output", o, prices.get("output")))
    return [(t, n, None if p is None else unit_price(p, ns)) for t, n, p in out]


def expected_lines(usage_rows):
    groups = {}
    for row in usage_rows:
        k = (row["namespace"], row["department"], row["model"], row["provider"])
        g = groups.setdefault(k, {})
        g[row["token_type"]] = g.get(row["token_type"], 0) + row["tokens"]
    lines = {}
    for (ns, dept, model, prov), toks in groups.items():
        for t, n, up in price_group(model, prov, ns, toks):
            key = (ns, dept, model, t, up is not None)
            cur = lines.setdefault(key, [0, up])
            cur[0] += n
    out = {}
    for key, (n, up) in lines.items():
        amount = Decimal(0) if up is None else \
            (Decimal(n) * up / Decimal(10**6)).quantize(NANO, rounding=ROUND_HALF_EVEN)
        out[key] = (n, Decimal(0) if up is None else up, amount)
    return out


def dec(s):
    return Decimal(s)


def today_bounds():
    now = time.time()
    return (time.strftime("%Y-%m-%d", time.gmtime(now)),
            time.strftime("%Y-%m-%d", time.gmtime(now + 86400)))


def test_bills_against_decimal():
    sim = simctl.Sim(simctl.binary(harness.ARGS.build), targets=2, tick_ms=50, seed=5,
                     args=["--naming", "v05", "--max-ticks", "40"]).start()
    m = Meterd(extra_yaml="scrape:\n  interval: 300ms\n  timeout: 250ms\n"
                          "ledger:\n  first_scrape: count\n"
                          "pricing:\n  file: pricing.yaml\n"
                          "targets:\n  - url: %s\n    namespace: team-a\n"
                          "  - url: %s\n    namespace: team-b\n" % (sim.url(0), sim.url(1)))
    with open(os.path.join(m.dir, "pricing.yaml"), "w") as f:
        f.write(PRICING)
    try:
        m.start()
        day, tomorrow = today_bounds()
        # the simulator stops after 40 ticks; wait until the usage is stable
        truth_total = [None]

        def stable():
            t = sum(r["tokens"] for r in sim.truth()["series"] if not r["excluded"])
            q = urllib.parse.urlencode({"from": day, "to": tomorrow, "group_by": "namespace"})
            got = json.loads(m.get("/api/v1/usage?" + q).body)["totals"]["tokens"]
            done = truth_total[0] == t and got == t
            truth_total[0] = t
            return done
        wait_until(stable, 30, "usage equals the simulator's final truth", interval=0.5)

        q = urllib.parse.urlencode({"from": day, "to": tomorrow,
                                    "group_by": "namespace,department,model,provider,token_type"})
        rows = json.loads(m.get("/api/v1/usage?" + q).body)["rows"]
        exp = expected_lines(rows)
        assert any(not k[4] for k in exp), "the run has unpriced usage"
        assert any(k[3] == "reasoning" for k in exp), "the run has reasoning tokens"

        r = m.get("/api/v1/bills?" + urllib.parse.urlencode({"from": day, "to": tomorrow}))
        assert r.status == 200, r.text
        doc = json.loads(r.body)
        assert doc["from"] == day and doc["to"] == tomorrow
        got = {}
        for ln in doc["lines"]:
            assert ln["status"] == "provisional", ln
            assert ln["day"] == day and ln["cluster"] == "it"
            assert ln["pricing_revision"] == 1
            priced = ln["pricing_model"] != "unpriced"
            assert ln["currency"] == "USD"
            key = (ln["namespace"], ln["department"], ln["model"], ln["token_type"], priced)
            assert key not in got, key
            got[key] = (ln["tokens"], dec(ln["unit_price"]), dec(ln["amount"]))
        assert got == exp, {k: (got.get(k), exp.get(k)) for k in set(got) | set(exp)
                            if got.get(k) != exp.get(k)}
        tot = sum((v[2] for v in exp.values()), Decimal(0))
        assert [(t["currency"], dec(t["amount"]), t["tokens"]) for t in doc["totals"]] == \
            [("USD", tot, sum(v[0] for v in exp.values()))], doc["totals"]

        # group_by: sums of the lines
        g = json.loads(m.get("/api/v1/bills?" + urllib.parse.urlencode(
            {"from": day, "to": tomorrow, "group_by": "namespace"})).body)
        for row in g["lines"]:
            want = sum((v[2] for k, v in exp.items() if k[0] == row["namespace"]), Decimal(0))
            assert dec(row["amount"]) == want, (row, want)

        # the Cost Management API prices today (an open day) like the bill:
        # per project, all tokens and per token type, from the Decimal lines
        cmq = {"start": day, "end": day, "kind": "project_all", "pageSize": "1000"}
        for item, tt in (("tokens.total", None), ("tokens.output", "output")):
            r = m.get("/platform/cost.alauda.io/v1beta1/costs/usage?" +
                      urllib.parse.urlencode(dict(cmq, item=item)))
            assert r.status == 200, r.text
            cm = json.loads(r.body, parse_float=Decimal)
            usage = {}
            for row in rows:                 # usage: the raw tokens of the item
                if tt is None or row["token_type"] == tt:
                    usage[row["namespace"]] = usage.get(row["namespace"], 0) + row["tokens"]
            cost = {}                        # cost: the priced bill lines of the item
            for k, v in exp.items():
                if k[4] and (tt is None or k[3] == tt):
                    cost[k[0]] = cost.get(k[0], Decimal(0)) + v[2]
            got_cm = {i["project"]: (i["usage"], i["cost"], i["currency"]) for i in cm["items"]}
            want_cm = {ns: (n, cost.get(ns), "USD" if ns in cost else "")
                       for ns, n in usage.items() if n > 0}
            assert got_cm == want_cm, (item, got_cm, want_cm)
            assert any(v[1] is not None for v in got_cm.values()), got_cm

        # CSV parses back to the JSON lines
        r = m.get("/api/v1/bills?" + urllib.parse.urlencode(
            {"from": day, "to": tomorrow, "format": "csv"}))
        assert r.status == 200 and r.headers.get("Content-Type", "").startswith("text/csv")
        back = []
        for rec in csv.DictReader(io.StringIO(r.body.decode())):
            rec["tokens"] = int(rec["tokens"])
            rec["pricing_revision"] = int(rec["pricing_revision"])
            back.append(rec)
        assert back == doc["lines"]

        # FOCUS, column by column
        r = m.get("/api/v1/bills?" + urllib.parse.urlencode(
            {"from": day, "to": tomorrow, "format": "focus"}))
        focus = list(csv.DictReader(io.StringIO(r.body.decode())))
        cols = ("BilledCost,EffectiveCost,ListCost,ContractedCost,ListUnitPrice,BillingCurrency,"
                "BillingPeriodStart,BillingPeriodEnd,ChargePeriodStart,ChargePeriodEnd,"
                "ChargeCategory,ChargeClass,ChargeDescription,ConsumedQuantity,ConsumedUnit,"
                "PricingQuantity,PricingUnit,ServiceCategory,ServiceName,ProviderName,"
                "PublisherName,InvoiceIssuerName,BillingAccountId,BillingAccountName,"
                "SubAccountId,SubAccountName,SkuId,Tags").split(",")
        assert r.body.decode().splitlines()[0].split(",") == cols
        assert len(focus) == len(doc["lines"])
        month_start = day[:8] + "01T00:00:00Z"
        y, mo = int(day[:4]), int(day[5:7])
        next_month = "%04d-%02d-01T00:00:00Z" % (y + (mo == 12), mo % 12 + 1)
        for f, ln in zip(focus, doc["lines"]):
            assert f["BilledCost"] == ln["amount"] == f["EffectiveCost"] == f["ContractedCost"]
            list_price = Decimal(0)
            if ln["pricing_model"] != "unpriced":
                for match, pr in ITEMS:
                    if match(ln["model"]):
                        list_price = Decimal(pr[ln["token_type"]])
                        break
            assert dec(f["ListUnitPrice"]) == list_price, (f, ln)
            assert dec(f["ListCost"]) == (Decimal(ln["tokens"]) * list_price / 10**6).quantize(
                NANO, rounding=ROUND_HALF_EVEN)
            assert f["BillingCurrency"] == "USD"
            assert f["BillingPeriodStart"] == month_start
            assert f["BillingPeriodEnd"] == next_month
            assert f["ChargePeriodStart"] == day + "T00:00:00Z"
            assert f["ChargePeriodEnd"] == tomorrow + "T00:00:00Z"
            assert f["ChargeCategory"] == "Usage" and f["ChargeClass"] == ""
            assert ln["model"] in f["ChargeDescription"]
            assert int(f["ConsumedQuantity"]) == ln["tokens"] and f["ConsumedUnit"] == "Tokens"
            assert dec(f["PricingQuantity"]) == Decimal(ln["tokens"]) / 10**6
            assert f["PricingUnit"] == "1M Tokens"
            assert f["ServiceCategory"] == "AI and Machine Learning"
            assert f["ServiceName"] and f["ProviderName"] and f["PublisherName"]
            assert f["InvoiceIssuerName"]
            assert f["BillingAccountId"] == f["BillingAccountName"] == "it"
            assert f["SubAccountId"] == f["SubAccountName"] == ln["namespace"]
            assert f["SkuId"] == "%s/%s" % (ln["model"], ln["token_type"])
            assert json.loads(f["Tags"]) == {"cluster": "it", "department": ln["department"],
                                             "token_type": ln["token_type"]}

        # the CLI prints the same document
        out = subprocess.run([harness.ARGS.meterd, "bills", "-c", m.config, "--from", day,
                              "--to", tomorrow, "--format", "json"], cwd=m.dir,
                             capture_output=True, check=True).stdout
        assert json.loads(out) == doc
        table = subprocess.run([harness.ARGS.meterd, "bills", "-c", m.config, "--from", day,
                                "--to", tomorrow], cwd=m.dir, capture_output=True,
                               check=True).stdout.decode()
        assert "total USD: %s" % doc["totals"][0]["amount"] in table

        # pricing: current, invalid PUT, changed PUT, revisions, diff
        cur = json.loads(m.get("/api/v1/pricing").body)
        assert cur["revision"] == 1 and cur["actor"] == "config"
        r = m.request("PUT", "/api/v1/pricing", body=b"pricing_models:\n  - name: x\n")
        assert r.status == 400, r.text
        e = json.loads(r.body)["error"]
        assert e["code"] == "invalid_pricing" and e["errors"], e
        new_doc = cur["document"]
        new_doc["pricing_models"][0]["items"][3]["per_million"]["output"] = "3.2"
        r = m.request("PUT", "/api/v1/pricing", body=json.dumps(new_doc).encode())
        assert r.status == 200, r.text
        assert json.loads(r.body) == {"revision": 2, "created": True}
        r = m.request("PUT", "/api/v1/pricing", body=json.dumps(new_doc).encode())
        assert json.loads(r.body) == {"revision": 2, "created": False}
        revs = json.loads(m.get("/api/v1/pricing/revisions").body)["revisions"]
        assert [(x["revision"], x["source"]) for x in revs] == [(1, "config"), (2, "api")]
        d = json.loads(m.get("/api/v1/pricing/revisions?diff=1..2").body)
        assert d["changes"] == [{"path": "pricing_models[0].items[3].per_million.output",
                                 "old": "1.6", "new": "3.2"}], d
        # today's provisional lines follow the current pricing at once
        doc2 = json.loads(m.get("/api/v1/bills?" + urllib.parse.urlencode(
            {"from": day, "to": tomorrow, "model": "gpt-4.1-mini",
             "token_type": "output"})).body)
        for ln in doc2["lines"]:
            assert ln["pricing_revision"] == 2
            assert dec(ln["unit_price"]) == unit_price("3.2", ln["namespace"])

        # milestones, finalize (this month has not ended), backfill (today is open)
        ms = json.loads(m.get("/api/v1/milestones").body)["milestones"]
        assert [(x["cluster"], x["day"], x["state"]) for x in ms] == [("it", day, "open")]
        r = m.request("POST", "/api/v1/periods/%s/finalize" % day[:7])
        assert r.status == 409, r.text
        r = m.request("POST", "/api/v1/periods/2026-13/finalize")
        assert r.status == 400, r.text
        r = m.request("POST", "/api/v1/backfill",
                      body=json.dumps({"from": day, "to": tomorrow, "dry_run": True}).encode())
        assert r.status == 200, r.text
        rep = json.loads(r.body)
        assert rep["days"] == 1 and rep["days_open"] == 1 and rep["days_changed"] == 0
        r = m.request("POST", "/api/v1/backfill", body=b'{"from":"x"}')
        assert r.status == 400
        r = m.request("DELETE", "/api/v1/bills")
        assert r.status == 405
        # a bad group_by item is named by position: no request bytes echoed (api.h)
        r = m.get("/api/v1/usage?group_by=namespace,zz-secret-team")
        assert r.status == 400, r.text
        e = json.loads(r.body)["error"]
        assert "zz-secret" not in r.text and "item 2 is not a dimension" in e["message"], e
        r = m.get("/api/v1/bills?group_by=day,zz-secret-team")
        assert r.status == 400 and "zz-secret" not in r.text, r.text
        assert "item 2 is not one of" in json.loads(r.body)["error"]["message"], r.text
        r = m.get("/api/v1/usage?group_by=model,model")
        assert r.status == 400 and "model given twice" in json.loads(r.body)["error"]["message"]
        assert m.metric_sum("meterd_unpriced_tokens_total") == 0   # nothing closed yet
        assert m.stop() == 0
    finally:
        m.cleanup()
        sim.stop()
        sim.cleanup()


def test_history_close_finalize_correct():
    """Past usage (written straight into the database, as before rating
    existed) is rated by a backfill through the API, closed, counted as
    unpriced where no price matches, finalized; a new revision then books
    corrections in the next open month while the finalized month stays."""
    m = Meterd(extra_yaml="pricing:\n  file: pricing.yaml\n")
    with open(os.path.join(m.dir, "pricing.yaml"), "w") as f:
        f.write(PRICING)
    try:
        m.start()
        assert m.stop() == 0
        import sqlite3
        con = sqlite3.connect(m.db)
        for model, tt, n in (("gpt-4.1-mini", "input", 1000000),
                             ("text-embedding-3-small", "input", 500)):
            cur = con.execute("INSERT INTO dims(cluster, namespace, department, model, provider, "
                              "operation, token_type) VALUES ('it', 'team-a', 'd', ?, 'openai', "
                              "'chat', ?)", (model, tt))
            day_s = 20468 * 86400   # 2026-01-15
            con.execute("INSERT INTO usage_hourly(hour_s, dim_id, tokens) VALUES (?, ?, ?)",
                        (day_s + 3600, cur.lastrowid, n))
        con.commit()
        con.close()
        m.start()
        r = m.request("POST", "/api/v1/backfill",
                      body=b'{"from":"2026-01-01","to":"2026-02-01","cluster":"it"}')
        assert r.status == 200, r.text
        rep = json.loads(r.body)
        assert rep["days"] == 1 and rep["days_changed"] == 1, rep
        assert rep["tenants"] == [{"namespace": "team-a", "currency": "USD", "old_amount": "0",
                                   "new_amount": "0.4", "old_tokens": 0,
                                   "new_tokens": 1000500, "changed": True}], rep
        doc = json.loads(m.get("/api/v1/bills?period=2026-01").body)
        got = [(ln["model"], ln["tokens"], ln["amount"], ln["status"], ln["pricing_model"])
               for ln in doc["lines"]]
        assert got == [("gpt-4.1-mini", 1000000, "0.4", "closed", "standard"),
                       ("text-embedding-3-small", 500, "0", "closed", "unpriced")], got
        assert m.metric_sum("meterd_unpriced_tokens_total") == 500
        # /metrics: the cost of the closed day, per tenant and model
        wait_until(lambda: m.metric_sum("meterd_cost_total", {
            "namespace": "team-a", "model": "gpt-4.1-mini", "currency": "USD"}) == 0.4, 10,
            "meterd_cost_total of the closed day")
        # the Cost Management API prices its items from the stored lines
        cm = json.loads(m.get("/platform/cost.alauda.io/v1beta1/costs/usage?start=2026-01-01"
                              "&end=2026-01-31&kind=project_all").body)
        assert [(i["project"], i["usage"], i["cost"], i["currency"]) for i in cm["items"]] == \
            [("team-a", 1000500, 0.4, "USD")], cm
        # the CLI backfill, twice: the second changes nothing
        for want in (0, 0):
            out = subprocess.run([harness.ARGS.meterd, "backfill", "-c", m.config, "--from",
                                  "2026-01-01", "--to", "2026-02-01", "--json"], cwd=m.dir,
                                 capture_output=True, check=True).stdout
            assert json.loads(out)["days_changed"] == want, out
        r = m.request("POST", "/api/v1/periods/2026-01/finalize")
        assert r.status == 200 and json.loads(r.body) == {
            "period": "2026-01", "already_finalized": False, "days": 1}, r.text
        r = m.request("POST", "/api/v1/periods/2026-01/finalize")
        assert json.loads(r.body)["already_finalized"] is True
        cur = json.loads(m.get("/api/v1/pricing").body)["document"]
        cur["pricing_models"][0]["items"][3]["per_million"]["input"] = "0.8"
        r = m.request("PUT", "/api/v1/pricing", body=json.dumps(cur).encode())
        assert r.status == 200, r.text

        def corrected():
            d = json.loads(m.get("/api/v1/bills?period=2026-02").body)
            return [(ln["day"], ln["model"], ln["tokens"], ln["unit_price"], ln["amount"],
                     ln["status"]) for ln in d["lines"]]
        want = [("2026-02-01", "gpt-4.1-mini", -1000000, "0.4", "-0.4", "correction"),
                ("2026-02-01", "gpt-4.1-mini", 1000000, "0.8", "0.8", "correction")]
        wait_until(lambda: sorted(corrected()) == sorted(want), 10, "corrections booked")
        # corrections move the cost counter: 0.4 - 0.4 + 0.8; a restart loads
        # the same totals from the stored lines
        wait_until(lambda: m.metric_sum("meterd_cost_total", {"currency": "USD"}) == 0.8, 10,
                   "cost after corrections")
        assert m.stop() == 0
        m.start()
        assert m.metric_sum("meterd_cost_total", {"currency": "USD"}) == 0.8
        assert m.metric_sum("meterd_unpriced_tokens_total") == 500
        jan = json.loads(m.get("/api/v1/bills?period=2026-01").body)
        assert [ln["status"] for ln in jan["lines"]] == ["finalized", "finalized"]
        assert jan["totals"] == doc["totals"], (jan["totals"], doc["totals"])
        ms = json.loads(m.get("/api/v1/milestones?from=2026-01-01&to=2026-02-01").body)
        assert [(x["day"], x["state"], x["dirty"]) for x in ms["milestones"]] == \
            [("2026-01-15", "finalized", False)], ms
        assert m.stop() == 0
    finally:
        m.cleanup()


if __name__ == "__main__":
    harness.main([test_bills_against_decimal, test_history_close_finalize_correct])
