"""test_costmgmt.py: the Cost Management compatible API
(/platform/cost.alauda.io/v1beta1/...) against hand-computed expectations.

meterd creates its database, stops; the test writes known hourly rows with
SQL, starts meterd again (no targets, no auth section) and checks kinds,
steps (day, week, month), items, paging, the project route and every error
as a Kubernetes Status.  The expected numbers below were added up by hand
from SEED and are written out literally, not computed by the test."""
import json
import os
import sqlite3
import sys
import calendar
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Meterd  # noqa: E402

CM = "/platform/cost.alauda.io/v1beta1"

DIMS = [
    # id, cluster, namespace, department, model, provider, operation, token_type
    (1, "c1", "alpha", "d1", "m1", "p", "chat", "input"),
    (2, "c1", "alpha", "d1", "m1", "p", "chat", "output"),
    (3, "c2", "alpha", "d1", "m1", "p", "chat", "input"),
    (4, "c1", "beta", "d2", "m1", "p", "chat", "input"),
    (5, "c1", "beta", "d2", "m1", "p", "chat", "cached_input"),
    (6, "c2", "gamma", "d3", "m1", "p", "chat", "output"),
]


def ts(y, mo, d, h=0):
    return calendar.timegm((y, mo, d, h, 0, 0))


SEED = [
    # hour, dim, tokens, requests
    (ts(2025, 5, 31, 23), 1, 999999, 1),   # before start: never counted
    (ts(2025, 6, 1, 0), 1, 100, 1),
    (ts(2025, 6, 1, 0), 2, 10, 0),
    (ts(2025, 6, 1, 23), 1, 5, 1),
    (ts(2025, 6, 2, 5), 3, 40, 1),
    (ts(2025, 6, 3, 7), 4, 0, 5),          # requests only: no item
    (ts(2025, 6, 8, 12), 4, 7, 1),         # Sunday
    (ts(2025, 6, 9, 0), 4, 3, 1),          # Monday
    (ts(2025, 6, 9, 0), 5, 2, 0),
    (ts(2025, 6, 30, 23), 6, 1000, 0),     # Monday
    (ts(2025, 7, 1, 0), 1, 200, 2),
    (ts(2025, 7, 2, 0), 2, 888, 0),        # after end: never counted
]

RANGE = {"start": "2025-06-01", "end": "2025-07-01"}


def seed(m):
    m.start()
    assert m.stop() == 0, m.log()
    con = sqlite3.connect(m.db)
    with con:
        con.executemany("INSERT INTO dims VALUES (?,?,?,?,?,?,?,?)", DIMS)
        con.executemany("INSERT INTO usage_hourly VALUES (?,?,?,?)", SEED)
    con.close()
    m.start()


def get(m, path, **params):
    q = urllib.parse.urlencode(params)
    r = m.get(CM + path + ("?" + q if q else ""))
    return r, (json.loads(r.body) if r.body else None)


def items(doc, *fields):
    return [tuple(it[f] for f in fields) for it in doc["items"]]


def ok(m, path="/costs/usage", **params):
    r, doc = get(m, path, **params)
    assert r.status == 200, (r.status, r.text)
    assert r.headers["Content-Type"] == "application/json", r.headers
    for it in doc["items"]:
        assert set(it) == {"project", "cluster", "namespace", "item", "method", "usage",
                           "currency", "cost", "start", "end"}, it
        assert it["method"] == "Usage" and it["cost"] is None and it["currency"] == "", it
    return doc


def check_status(r, code, reason, needle):
    doc = json.loads(r.body)
    assert r.status == code, (r.status, r.text)
    assert doc == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": doc["message"], "reason": reason, "code": code}, doc
    assert needle in doc["message"], (needle, doc)


def test_costmgmt_api():
    m = Meterd()
    try:
        seed(m)
        assert "are open to anyone" in m.log(), "no warning that the API is open"

        # default: step=month, kind=project_all, item=tokens.total, page 1 of 20
        doc = ok(m, **RANGE)
        assert (doc["pageSize"], doc["currentPage"], doc["total"]) == (20, 1, 4), doc
        assert items(doc, "project", "namespace", "cluster", "item", "usage", "start",
                     "end") == [
            ("alpha", "alpha", "", "tokens.total", 155, "20250601", "20250630"),
            ("beta", "beta", "", "tokens.total", 12, "20250601", "20250630"),
            ("gamma", "gamma", "", "tokens.total", 1000, "20250601", "20250630"),
            ("alpha", "alpha", "", "tokens.total", 200, "20250701", "20250701"),
        ], doc

        doc = ok(m, kind="namespace_all", **RANGE)
        assert items(doc, "cluster", "namespace", "project", "usage", "start") == [
            ("c1", "alpha", "alpha", 115, "20250601"), ("c1", "beta", "beta", 12, "20250601"),
            ("c2", "alpha", "alpha", 40, "20250601"), ("c2", "gamma", "gamma", 1000, "20250601"),
            ("c1", "alpha", "alpha", 200, "20250701"),
        ], doc
        doc = ok(m, kind="cluster_all", **RANGE)
        assert items(doc, "cluster", "namespace", "project", "usage", "start", "end") == [
            ("c1", "", "", 127, "20250601", "20250630"),
            ("c2", "", "", 1040, "20250601", "20250630"),
            ("c1", "", "", 200, "20250701", "20250701"),
        ], doc

        # step=day with one token item; the requests-only hour is not an item
        doc = ok(m, step="day", item="tokens.input", **RANGE)
        assert items(doc, "namespace", "item", "usage", "start", "end") == [
            ("alpha", "tokens.input", 105, "20250601", "20250601"),
            ("alpha", "tokens.input", 40, "20250602", "20250602"),
            ("beta", "tokens.input", 7, "20250608", "20250608"),
            ("beta", "tokens.input", 3, "20250609", "20250609"),
            ("alpha", "tokens.input", 200, "20250701", "20250701"),
        ], doc
        doc = ok(m, item="tokens.cached_input", **RANGE)
        assert items(doc, "namespace", "usage") == [("beta", 2)], doc
        doc = ok(m, item="tokens.output", kind="cluster_all", **RANGE)
        assert items(doc, "cluster", "usage") == [("c1", 10), ("c2", 1000)], doc

        # step=week: Monday to Sunday, clipped to [start, end]
        week = [
            ("alpha", 115, "20250601", "20250601"),
            ("alpha", 40, "20250602", "20250608"),
            ("beta", 7, "20250602", "20250608"),
            ("beta", 5, "20250609", "20250615"),
            ("alpha", 200, "20250630", "20250701"),
            ("gamma", 1000, "20250630", "20250701"),
        ]
        doc = ok(m, step="week", **RANGE)
        assert doc["total"] == 6 and items(doc, "namespace", "usage", "start", "end") == week

        # paging
        doc = ok(m, step="week", pageSize="4", currentPage="2", **RANGE)
        assert (doc["pageSize"], doc["currentPage"], doc["total"]) == (4, 2, 6), doc
        assert items(doc, "namespace", "usage", "start", "end") == week[4:], doc
        doc = ok(m, step="week", pageSize="4", currentPage="3", **RANGE)
        assert (doc["total"], doc["items"]) == (6, []), doc
        pages = []
        for p in range(1, 7):
            pages += items(ok(m, step="week", pageSize="1", currentPage=str(p), **RANGE),
                           "namespace", "usage", "start", "end")
        assert pages == week, pages

        # single-entity kinds need a name
        doc = ok(m, kind="project", name="beta", **RANGE)
        assert items(doc, "project", "usage") == [("beta", 12)], doc
        doc = ok(m, kind="cluster", name="c2", step="day", **RANGE)
        assert items(doc, "cluster", "usage", "start") == [
            ("c2", 40, "20250602"), ("c2", 1000, "20250630")], doc
        doc = ok(m, kind="namespace", name="alpha", **RANGE)
        assert items(doc, "cluster", "namespace", "usage", "start") == [
            ("c1", "alpha", 115, "20250601"), ("c2", "alpha", 40, "20250601"),
            ("c1", "alpha", 200, "20250701")], doc
        doc = ok(m, kind="project", name="nobody", **RANGE)
        assert (doc["total"], doc["items"]) == (0, []), doc

        # the project route
        doc = ok(m, "/projects/alpha/costs/usage", kind="namespace_all", **RANGE)
        assert items(doc, "cluster", "namespace", "usage", "start") == [
            ("c1", "alpha", 115, "20250601"), ("c2", "alpha", 40, "20250601"),
            ("c1", "alpha", 200, "20250701")], doc
        doc = ok(m, "/projects/alpha/costs/usage", **RANGE)
        assert items(doc, "project", "usage") == [("alpha", 155), ("alpha", 200)], doc
        doc = ok(m, "/projects/alpha/costs/usage", kind="project", name="beta", **RANGE)
        assert doc["items"] == [] and doc["total"] == 0, doc
        r1, _ = get(m, "/projects/beta-gone/costs/usage", **RANGE)
        r2, _ = get(m, "/projects/zzz/costs/usage", **RANGE)
        assert r1.status == 200 and r1.body == r2.body, (r1.body, r2.body)

        # a range inside one month (a single month bucket)
        doc = ok(m, start="2025-06-02", end="2025-06-09")
        assert items(doc, "namespace", "usage", "start", "end") == [
            ("alpha", 40, "20250602", "20250609"), ("beta", 12, "20250602", "20250609")], doc
        # a range of exactly 366 days is accepted (2024 is a leap year)
        ok(m, start="2024-01-01", end="2024-12-31")

        # errors: Kubernetes Status objects, 400 naming the parameter
        bad = [
            ({"end": "2025-07-01"}, "start: required"),
            ({"start": "2025-06-01"}, "end: required"),
            ({"start": "2025-6-1", "end": "2025-07-01"}, "start: expected a date"),
            ({"start": "2025-06-31", "end": "2025-07-01"}, "start: expected a date"),
            ({"start": "2025-07-02", "end": "2025-07-01"}, "end: must not be before start"),
            ({"start": "2025-01-01", "end": "2026-01-02"}, "longer than 366 days"),
            (dict(RANGE, step="year"), "step:"),
            (dict(RANGE, kind="pod"), "kind:"),
            (dict(RANGE, kind="project"), "name: required"),
            (dict(RANGE, item="Cpu"), "item:"),
            (dict(RANGE, method="Request"), "method: must be Usage"),
            (dict(RANGE, pageSize="1001"), "pageSize:"),
            (dict(RANGE, pageSize="0"), "pageSize:"),
            (dict(RANGE, pageSize="-1"), "pageSize:"),
            (dict(RANGE, currentPage="0"), "currentPage:"),
            (dict(RANGE, currentPage="1x"), "currentPage:"),
            (dict(RANGE, page="2"), "page: unknown query parameter"),
        ]
        for params, needle in bad:
            r, _ = get(m, "/costs/usage", **params)
            check_status(r, 400, "BadRequest", needle)
        r = m.get(CM + "/costs/usage?start=2025-06-01&end=2025-07-01&start=2025-06-02")
        check_status(r, 400, "BadRequest", "more than once")
        r = m.request("POST", CM + "/costs/usage?start=2025-06-01&end=2025-07-01", body=b"")
        check_status(r, 405, "MethodNotAllowed", "GET")
        assert r.headers.get("Allow") == "GET, HEAD", r.headers
        r = m.get(CM + "/costs/other")
        check_status(r, 404, "NotFound", "no such endpoint")
        r = m.get(CM + "/projects/a/b/costs/usage?start=2025-06-01&end=2025-06-02")
        check_status(r, 404, "NotFound", "no such endpoint")
        # the maximum page size is served
        doc = ok(m, pageSize="1000", step="day", **RANGE)
        assert doc["pageSize"] == 1000 and doc["total"] == 6, doc
        assert items(doc, "namespace", "usage", "start") == [
            ("alpha", 115, "20250601"), ("alpha", 40, "20250602"), ("beta", 7, "20250608"),
            ("beta", 5, "20250609"), ("gamma", 1000, "20250630"), ("alpha", 200, "20250701")]
        assert m.stop() == 0, m.log()
    finally:
        m.cleanup()


if __name__ == "__main__":
    harness.main([test_costmgmt_api])
