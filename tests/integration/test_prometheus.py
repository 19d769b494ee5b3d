"""test_prometheus.py: meterd's /metrics with real clients.

- Debian's Prometheus 2.42 (started here on loopback, 1 s scrapes, the
  alerting rules loaded) scrapes meterd while meterd scrapes the ExtProc
  simulator.  Prometheus 2.42 negotiates OpenMetrics first, so its scrape
  health checks meterd's OpenMetrics exposition with Prometheus' own parser.
- Every PromQL expression of dashboards/*.json (Grafana variables
  substituted) and dashboards/alerts.yaml runs through /api/v1/query: each
  must be valid, and each usage/health one must return data (for an alert or
  a panel ending in a comparison, its left side must).
- So does every query of config/costmanagement/collection-configmap.yaml:
  the usage queries of the token types meterd has return one series per
  namespace and model, carrying the labels the mappers name; the label
  queries carry label_model = model.  Expressions over
  meterd_cost_total / meterd_unpriced_tokens_total need rating (issue 5):
  they are checked for validity only and listed.
- sum(meterd_tokens_total) in Prometheus equals the total of meterd's usage
  API after the simulator is paused (also per namespace and token type, and
  requests).
- promtool check metrics accepts the text exposition; the OpenMetrics one is
  checked against the OpenMetrics rules promtool (a 0.0.4 linter) cannot.
- metrics.max_series cuts and counts; gzip responses are one valid stream;
  a restart reloads the totals from the database."""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import zlib

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import simctl  # noqa: E402
from harness import Meterd, wait_until, free_port, http  # noqa: E402

PROM_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
               "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
NEEDS_RATING = ("meterd_cost_total", "meterd_unpriced_tokens_total")


def src(*p):
    return os.path.join(harness.ARGS.source, *p)


def targets_yaml(sim, namespaces):
    out = "targets:\n"
    for i in range(sim.n):
        out += "  - url: %s\n    namespace: %s\n" % (sim.url(i), namespaces[i])
    return out


def today_range():
    now = time.time()
    return (time.strftime("%Y-%m-%d", time.gmtime(now - 86400)),
            time.strftime("%Y-%m-%d", time.gmtime(now + 2 * 86400)))


def api_usage(m, group):
    f, t = today_range()
    r = m.get("/api/v1/usage?" + urllib.parse.urlencode(
        {"from": f, "to": t, "group_by": group}))
    assert r.status == 200, (r.status, r.text)
    return json.loads(r.body)


class Prometheus:
    def __init__(self, meterd_port, rule_file):
        self.dir = tempfile.mkdtemp(prefix="prom-it-")
        self.port = free_port()
        cfg = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms",
                       "evaluation_interval": "1s"},
            "rule_files": [rule_file],
            "scrape_configs": [{
                "job_name": "meterd",
                # as the PodMonitor: meterd's namespace label is the tenant's
                "honor_labels": True,
                "static_configs": [{"targets": ["127.0.0.1:%d" % meterd_port]}],
            }],
        }
        self.config = os.path.join(self.dir, "prometheus.yml")
        with open(self.config, "w") as f:
            yaml.safe_dump(cfg, f)
        self.log_path = os.path.join(self.dir, "prometheus.log")
        self.proc = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["prometheus", "--config.file=" + self.config,
             "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn"],
            stdout=self.log, stderr=self.log, cwd=self.dir)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("prometheus exited:\n" + self.output())
            return http("GET", self.url + "/-/ready", timeout=2).status == 200
        wait_until(ready, 30, "prometheus ready")
        return self

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def query(self, expr):
        r = http("GET", self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        doc = json.loads(r.body)
        if r.status != 200 or doc.get("status") != "success":
            raise AssertionError("query %r failed: %s %s" % (expr, r.status, r.text))
        return doc["data"]["result"]

    def scalar_sum(self, expr):
        res = self.query(expr)
        return sum(float(x["value"][1]) for x in res) if res else None

    def target(self):
        r = http("GET", self.url + "/api/v1/targets")
        t = json.loads(r.body)["data"]["activeTargets"]
        return t[0] if t else None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- expressions of the dashboards and rules ----

GRAFANA_VARS = [
    ("$__rate_interval", "10s"), ("${__rate_interval}", "10s"),
    ("$__range", "1h"), ("${__range}", "1h"), ("$__interval", "5s"),
]
LABEL_VALUES = re.compile(r"^label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$")
TRAILING_CMP = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*-?[0-9.]+\s*$")


def grafana_to_promql(expr):
    for k, v in GRAFANA_VARS:
        expr = expr.replace(k, v)
    # multi-value template variables: "All" is the regex .*
    expr = re.sub(r"\$\{?(cluster|namespace|department|model|currency)\}?", ".*", expr)
    m = LABEL_VALUES.match(expr.strip())
    if m:
        expr = "group by (%s) (%s)" % (m.group(2), m.group(1))
    return expr


def dashboard_exprs():
    out = []
    for path in sorted(glob.glob(src("dashboards", "*.json"))):
        with open(path) as f:
            doc = json.load(f)
        for v in doc["templating"]["list"]:
            if v.get("type") == "query":
                q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
                out.append(("%s: variable %s" % (doc["title"], v["name"]), q))
        for p in doc["panels"]:
            for t in p["targets"]:
                out.append(("%s: %s/%s" % (doc["title"], p["title"], t["refId"]), t["expr"]))
    return out


def rule_exprs():
    with open(src("dashboards", "alerts.yaml")) as f:
        doc = yaml.safe_load(f)
    return [("alert %s" % r["alert"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


def costmgmt_queries():
    """[(entry, part, query, mappers)] of the Cost Management collection
    config."""
    with open(src("config", "costmanagement", "collection-configmap.yaml")) as f:
        cm = yaml.safe_load(f)
    return [(e["item"], part, e[part]["query"], e[part]["mappers"])
            for e in yaml.safe_load(cm["data"]["config"]) for part in ("usage", "labels")
            if part in e]


def check_costmgmt_queries(prom):
    """Every collection query is valid in a real Prometheus; those of token
    types meterd has return per-namespace, per-model data with the labels the
    mappers read.  Returns the (entry, part) checked for validity only."""
    have = {x["metric"]["token_type"] for x in prom.query(
        "sum by (token_type) (meterd_tokens_total)")}
    assert {"input", "output"} <= have, have
    qs = costmgmt_queries()
    assert len(qs) >= 8, qs
    valid_only, checked = [], set()
    for item, part, q, mappers in qs:
        res = prom.query(q)                                # raises when invalid
        tt = re.search(r'token_type="([a-z_]+)"', q).group(1)
        if tt not in have:
            valid_only.append("%s %s" % (item, part))
            continue
        assert res, "%s %s: no data: %s" % (item, part, q)
        for x in res:
            lab = x["metric"]
            for k in ("name", "namespace"):
                assert lab.get(mappers[k]), (item, part, k, mappers[k], lab)
            if part == "labels":
                assert lab.get("label_model") == lab["model"], (item, lab)
        if part == "usage":
            assert sum(float(x["value"][1]) for x in res) > 0, (item, res)
        checked.add(tt)
    assert {"input", "output"} <= checked, checked
    return valid_only


def data_expr(expr):
    """The part of an expression that must return data when meterd is
    healthy: an alert's left side, absent(x)'s x."""
    e = expr.strip()
    m = re.match(r"^absent\((.*)\)$", e, re.S)
    if m:
        return m.group(1)
    return TRAILING_CMP.sub("", e)


# ---- OpenMetrics structure (what promtool's 0.0.4 linter cannot check) ----

def check_openmetrics(text):
    lines = text.split("\n")
    assert lines[-1] == "" and lines[-2] == "# EOF", "must end with # EOF and a newline"
    families = {}
    cur = None
    for ln in lines[:-2]:
        assert ln, "empty line in OpenMetrics"
        if ln.startswith("# TYPE "):
            _, _, name, typ = ln.split(" ", 3)
            assert name not in families, "family %s declared twice" % name
            if typ == "counter":
                assert not name.endswith("_total"), "counter family %s ends in _total" % name
            families[name] = typ
            cur = name
            continue
        if ln.startswith("# HELP "):
            name = ln.split(" ", 3)[2]
            assert name not in families, "HELP of %s after its TYPE or declared twice" % name
            continue
        assert not ln.startswith("#"), "unknown comment %r" % ln
        name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", ln).group(0)
        assert cur is not None, "sample %s before any TYPE" % name
        want = cur + "_total" if families[cur] == "counter" else cur
        assert name == want, "sample %s in family %s (%s)" % (name, cur, families[cur])
    return families


def test_real_prometheus():
    sim = simctl.Sim(simctl.binary(harness.ARGS.build), targets=2, tick_ms=50, seed=7,
                     args=["--error-every", "6", "--overflow", "--new-series-every", "3"]
                     ).start()
    namespaces = ["team-a", "team-b"]
    m = Meterd(extra_yaml="scrape:\n  interval: 500ms\n  timeout: 400ms\n"
                          "ledger:\n  first_scrape: count\n" + targets_yaml(sim, namespaces))
    prom = None
    try:
        m.start()
        wait_until(lambda: m.metric_sum("meterd_tokens_total") > 0, 15, "usage on /metrics")
        prom = Prometheus(m.port, src("dashboards", "alerts.yaml")).start()
        # enough 1 s scrapes for rate() windows of 10 s
        wait_until(lambda: (prom.target() or {}).get("health") == "up", 20, "meterd scraped")
        t0 = time.monotonic()
        wait_until(lambda: (prom.scalar_sum("count_over_time(meterd_build_info[1m])") or 0)
                   >= 12, 40, "12 scrapes of meterd")
        sys.stderr.write("  prometheus collected 12 scrapes in %.1fs\n" % (time.monotonic() - t0))

        # Prometheus 2.42 asks for OpenMetrics first and parsed it without error
        tgt = prom.target()
        assert tgt["health"] == "up" and tgt["lastError"] == "", tgt
        r = m.get("/metrics", headers={"Accept": PROM_ACCEPT})
        assert r.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
        fams = check_openmetrics(r.text)
        assert fams["meterd_tokens"] == "counter" and fams["meterd_requests"] == "counter"
        # the rules loaded and evaluate
        rules = json.loads(http("GET", prom.url + "/api/v1/rules").body)["data"]["groups"]
        bad = [(x["name"], x.get("lastError")) for g in rules for x in g["rules"]
               if x.get("health") != "ok"]
        assert len(rules) >= 4 and not bad, bad

        # every expression: valid; data where meterd alone can provide it
        empty, rating = [], []
        exprs = dashboard_exprs() + rule_exprs()
        assert len(exprs) > 40, len(exprs)
        for where, expr in exprs:
            q = grafana_to_promql(expr)
            prom.query(q)                                  # raises when invalid
            if any(n in expr for n in NEEDS_RATING):
                rating.append(where)
                continue
            dq = data_expr(q)
            if not prom.query(dq):
                empty.append((where, dq))
        sys.stderr.write("  %d expressions valid; %d need rating to return data:\n    %s\n" % (
            len(exprs), len(rating), "\n    ".join(rating)))
        assert not empty, "expressions without data:\n" + "\n".join(
            "%s: %s" % e for e in empty)
        valid_only = check_costmgmt_queries(prom)
        sys.stderr.write("  Cost Management queries valid; %d without data (token type "
                         "not reported by the simulator): %s\n" % (
                             len(valid_only), ", ".join(valid_only)))

        # the totals: Prometheus == meterd's usage API, exactly
        sim.pause()
        before = {t["port"]: t["meterd_scrapes"] for t in sim.truth()["targets"]}
        wait_until(lambda: all(t["meterd_scrapes"] >= before[t["port"]] + 2
                               for t in sim.truth()["targets"]), 15, "two meterd scrapes")
        doc = api_usage(m, "namespace,token_type")
        want_tokens, want_requests = doc["totals"]["tokens"], doc["totals"]["requests"]
        assert want_tokens > 0 and want_requests > 0, doc["totals"]
        wait_until(lambda: m.metric_sum("meterd_tokens_total") == want_tokens, 10,
                   "meterd /metrics == usage API")
        assert api_usage(m, "namespace")["totals"]["tokens"] == want_tokens   # settled
        last = {}

        def prom_equal():
            last["got"] = prom.scalar_sum("sum(meterd_tokens_total)")
            return last["got"] == want_tokens
        try:
            wait_until(prom_equal, 15, "Prometheus sum == usage API")
        except AssertionError:
            raise AssertionError("sum(meterd_tokens_total) %r != usage API %d" % (
                last.get("got"), want_tokens))
        assert prom.scalar_sum("sum(meterd_requests_total)") == want_requests
        by = {(x["metric"]["namespace"], x["metric"]["token_type"]): float(x["value"][1])
              for x in prom.query("sum by (namespace, token_type) (meterd_tokens_total)")}
        api = {}
        for row in doc["rows"]:
            k = (row["namespace"], row["token_type"])
            api[k] = api.get(k, 0) + row["tokens"]
        assert by == {k: float(v) for k, v in api.items()}, (by, api)
        # and the tenant label is the tenant's, not the scrape target's
        assert {k[0] for k in by} >= set(namespaces), by

        # promtool accepts the text exposition (0.0.4)
        text = m.get("/metrics").text
        r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True)
        assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", \
            (r.returncode, r.stdout, r.stderr)
        assert m.stop() == 0, m.log()
    finally:
        if prom is not None:
            prom.stop()
        m.cleanup()
        sim.cleanup()


def test_max_series_cut_and_restart():
    sim = simctl.Sim(simctl.binary(harness.ARGS.build), targets=2, tick_ms=50, seed=3).start()
    m = Meterd(extra_yaml="scrape:\n  interval: 300ms\n  timeout: 250ms\n"
                          "ledger:\n  first_scrape: count\nmetrics:\n  max_series: 5\n" +
               targets_yaml(sim, ["team-a", "team-b"]))
    try:
        m.start()
        wait_until(lambda: m.metric("meterd_metrics_series_exported") == 5, 15, "5 exported")
        text = m.get("/metrics").text
        usage_lines = [ln for ln in text.splitlines()
                       if ln.startswith(("meterd_tokens_total{", "meterd_requests_total{"))]
        assert len(usage_lines) == 5, usage_lines
        c1 = m.metric("meterd_metrics_series_cut_total")
        c2 = m.metric("meterd_metrics_series_cut_total")
        assert c1 > 0 and c2 > c1, (c1, c2)          # counted on every exposition
        # the same series stay exported as traffic continues (first-seen order)
        first = sorted(ln.rsplit(" ", 1)[0] for ln in usage_lines)
        time.sleep(1.0)
        again = sorted(ln.rsplit(" ", 1)[0] for ln in m.get("/metrics").text.splitlines()
                       if ln.startswith(("meterd_tokens_total{", "meterd_requests_total{")))
        assert first == again, (first, again)

        # gzip: one gzip stream (cached usage prefix + this request's tail),
        # the same usage lines as the identity response
        sim.pause()
        before = {t["port"]: t["meterd_scrapes"] for t in sim.truth()["targets"]}
        wait_until(lambda: all(t["meterd_scrapes"] >= before[t["port"]] + 2
                               for t in sim.truth()["targets"]), 15, "two meterd scrapes")
        for accept in (None, PROM_ACCEPT):
            h = {"Accept-Encoding": "gzip"}
            if accept:
                h["Accept"] = accept
            plain = m.get("/metrics", headers={"Accept": accept} if accept else {})
            r = m.get("/metrics", headers=h)
            assert r.headers.get("Content-Encoding") == "gzip", r.headers
            d = zlib.decompressobj(31)
            text = d.decompress(r.body).decode()
            assert d.eof and d.unused_data == b"", "not exactly one gzip stream"
            usage = [ln for ln in text.splitlines() if ln.startswith("meterd_tokens_total{")]
            assert usage and usage == [ln for ln in plain.text.splitlines()
                                       if ln.startswith("meterd_tokens_total{")]
            if accept:
                assert text.endswith("# EOF\n")
                check_openmetrics(text)
        r = m.get("/metrics", headers={"Accept-Encoding": "gzip;q=0, identity"})
        assert "Content-Encoding" not in r.headers and r.text.startswith("# HELP")

        # restart with no limit: the totals come back from the database
        sim.resume()
        sim.pause()
        before = {t["port"]: t["meterd_scrapes"] for t in sim.truth()["targets"]}
        wait_until(lambda: all(t["meterd_scrapes"] >= before[t["port"]] + 2
                               for t in sim.truth()["targets"]), 15, "two meterd scrapes")
        assert m.stop() == 0
        m.write_config("ledger:\n  first_scrape: count\n")   # no targets, no limit
        m.start()
        doc = api_usage(m, "namespace,token_type")
        assert doc["totals"]["tokens"] > 0
        assert m.metric_sum("meterd_tokens_total") == doc["totals"]["tokens"]
        assert m.metric_sum("meterd_requests_total") == doc["totals"]["requests"]
        assert m.metric("meterd_metrics_series_cut_total") == 0
        assert m.stop() == 0
    finally:
        m.cleanup()
        sim.cleanup()


if __name__ == "__main__":
    harness.main([test_real_prometheus, test_max_series_cut_and_restart])
