#!/usr/bin/python3
"""py_parse.py FILE [RUNS]: Debian's python3-prometheus-client text parser
(prometheus_client.parser.text_string_to_metric_families) on FILE; prints
the median MB/s and samples/s over RUNS (default 3).  Run with /usr/bin/python3
(Debian's module), not a pyenv interpreter."""
import statistics
import sys
import time

from prometheus_client.parser import text_string_to_metric_families


def main():
    path = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with open(path, encoding="utf-8") as f:
        text = f.read()
    size = len(text.encode("utf-8"))
    times = []
    n = 0
    for _ in range(runs):
        t0 = time.monotonic()
        n = 0
        for fam in text_string_to_metric_families(text):
            n += len(fam.samples)
        times.append(time.monotonic() - t0)
    t = statistics.median(times)
    try:
        from importlib.metadata import version
        ver = version("prometheus_client")
    except Exception:  # noqa: BLE001 - the version is only a label
        ver = "?"
    print("| Python prometheus_client %s text_string_to_metric_families | %.1f | %.3g | - | - |"
          % (ver, size / 1e6 / t, n / t))


if __name__ == "__main__":
    main()
