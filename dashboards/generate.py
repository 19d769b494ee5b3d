#!/usr/bin/env python3
"""generate.py: writes the Grafana dashboards of meterd (dashboards/*.json).

The JSON files are committed; edit this file and rerun it
(`python3 dashboards/generate.py`) rather than editing the JSON by hand, so
the three dashboards keep one layout and one datasource convention:
an import-time input DS_PROMETHEUS and a `datasource` template variable that
every panel and variable uses as "${datasource}".

Panels whose expressions read meterd_cost_total or
meterd_unpriced_tokens_total need rating (issue 5) to show data; their
description says so.
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = HERE          # `generate.py DIR` writes there instead (the tests compare)
DS = {"type": "prometheus", "uid": "${datasource}"}
NEEDS_RATING = " Needs rating (pricing models) to show data."

# label filter shared by the usage panels
F = 'cluster=~"$cluster", namespace=~"$namespace", department=~"$department", model=~"$model"'
FC = 'cluster=~"$cluster", namespace=~"$namespace", department=~"$department", model=~"$model"'


def inputs():
    return [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
             "pluginId": "prometheus", "pluginName": "Prometheus",
             "description": "The Prometheus that scrapes meterd's /metrics"}]


def ds_var():
    return {"name": "datasource", "label": "Data source", "type": "datasource",
            "query": "prometheus", "current": {}, "hide": 0, "refresh": 1,
            "regex": "", "options": []}


def label_var(name, metric="meterd_tokens_total", depends=""):
    q = "label_values(%s%s, %s)" % (metric, "{%s}" % depends if depends else "", name)
    return {"name": name, "label": name.capitalize(), "type": "query", "datasource": DS,
            "query": {"query": q, "refId": "%s-var" % name}, "definition": q,
            "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1, "hide": 0, "options": [], "regex": ""}


class Board:
    def __init__(self, uid, title, tags, time_from="now-24h", variables=()):
        self.uid, self.title, self.tags, self.time_from = uid, title, tags, time_from
        self.variables = list(variables)
        self.panels = []
        self.y = 0
        self.x = 0
        self.row_h = 0

    def panel(self, title, kind, targets, w=12, h=8, unit="short", desc="", legend=None,
              extra=None):
        if self.x + w > 24:
            self.x = 0
            self.y += self.row_h
            self.row_h = 0
        pid = len(self.panels) + 1
        p = {
            "id": pid, "title": title, "type": kind, "datasource": DS,
            "description": desc,
            "gridPos": {"x": self.x, "y": self.y, "w": w, "h": h},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {},
            "targets": [],
        }
        for i, t in enumerate(targets):
            expr, fmt = (t, None) if isinstance(t, str) else t
            tgt = {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr,
                   "legendFormat": fmt or legend or "__auto", "range": kind == "timeseries",
                   "instant": kind != "timeseries"}
            if kind == "table":
                tgt["format"] = "table"
            p["targets"].append(tgt)
        if kind == "timeseries":
            p["options"] = {"legend": {"displayMode": "table", "placement": "right",
                                       "calcs": ["lastNotNull"]},
                            "tooltip": {"mode": "multi", "sort": "desc"}}
        if kind in ("stat", "bargauge"):
            p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                              "values": kind == "bargauge"},
                            "orientation": "horizontal"}
        if kind == "table":
            p["transformations"] = [{"id": "merge", "options": {}}]
        if extra:
            p.update(extra)
        self.panels.append(p)
        self.x += w
        self.row_h = max(self.row_h, h)

    def dump(self):
        doc = {
            "__inputs": inputs(),
            "__requires": [
                {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "9.0.0"},
                {"type": "datasource", "id": "prometheus", "name": "Prometheus",
                 "version": "1.0.0"},
            ],
            "uid": self.uid, "title": self.title, "tags": self.tags,
            "editable": True, "graphTooltip": 1, "schemaVersion": 37, "version": 1,
            "time": {"from": self.time_from, "to": "now"}, "refresh": "1m",
            "timezone": "utc",
            "templating": {"list": [ds_var()] + self.variables},
            "annotations": {"list": []},
            "panels": self.panels,
        }
        path = os.path.join(OUT, self.uid.replace("meterd-", "") + ".json")
        with open(path, "w") as f:
            json.dump(doc, f, indent=2, sort_keys=False)
            f.write("\n")
        return path


def usage_board():
    b = Board("meterd-token-usage", "AI token usage", ["meterd", "ai-gateway", "usage"],
              variables=[label_var("cluster"), label_var("namespace"),
                         label_var("department"), label_var("model")])
    b.panel("Tokens in range", "stat",
            ['sum(increase(meterd_tokens_total{%s, token_type=~"input|output"}[$__range]))' % F],
            w=6, h=4, desc="Input plus output tokens in the selected range (cached, cache "
                           "creation and reasoning tokens are part of those and not added).")
    b.panel("Requests in range", "stat",
            ['sum(increase(meterd_requests_total{%s}[$__range]))' % F], w=6, h=4,
            desc="Requests, counted once each from the input token type.")
    b.panel("Token rate", "stat",
            ['sum(rate(meterd_tokens_total{%s, token_type=~"input|output"}[$__rate_interval]))'
             % F], w=6, h=4, unit="short", desc="Input plus output tokens per second.")
    b.panel("Active tenants", "stat",
            ['count(count by (namespace) (rate(meterd_tokens_total{%s}[$__rate_interval]) > 0))'
             % F], w=6, h=4, desc="Namespaces with token usage in the last rate interval.")
    b.panel("Token rate by namespace", "timeseries",
            ['sum by (namespace) (rate(meterd_tokens_total{%s, token_type=~"input|output"}'
             '[$__rate_interval]))' % F], legend="{{namespace}}", unit="short")
    b.panel("Token rate by department", "timeseries",
            ['sum by (namespace, department) (rate(meterd_tokens_total{%s, '
             'token_type=~"input|output"}[$__rate_interval]))' % F],
            legend="{{namespace}}/{{department}}")
    b.panel("Token rate by model", "timeseries",
            ['sum by (model) (rate(meterd_tokens_total{%s, token_type=~"input|output"}'
             '[$__rate_interval]))' % F], legend="{{model}}")
    b.panel("Token rate by token type", "timeseries",
            ['sum by (token_type) (rate(meterd_tokens_total{%s}[$__rate_interval]))' % F],
            legend="{{token_type}}",
            desc="Every token type as reported; cached_input and cache_creation_input are "
                 "part of input, reasoning part of output (EAIG v0.5+).")
    b.panel("Request rate by model", "timeseries",
            ['sum by (model) (rate(meterd_requests_total{%s}[$__rate_interval]))' % F],
            legend="{{model}}", unit="reqps")
    b.panel("Tokens per request by model", "timeseries",
            ['sum by (model) (rate(meterd_tokens_total{%s, token_type=~"input|output"}'
             '[$__rate_interval])) / sum by (model) (rate(meterd_requests_total{%s}'
             '[$__rate_interval]))' % (F, F)], legend="{{model}}")
    b.panel("Top 10 tenants (tokens in range)", "bargauge",
            ['topk(10, sum by (namespace) (increase(meterd_tokens_total{%s, '
             'token_type=~"input|output"}[$__range])))' % F], legend="{{namespace}}")
    b.panel("Top 10 departments (tokens in range)", "bargauge",
            ['topk(10, sum by (namespace, department) (increase(meterd_tokens_total{%s, '
             'token_type=~"input|output"}[$__range])))' % F],
            legend="{{namespace}}/{{department}}")
    b.panel("Usage by tenant, model and token type (range)", "table",
            ['sum by (namespace, department, model, token_type) '
             '(increase(meterd_tokens_total{%s}[$__range]))' % F], w=24, h=10)
    return b.dump()


def chargeback_board():
    b = Board("meterd-chargeback", "Chargeback", ["meterd", "ai-gateway", "cost"],
              time_from="now/M",
              variables=[label_var("cluster", "meterd_tokens_total"),
                         label_var("namespace", "meterd_tokens_total"),
                         label_var("department", "meterd_tokens_total"),
                         label_var("model", "meterd_tokens_total"),
                         label_var("currency", "meterd_cost_total")])
    c = FC + ', currency=~"$currency"'
    b.panel("Cost this month", "stat",
            ['sum by (currency) (increase(meterd_cost_total{%s}[$__range]))' % c],
            w=8, h=4, legend="{{currency}}",
            desc="Rated cost in the selected range (default: this month)." + NEEDS_RATING)
    b.panel("Unpriced tokens this month", "stat",
            ['sum(increase(meterd_unpriced_tokens_total{%s}[$__range]))' % F], w=8, h=4,
            desc="Tokens no pricing model matched: usage that is not in any bill."
                 + NEEDS_RATING)
    b.panel("Tenants billed", "stat",
            ['count(sum by (namespace) (increase(meterd_cost_total{%s}[$__range])) > 0)' % c],
            w=8, h=4, desc="Namespaces with a cost in the range." + NEEDS_RATING)
    b.panel("Cost this month by tenant", "bargauge",
            ['sort_desc(sum by (namespace, currency) (increase(meterd_cost_total{%s}'
             '[$__range])))' % c], legend="{{namespace}} ({{currency}})",
            desc="Per namespace (project)." + NEEDS_RATING)
    b.panel("Cost this month by model", "bargauge",
            ['sort_desc(sum by (model, currency) (increase(meterd_cost_total{%s}[$__range])))'
             % c], legend="{{model}} ({{currency}})", desc=NEEDS_RATING.strip())
    b.panel("Daily cost by tenant", "timeseries",
            ['sum by (namespace, currency) (increase(meterd_cost_total{%s}[1d]))' % c],
            w=24, legend="{{namespace}} ({{currency}})",
            desc="Cost of the 24 hours before each point." + NEEDS_RATING,
            extra={"interval": "1d"})
    b.panel("Cost by tenant and department (range)", "table",
            ['sum by (namespace, department, model, currency) '
             '(increase(meterd_cost_total{%s}[$__range]))' % c], w=24, h=10,
            desc=NEEDS_RATING.strip())
    b.panel("Unpriced usage by tenant and model", "table",
            ['sum by (namespace, model, token_type) '
             '(increase(meterd_unpriced_tokens_total{%s}[$__range])) > 0' % F], w=24, h=8,
            desc="Add a pricing model for these models, then backfill." + NEEDS_RATING)
    return b.dump()


def health_board():
    b = Board("meterd-health", "meterd health", ["meterd"], time_from="now-6h")
    b.panel("Targets up", "stat", ['sum(meterd_target_up)', 'count(meterd_target_up)'],
            w=6, h=4, desc="Sidecar targets whose last scrape succeeded, of all targets.")
    b.panel("meterd instances up", "stat", ['count(meterd_build_info)'], w=6, h=4)
    b.panel("Store healthy", "stat", ['min(meterd_store_healthy)'], w=6, h=4,
            desc="0 when the last SQLite write transaction failed.")
    b.panel("Last reload successful", "stat", ['min(meterd_config_last_reload_successful)'],
            w=6, h=4)
    b.panel("Targets down", "table", ['meterd_target_up == 0'], w=24, h=6,
            desc="Empty when every target is up.")
    b.panel("Scrape duration by target", "timeseries",
            ['max by (target) (meterd_scrape_duration_seconds)'], legend="{{target}}", unit="s")
    b.panel("Scrape failures by reason", "timeseries",
            ['sum by (reason) (increase(meterd_scrape_failures_total[$__rate_interval]))'],
            legend="{{reason}}")
    b.panel("Dropped samples by reason", "timeseries",
            ['sum by (reason) (rate(meterd_samples_dropped_total[$__rate_interval]))'],
            legend="{{reason}}",
            desc="Samples not billed. other_family, histogram_bucket, count_not_input and "
                 "excluded_operation are expected by design; invalid_value, "
                 "stale_timestamp and too_large are not.")
    b.panel("Overflow series", "timeseries", ['max(meterd_overflow_series)'],
            legend="overflow series",
            desc="otel_metric_overflow series: the gateway's OTel SDK hit its cardinality "
                 "limit; their tokens go to the unattributed tenant.")
    b.panel("Store write latency (mean per commit)", "timeseries",
            ['sum(rate(meterd_store_write_seconds_total[$__rate_interval])) / '
             'sum(rate(meterd_store_commits_total[$__rate_interval]))'], unit="s",
            legend="seconds per commit")
    b.panel("Store commits and errors", "timeseries",
            [('sum(rate(meterd_store_commits_total[$__rate_interval]))', "commits/s"),
             ('sum(rate(meterd_store_errors_total[$__rate_interval]))', "errors/s"),
             ('sum(meterd_store_queue_depth)', "queue depth")])
    b.panel("Configuration reloads", "timeseries",
            [('sum(increase(meterd_config_reloads_total[$__rate_interval]))', "reloads"),
             ('sum(increase(meterd_config_reload_failures_total[$__rate_interval]))',
              "failed")])
    b.panel("Ledger resets and restarts", "timeseries",
            [('sum(increase(meterd_ledger_target_restarts_total[$__rate_interval]))',
              "target restarts"),
             ('sum(increase(meterd_ledger_anomalies_total[$__rate_interval]))', "anomalies"),
             ('sum(increase(meterd_ledger_rejected_scrapes_total[$__rate_interval]))',
              "rejected scrapes")])
    b.panel("/metrics series", "timeseries",
            [('max(meterd_metrics_series_exported)', "exported"),
             ('max(meterd_metrics_series_limit)', "limit"),
             ('sum(increase(meterd_metrics_series_cut_total[$__rate_interval]))', "cut")])
    b.panel("HTTP requests by route and code", "timeseries",
            ['sum by (path, code) (rate(meterd_http_requests_total[$__rate_interval]))'],
            legend="{{path}} {{code}}", unit="reqps")
    b.panel("HTTP clients refused or cut", "timeseries",
            [('sum(increase(meterd_auth_failures_total[$__rate_interval]))',
              "failed authentications"),
             ('sum(increase(meterd_http_connection_deadline_cuts_total[$__rate_interval]))',
              "connections cut at their deadline")],
            desc="Bad or missing bearer tokens, and connections closed because a request "
                 "took longer than http.connection_timeout to arrive (slow or stuck clients).")
    b.panel("Tokens committed", "timeseries",
            ['sum(rate(meterd_usage_tokens_committed_total[$__rate_interval]))'],
            legend="tokens/s")
    return b.dump()


if __name__ == "__main__":
    import sys
    if len(sys.argv) > 1:
        OUT = sys.argv[1]
    for fn in (usage_board, chargeback_board, health_board):
        print(fn())
