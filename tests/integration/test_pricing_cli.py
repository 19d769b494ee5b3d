"""test_pricing_cli.py: `meterd pricing check|show|import` through the real
binary: the shipped config/pricing.yaml is valid, errors come as
FILE:LINE:COL with exit 1, the canonical JSON has exact decimal strings, and
the LiteLLM import reproduces the hand-written expected YAML byte for byte."""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def run(*args, stdin=None):
    return subprocess.run([harness.ARGS.meterd] + list(args), capture_output=True,
                          input=stdin, timeout=30)


def src(*parts):
    return os.path.join(harness.ARGS.source, *parts)


def test_check_shipped_example():
    p = run("pricing", "check", src("config", "pricing.yaml"))
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().endswith(": ok (1 pricing models)\n"), p.stdout
    # meterd.yaml names the pricing file and still validates
    p = run("check-config", "-c", src("config", "meterd.yaml"))
    assert p.returncode == 0, p.stderr


def test_check_reports_every_error():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bad.yaml")
        with open(path, "w") as f:
            f.write("pricing_models:\n"
                    "  - name: a\n"
                    "    currency: usd\n"
                    "    clusters: [c1]\n"
                    "    effective_from: 2026-01-01\n"
                    "    items:\n"
                    "      - models: [x]\n"
                    "        per_million: {input: \"0.1234567891\", totl: \"1\"}\n")
        p = run("pricing", "check", path)
        assert p.returncode == 1, p.returncode
        lines = p.stderr.decode().splitlines()
        assert lines == [
            path + ":3:15: pricing_models[0].currency: \"usd\": not an ISO 4217 code "
                   "(3 letters A-Z, e.g. USD)",
            path + ":8:30: pricing_models[0].items[0].per_million.input: \"0.1234567891\": "
                   "price more than 9 decimals",
            path + ":8:46: pricing_models[0].items[0].per_million.totl: unknown key",
        ], lines
        p = run("pricing", "check", os.path.join(d, "missing.yaml"))
        assert p.returncode == 1 and b"cannot open" in p.stderr, p.stderr


def test_show_canonical_json():
    p = run("pricing", "show", src("config", "pricing.yaml"))
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    m = doc["pricing_models"][0]
    assert m["name"] == "list-2026" and m["currency"] == "USD", m
    assert m["clusters"] == ["local"] and m["effective_from"] == "2026-01-01", m
    assert m["cache_included_in_input"] is True
    assert m["adjustments"] == [{"namespace": "team-b", "percent": "-10"}], m
    first = m["items"][0]
    assert first == {"models": ["gpt-4o-mini*"],
                     "per_million": {"input": "0.15", "cached_input": "0.075",
                                     "output": "0.6"}}, first
    # the JSON is itself a valid pricing document with the same canonical form
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "p.json")
        with open(path, "wb") as f:
            f.write(p.stdout)
        q = run("pricing", "show", path)
        assert q.returncode == 0, q.stderr
        assert q.stdout == p.stdout


def test_import_litellm():
    fx = src("tests", "fixtures", "litellm")
    p = run("pricing", "import", "--litellm", os.path.join(fx, "prices.json"),
            "--name", "litellm-test", "--cluster", "local", "--cluster", "prod",
            "--currency", "USD", "--effective-from", "2026-02-01")
    assert p.returncode == 0, p.stderr
    with open(os.path.join(fx, "prices.expected.yaml"), "rb") as f:
        want = f.read()
    assert p.stdout == want, p.stdout.decode()
    assert b"9 models imported, 2 entries without a token price skipped" in p.stderr, p.stderr
    # the output is accepted by `pricing check`
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "imported.yaml")
        with open(path, "wb") as f:
            f.write(p.stdout)
        q = run("pricing", "check", path)
        assert q.returncode == 0, q.stderr


def test_import_refusals():
    fx = src("tests", "fixtures", "litellm", "prices.json")
    p = run("pricing", "import", "--litellm", fx)
    assert p.returncode == 2 and b"--cluster" in p.stderr, p.stderr
    p = run("pricing", "import", "--litellm", fx, "--cluster", "c", "--currency", "usd")
    assert p.returncode == 2 and b"ISO 4217" in p.stderr, p.stderr
    p = run("pricing", "import", "--litellm", fx, "--cluster", "c",
            "--effective-from", "2026-02-30")
    assert p.returncode == 2 and b"YYYY-MM-DD" in p.stderr, p.stderr
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.json")
        with open(path, "w") as f:
            f.write('{"m": {"input_cost_per_token": 1.23456789e-9}}')
        p = run("pricing", "import", "--litellm", path, "--cluster", "c")
        assert p.returncode == 1, p.returncode
        assert b"\"m\": input_cost_per_token:" in p.stderr and b"more than 9" in p.stderr, \
            p.stderr
        assert p.stdout == b""
    p = run("pricing", "frobnicate")
    assert p.returncode == 2


if __name__ == "__main__":
    harness.main([test_check_shipped_example, test_check_reports_every_error,
                  test_show_canonical_json, test_import_litellm, test_import_refusals])
