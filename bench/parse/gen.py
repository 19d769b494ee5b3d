#!/usr/bin/env python3
"""gen.py OUT [MB] [utf8|unique]: writes a realistic EAIG v0.4-shaped exposition of
about MB megabytes (default 100): the token and duration histograms over many
departments, models, providers and operations, sorted like client_golang,
values printed like Go's FormatFloat('g', -1).  Names are underscored, or with
`utf8` quoted and dotted as EAIG v0.4 answers an allow-utf-8 scraper
(extproc_utf8.txt); `unique` writes the worst case for the parser's
line-to-line reuse instead (see unique()).  Deterministic (fixed seed), so runs compare."""
import random
from decimal import Decimal
import sys

TOKEN_BOUNDS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576,
                4194304, 16777216, 67108864]
DUR_BOUNDS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24,
              20.48, 40.96, 81.92]


def gofmt(v):
    """Go strconv.FormatFloat(v, 'g', -1, 64): shortest digits, exponent
    form when the exponent is < -4 or >= 21 for %v... for 'g' with precision
    -1 the switch is at exponent >= 21 only in %v; FormatFloat('g', -1) uses
    eprec 6 when shortest, hence 1.297632e+06 (FACTS.md 6.4)."""
    if v == 0:
        return "0"
    d = Decimal(repr(float(v))).normalize()
    sign, digs, e = d.as_tuple()
    ds = "".join(map(str, digs))
    exp = len(ds) - 1 + e
    if exp < -4 or exp >= 21 or exp >= 6:
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return "%s%se%s%02d" % ("-" if sign else "", mant, "+" if exp >= 0 else "-", abs(exp))
    return format(d, "f")


def unique(out, target):
    """worst case for reuse between lines: gauges whose FIRST label differs on
    every line (EAIG's own label order puts department first, but its
    histogram lines share everything up to le)"""
    rnd = random.Random(1)
    n = i = 0
    with open(out, "w") as f:
        f.write("# TYPE m gauge\n")
        while n < target:
            s = ('m{id="%08d",department_id="dept-%03d",gen_ai_operation_name="chat",'
                 'gen_ai_original_model="gpt-4o-mini",gen_ai_provider_name="openai",'
                 'gen_ai_request_model="gpt-4o-mini",gen_ai_response_model='
                 '"gpt-4o-mini-2024-07-18",gen_ai_token_type="input",otel_scope_name='
                 '"envoyproxy/ai-gateway",otel_scope_schema_url="",otel_scope_version=""} %d\n'
                 % (i, i % 400, rnd.randint(0, 10 ** 6)))
            f.write(s)
            n += len(s)
            i += 1
    print("%s: %d samples" % (out, i), file=sys.stderr)


def main():
    out = sys.argv[1]
    target = int(float(sys.argv[2]) * 1e6) if len(sys.argv) > 2 else 100_000_000
    if len(sys.argv) > 3 and sys.argv[3] == "unique":
        unique(out, target)
        return
    rnd = random.Random(42)
    depts = ["dept-%03d" % i for i in range(400)]
    models = [("gpt-4o-mini", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai", "chat"),
              ("claude-sonnet", "anthropic.claude-3-5-sonnet-20240620-v1:0",
               "anthropic.claude-3-5-sonnet-20240620-v1:0", "aws.bedrock", "chat"),
              ("text-embedding-3-small", "text-embedding-3-small", "text-embedding-3-small",
               "openai", "embeddings"),
              ("claude-3-5-haiku-20241022", "claude-3-5-haiku-20241022",
               "claude-3-5-haiku-20241022", "default/anthropic/route/claude-messages/rule/0/ref/0",
               "messages")]
    scope = 'otel_scope_name="envoyproxy/ai-gateway",otel_scope_schema_url="",otel_scope_version=""'
    n = 0
    with open(out, "w") as f:
        def fam(name, help_, series_fn, bounds):
            nonlocal n
            f.write("# HELP %s %s\n# TYPE %s histogram\n" % (name, help_, name))
            for labels, obs in series_fn():
                cum = 0
                counts = [0] * (len(bounds) + 1)
                for o in obs:
                    i = 0
                    while i < len(bounds) and o > bounds[i]:
                        i += 1
                    counts[i] += 1
                for i, b in enumerate(bounds):
                    cum += counts[i]
                    f.write('%s_bucket{%s,le="%s"} %d\n' % (name, labels, gofmt(b), cum))
                cum += counts[-1]
                f.write('%s_bucket{%s,le="+Inf"} %d\n' % (name, labels, cum))
                f.write('%s_sum{%s} %s\n' % (name, labels, gofmt(sum(obs))))
                f.write('%s_count{%s} %d\n' % (name, labels, len(obs)))
                n += len(bounds) + 3
                if f.tell() >= target:
                    return True
            return False

        def token_series():
            rep = 0
            while True:
                for d in depts:
                    for (orig, req, resp, prov, op) in models:
                        for tt in (["input"] if op == "embeddings" else
                                   ["cached_input", "input", "output"]):
                            lab = ('department_id="%s",gen_ai_operation_name="%s",'
                                   'gen_ai_original_model="%s",gen_ai_provider_name="%s",'
                                   'gen_ai_request_model="%s",gen_ai_response_model="%s",'
                                   'gen_ai_token_type="%s",%s' % (
                                       d + ("" if rep == 0 else "-%d" % rep), op, orig, prov,
                                       req, resp, tt, scope))
                            obs = [rnd.randint(0, 20000) for _ in range(rnd.randint(1, 6))]
                            yield lab, obs
                rep += 1

        def dur_series():
            rep = 0
            while True:
                for d in depts:
                    for (orig, req, resp, prov, op) in models:
                        lab = ('department_id="%s",gen_ai_operation_name="%s",'
                               'gen_ai_original_model="%s",gen_ai_provider_name="%s",'
                               'gen_ai_request_model="%s",gen_ai_response_model="%s",%s' % (
                                   d + ("" if rep == 0 else "-%d" % rep), op, orig, prov, req,
                                   resp, scope))
                        obs = [rnd.random() * 30 for _ in range(rnd.randint(1, 6))]
                        yield lab, obs
                rep += 1

        # duration first (alphabetical order: client < server), then tokens
        # take 85 % of the size, duration the rest
        full_target = target
        target = int(full_target * 0.85)
        fam("gen_ai_client_token_usage_token", "Number of tokens processed.", token_series,
            TOKEN_BOUNDS)
        target = full_target
        fam("gen_ai_server_request_duration_seconds",
            "Generative AI server request duration such as time-to-last byte or last output "
            "token.", dur_series, DUR_BOUNDS)
        f.write('# HELP target_info Target metadata\n# TYPE target_info gauge\n')
        f.write('target_info{service_name="unknown_service:app",telemetry_sdk_language="go",'
                'telemetry_sdk_name="opentelemetry",telemetry_sdk_version="1.38.0"} 1\n')
        n += 1
    if len(sys.argv) > 3 and sys.argv[3] == "utf8":
        to_utf8(out)
    print("%s: %d samples" % (out, n), file=sys.stderr)


UTF8_LABELS = ["department_id", "gen_ai_operation_name", "gen_ai_original_model",
               "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_response_model",
               "gen_ai_token_type"]


def utf8_name(n):
    for fam, dotted in (("gen_ai_client_token_usage_token", "gen_ai.client.token.usage_token"),
                        ("gen_ai_server_request_duration_seconds",
                         "gen_ai.server.request.duration_seconds")):
        if n.startswith(fam):
            return dotted + n[len(fam):]
    return n


def to_utf8(path):
    """rewrites the file in the allow-utf-8 spelling (FACTS.md 6.3)"""
    with open(path) as f:
        lines = f.read().split("\n")
    out = []
    for line in lines:
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if parts[2].startswith("gen_ai"):
                parts[2] = '"%s"' % utf8_name(parts[2])
            out.append(" ".join(parts))
            continue
        name, rest = line.split("{", 1)
        if not name.startswith("gen_ai"):
            out.append(line)
            continue
        for k in UTF8_LABELS:
            rest = rest.replace(k + "=", '"%s"=' % k.replace("_id", ".id").replace(
                "gen_ai_", "gen_ai.").replace("_name", ".name").replace(
                "_model", ".model").replace("_type", ".type").replace(
                "operation_", "operation.").replace("provider_", "provider.").replace(
                "token_", "token."))
        out.append('{"%s",%s' % (utf8_name(name), rest))
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
