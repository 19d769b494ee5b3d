#!/usr/bin/env python3
"""bench/ingest/summarize.py RESULTS.jsonl [...]: the Markdown table of a
bench.py run: medians over runs per (scale, system), and meterd's ratio to the
better peer (lower is better on both metrics)."""
import json
import statistics
import sys

PEERS = ("prometheus", "victoriametrics", "victoriametrics-identity")
MINE = ("meterd-base", "meterd", "meterd-identity")
ORDER = [*MINE, *PEERS]


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main(paths):
    rows = {}
    for p in paths:
        with open(p) as f:
            for line in f:
                r = json.loads(line)
                if "system" not in r:
                    continue
                rows.setdefault((r["targets"], r["system"]), []).append(r)
    out = []
    out.append("| targets | system | runs | samples/s | CPU s per 1M samples | own counter / "
               "sim count | RSS MiB | active series (own count) | series exposed | "
               "bytes per active series | bytes per exposed series | load (1 min) |")
    out.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    summary = {}
    for (n, system) in sorted(rows, key=lambda k: (k[0], ORDER.index(k[1]))):
        rs = rows[(n, system)]
        cpu = med([r["cpu_per_msample"] for r in rs])
        rate = med([r["sim_samples"] / r["window_s"] for r in rs])
        cross = med([r["own_samples"] / r["sim_samples"] for r in rs if r["sim_samples"]])
        rss = med([r["rss_kb"] for r in rs])
        series = med([r["own_series"] for r in rs])
        exposed = med([r["body_samples_after"] for r in rs])
        bps = med([r["rss_kb"] * 1024 / r["own_series"] for r in rs if r["own_series"]])
        bpe = med([r["rss_kb"] * 1024 / r["body_samples_after"] for r in rs])
        load = med([r["load"][0] for r in rs])
        summary[(n, system)] = {"cpu": cpu, "bps": bps, "bpe": bpe, "rss": rss,
                                "series": series, "exposed": exposed}
        out.append("| %d | %s | %d | %.0f | %.2f | %.3f | %.1f | %d | %d | %.0f | %.0f | %.1f |" % (
            n, system, len(rs), rate, cpu, cross, rss / 1024, series, exposed, bps, bpe, load))
    out.append("")
    out.append("| targets | CPU: meterd / better peer | memory per active series: meterd / "
               "better peer | memory per exposed series: meterd / better peer |")
    out.append("|---:|---:|---:|---:|")
    # each meterd mode against the better of the peers measured in the run
    # (VictoriaMetrics with and without compression, Prometheus with gzip)
    out[-2] = out[-2].replace("| targets |", "| targets | meterd |", 1)
    out[-1] = "|---:|---|---:|---:|---:|"
    for n in sorted({k[0] for k in summary}):
        peers = [summary[(n, p)] for p in PEERS if (n, p) in summary]
        for mine in MINE:
            m = summary.get((n, mine))
            if m is None or not peers:
                continue
            best_cpu = min(p["cpu"] for p in peers)
            best_bps = min(p["bps"] for p in peers)
            best_bpe = min(p["bpe"] for p in peers)
            out.append("| %d | %s | %.2f (%.2f / %.2f) | %.2f (%.0f / %.0f B) | "
                       "%.3f (%.0f / %.0f B) |" % (
                           n, mine, m["cpu"] / best_cpu, m["cpu"], best_cpu,
                           m["bps"] / best_bps, m["bps"], best_bps,
                           m["bpe"] / best_bpe, m["bpe"], best_bpe))
    # marginal memory: the RSS slope between the smallest and the largest
    # scale, free of each process's fixed cost (code, libraries, caches)
    out.append("")
    out.append("| system | scales | marginal bytes per active series | marginal bytes per "
               "exposed series |")
    out.append("|---|---|---:|---:|")
    for system in ORDER:
        ns = sorted(n for (n, s2) in summary if s2 == system)
        if len(ns) < 2:
            continue
        lo, hi = summary[(ns[0], system)], summary[(ns[-1], system)]
        d = (hi["rss"] - lo["rss"]) * 1024
        out.append("| %s | %d -> %d | %.0f | %.0f |" % (
            system, ns[0], ns[-1], d / (hi["series"] - lo["series"]),
            d / (hi["exposed"] - lo["exposed"])))
    print("\n".join(out))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: summarize.py RESULTS.jsonl [...]")
    main(sys.argv[1:])
