"""test_openapi.py: schema/openapi.yaml is valid (redocly lint, no error and
no warning), documents exactly the paths meterd serves (`meterd routes`),
every documented path answers (not 404) on a running meterd, and real answers
carry the fields the schemas require.  redocly comes from npm through
scripts/redocly.sh; when it cannot be installed the test FAILS."""
import json
import re
import os
import subprocess
import sys
import tempfile
import hashlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Meterd  # noqa: E402

TOKEN = "openapi-admin-token"


def redocly(*args):
    cmd = [os.path.join(harness.ARGS.source, "scripts", "redocly.sh"), harness.ARGS.build] + \
        list(args)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return p.returncode, p.stdout + p.stderr


def load_schema(tmp):
    out = os.path.join(tmp, "openapi.json")
    rc, text = redocly("bundle", os.path.join(harness.ARGS.source, "schema", "openapi.yaml"),
                       "--dereferenced", "--ext", "json", "-o", out)
    assert rc == 0, "redocly bundle failed:\n" + text
    with open(out) as f:
        return json.load(f)


def test_lint():
    rc, text = redocly("lint", os.path.join(harness.ARGS.source, "schema", "openapi.yaml"))
    assert rc == 0, "redocly lint failed:\n" + text
    # the Node.js deprecation banner is not about the document
    problems = re.findall(r"You have \d+ (?:warning|error)s?", text)
    assert "Your API description is valid" in text and not problems, text


def check_fields(doc, schema, where):
    """required fields present, no field the schema does not list"""
    req = set(schema.get("required", []))
    props = set(schema.get("properties", {}))
    assert req <= set(doc), (where, req - set(doc))
    assert set(doc) <= props, (where, set(doc) - props)


def test_documented_equals_served():
    tmp = tempfile.mkdtemp(prefix="openapi-")
    spec = load_schema(tmp)
    documented = set(spec["paths"])
    served = set(subprocess.run([harness.ARGS.meterd, "routes"], capture_output=True,
                                text=True, check=True).stdout.split())
    assert documented == served, ("documented but not served", documented - served,
                                  "served but not documented", served - documented)
    m = Meterd(extra_yaml="auth:\n  tokens:\n    - {name: ops, sha256: \"%s\", scope: admin}\n"
               "pricing:\n  file: %s\n"
               % (hashlib.sha256(TOKEN.encode()).hexdigest(),
                  os.path.join(harness.ARGS.source, "config", "pricing.yaml")))
    try:
        m.start()
        auth = {"Authorization": "Bearer " + TOKEN}
        answers = {}
        for path, item in spec["paths"].items():
            if "get" not in item:
                # POST-only admin routes: a GET is 405 with Allow, and without
                # a token 401 (the scope is checked before the method)
                op = item.get("post") or item.get("put")
                url = path.replace("{month}", "2026-01")
                r = m.get(url, headers=auth)
                assert r.status == 405 and "405" in op["responses"], (path, r.status, r.text)
                assert m.get(url).status == 401, path
                answers[path] = r
                continue
            op = item["get"]
            q = []
            for prm in op.get("parameters", []):
                if prm.get("required") and prm["in"] == "query":
                    q.append("%s=%s" % (prm["name"], prm["schema"]["example"]))
            url = path.replace("{project}", "team-x") + ("?" + "&".join(q) if q else "")
            r = m.get(url, headers=auth)
            assert r.status != 404, (path, r.status, r.text)
            assert str(r.status) in op["responses"], (path, r.status, "not documented")
            answers[path] = r
            # every non-open path documents 401, and really answers it
            if "401" in op["responses"] and path not in ("/healthz", "/readyz", "/metrics"):
                r = m.get(url)
                assert r.status == 401, (path, r.status)
        assert m.get("/undocumented", headers=auth).status == 404
        schemas = spec["components"]["schemas"]
        cm = json.loads(answers["/platform/cost.alauda.io/v1beta1/costs/usage"].body)
        assert answers["/platform/cost.alauda.io/v1beta1/costs/usage"].status == 200, cm
        check_fields(cm, schemas["CostUsageResponse"], "CostUsageResponse")
        usage = json.loads(answers["/api/v1/usage"].body)
        check_fields(usage, schemas["Usage"], "Usage")
        check_fields(json.loads(answers["/api/v1/targets"].body), schemas["Targets"], "Targets")
        r = m.get("/platform/cost.alauda.io/v1beta1/costs/usage?start=x&end=y", headers=auth)
        check_fields(json.loads(r.body), schemas["Status"], "Status")
        r = m.get("/api/v1/usage?bogus=1", headers=auth)
        check_fields(json.loads(r.body), schemas["ApiError"], "ApiError")
        assert m.stop() == 0
    finally:
        m.cleanup()


if __name__ == "__main__":
    harness.main([test_lint, test_documented_equals_served])
