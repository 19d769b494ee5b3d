"""test_parse_cli.py: `meterd parse` end to end: the fixtures' exact totals
(typed in from the fixtures' README), classic and UTF-8 spellings give the
same normalised samples, the JSON shape of issue 3, and invalid input (exit 1,
FILE:LINE:COL: message on stderr, nothing on stdout after the error)."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

V04_CT = "text/plain; version=0.0.4; charset=utf-8; escaping=underscores"
UTF8_CT = "text/plain; version=0.0.4; charset=utf-8; escaping=allow-utf-8"
OM_CT = "application/openmetrics-text; version=1.0.0; charset=utf-8"

# README "Roll-up per department", v0.4 state: (department, token type) -> tokens
V04_DEPT = {
    ("eng", "input"): 48884, ("eng", "cached_input"): 14336, ("eng", "output"): 7375,
    ("finance", "input"): 1309552, ("finance", "cached_input"): 15840,
    ("finance", "output"): 2495,
    ("sales", "input"): 77870, ("sales", "cached_input"): 4096, ("sales", "output"): 7400,
    (None, "input"): 975, (None, "cached_input"): 0, (None, "output"): 212,
}
# README newest roll-up
NEWEST_DEPT = {
    ("eng", "input"): 48884, ("eng", "cached_input"): 14336,
    ("eng", "cache_creation_input"): 0, ("eng", "output"): 7375, ("eng", "reasoning"): 0,
    ("finance", "input"): 1333552, ("finance", "cached_input"): 15840,
    ("finance", "cache_creation_input"): 12000, ("finance", "output"): 2495,
    ("finance", "reasoning"): 0,
    ("sales", "input"): 77870, ("sales", "cached_input"): 4096,
    ("sales", "cache_creation_input"): 0, ("sales", "output"): 7400, ("sales", "reasoning"): 0,
    (None, "input"): 975, (None, "cached_input"): 0, (None, "cache_creation_input"): 0,
    (None, "output"): 212, (None, "reasoning"): 0,
}


def fixture(name):
    return os.path.join(harness.ARGS.source, "tests", "fixtures", "extproc", name)


def parse(args, stdin=None):
    p = subprocess.run([harness.ARGS.meterd, "parse"] + args, input=stdin,
                       capture_output=True, timeout=60)
    return p.returncode, p.stdout.decode("utf-8"), p.stderr.decode("utf-8")


def lines_json(out):
    return [json.loads(line) for line in out.splitlines()]


def test_v04_totals_raw_labels():
    rc, out, err = parse(["--content-type", V04_CT, fixture("extproc_v04_text.prom")])
    assert rc == 0, err
    samples = lines_json(out)
    assert len(samples) == 632, len(samples)
    got = {}
    for s in samples:
        assert set(s) <= {"name", "labels", "value"}, s
        if s["name"] != "gen_ai_client_token_usage_token_sum":
            continue
        key = (s["labels"].get("department_id"), s["labels"]["gen_ai_token_type"])
        got[key] = got.get(key, 0) + s["value"]
    assert got == V04_DEPT, got


def normalized(path, ct, dept_label):
    rc, out, err = parse(["--content-type", ct, "--normalize", "--dimension",
                          "department=" + dept_label, path])
    assert rc == 0, err
    return lines_json(out)


def dept_totals(samples):
    got = {}
    for s in samples:
        if s.get("instrument") != "gen_ai.client.token.usage" or s["role"] != "sum":
            continue
        key = (s.get("department"), s["token_type"])
        got[key] = got.get(key, 0) + s["value"]
    return got


def test_normalized_totals_all_fixtures():
    # the dimension is configured once, in one spelling, for every fixture
    v04 = normalized(fixture("extproc_v04_text.prom"), V04_CT, "department.id")
    utf8 = normalized(fixture("extproc_utf8.txt"), UTF8_CT, "department.id")
    newest = normalized(fixture("extproc_newest_text.prom"), V04_CT, "department_id")
    assert dept_totals(v04) == V04_DEPT, dept_totals(v04)
    assert dept_totals(utf8) == V04_DEPT, dept_totals(utf8)
    assert dept_totals(newest) == NEWEST_DEPT, dept_totals(newest)


def test_classic_and_utf8_identical_when_normalized():
    v04 = normalized(fixture("extproc_v04_text.prom"), V04_CT, "department.id")
    utf8 = normalized(fixture("extproc_utf8.txt"), UTF8_CT, "department.id")
    names = {s["name"] for s in utf8}
    assert "gen_ai.client.token.usage_token_sum" in names, sorted(names)[:5]

    def key(s):
        d = dict(s)
        del d["name"]   # the spelling as received differs, nothing else
        return json.dumps(d, sort_keys=True)

    a = sorted(key(s) for s in v04)
    b = sorted(key(s) for s in utf8)
    assert len(a) == 632
    assert a == b, next((x, y) for x, y in zip(a, b) if x != y)


def test_normalize_shape_and_defaults():
    rc, out, err = parse(["--normalize", fixture("extproc_newest_text.prom")])
    assert rc == 0, err
    samples = lines_json(out)
    s = next(x for x in samples if x["name"] == "gen_ai_client_token_usage_sum"
             and x["labels"].get("department.id") == "finance"
             and x["labels"]["gen_ai.operation.name"] == "messages"
             and x["labels"]["gen_ai.token.type"] == "input")
    assert s["value"] == 28610, s
    assert s["instrument"] == "gen_ai.client.token.usage", s
    assert s["role"] == "sum"
    assert s["model"] == "claude-3-5-haiku-20241022"
    assert s["provider"] == "anthropic"
    assert s["operation"] == "messages"
    assert s["token_type"] == "input"
    # EAIG default department label is "department": not this fixture's
    assert "department" not in s, s
    # normalised label names are canonical OTel names
    assert s["labels"]["department.id"] == "finance", s["labels"]
    assert s["labels"]["gen_ai.token.type"] == "input"
    info = next(x for x in samples if x["name"] == "target_info")
    assert info["instrument"] == "target_info" and info["role"] == "none", info
    assert info["labels"]["service.name"] == "unknown_service:app"


def test_values_timestamps_escapes():
    body = (b'# TYPE a gauge\na{b="x\\\\y\\"z\\n"} NaN 1700000000000\n'
            b'b +Inf\nc -Inf -5\nd 1.297632e+06\ne 28.683631999999996\n'
            b'{"f.g","h.i"="\xc3\xa9"} 0.1\n')
    rc, out, err = parse(["-"], stdin=body)
    assert rc == 0, err
    s = lines_json(out)
    assert s[0] == {"name": "a", "labels": {"b": 'x\\y"z\n'}, "value": "NaN",
                    "timestamp_ms": 1700000000000}, s[0]
    assert s[1] == {"name": "b", "labels": {}, "value": "+Inf"}, s[1]
    assert s[2] == {"name": "c", "labels": {}, "value": "-Inf", "timestamp_ms": -5}, s[2]
    assert s[3]["value"] == 1297632 and s[4]["value"] == 28.683631999999996, s[3:5]
    assert s[5] == {"name": "f.g", "labels": {"h.i": "\u00e9"}, "value": 0.1}, s[5]


def test_openmetrics_by_content_type_and_detection():
    body = b"# TYPE a counter\na_total 3 1520879607.789\n# EOF\n"
    for args in (["--content-type", OM_CT, "-"], ["--format", "openmetrics", "-"], ["-"]):
        rc, out, err = parse(args, stdin=body)
        assert rc == 0, (args, err)
        assert lines_json(out) == [{"name": "a_total", "labels": {}, "value": 3,
                                    "timestamp_ms": 1520879607789}], out
    # as text the OpenMetrics float timestamp is an error
    rc, out, err = parse(["--format", "text", "-"], stdin=body)
    assert rc == 1 and err.startswith("-:2:11: "), err
    # a truncated OpenMetrics body (no # EOF) is invalid
    rc, out, err = parse(["--content-type", OM_CT, "-"], stdin=body[:-6])
    assert rc == 1 and "EOF" in err, err


def test_escaping_from_content_type():
    body = (b'U__gen__ai_2e_client_2e_token_2e_usage__token_sum'
            b'{U__gen__ai_2e_token_2e_type="input"} 5\n')
    rc, out, err = parse(["--content-type", "text/plain; version=0.0.4; escaping=values", "-"],
                         stdin=body)
    assert rc == 0, err
    assert lines_json(out) == [{"name": "gen_ai.client.token.usage_token_sum",
                                "labels": {"gen_ai.token.type": "input"}, "value": 5}], out


def test_invalid_input_reports_position():
    body = b'a 1\nb{c="d"} 1\nb{c="e",c="f"} 2\nz 9\n'
    rc, out, err = parse(["-"], stdin=body)
    assert rc == 1, rc
    assert err == '-:3:9: duplicate label name "c"\n', repr(err)
    # streamed samples before the error only; nothing after it
    assert [s["name"] for s in lines_json(out)] == ["a", "b"], out
    path = fixture("extproc_v04_text.prom")
    with open(path, "rb") as f:
        data = f.read()
    cut = data[:data.index(b"\n", 5000) + 40]    # truncated mid-line
    line = cut.count(b"\n") + 1
    rc, out, err = parse(["-"], stdin=cut)
    assert rc == 1 and err.startswith("-:%d:" % line), (line, err)
    rc, out, err = parse(["-"], stdin=data.replace(b"\n", b"\r\n", 3))
    assert rc == 1 and err.startswith("-:1:") and "CRLF" in err, err


def test_usage_errors():
    assert parse([])[0] == 2
    assert parse(["--format", "xml", "-"])[0] == 2
    assert parse(["--content-type", V04_CT, "--format", "text", "-"])[0] == 2
    assert parse(["--bogus", "-"])[0] == 2
    rc, out, err = parse(["/nonexistent/file"])
    assert rc == 1 and "/nonexistent/file" in err, err
    rc, out, err = parse(["--help"])
    assert rc == 0 and "meterd parse" in out


if __name__ == "__main__":
    harness.main([
        test_v04_totals_raw_labels,
        test_normalized_totals_all_fixtures,
        test_classic_and_utf8_identical_when_normalized,
        test_normalize_shape_and_defaults,
        test_values_timestamps_escapes,
        test_openmetrics_by_content_type_and_detection,
        test_escaping_from_content_type,
        test_invalid_input_reports_position,
        test_usage_errors,
    ])
