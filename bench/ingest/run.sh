#!/bin/sh
# bench/ingest/run.sh: CPU seconds per million samples and resident memory per
# active series for meterd, Prometheus and VictoriaMetrics scraping the same
# extproc-sim targets, one system at a time (issue 4, "Performance").
#
#   bench/ingest/run.sh [BUILD_DIR]        (default: ./build, a RelWithDebInfo build)
#
# Environment (defaults): SCALES=200,50,500 RUNS=3 WARMUP=15 WINDOW=45
#   INTERVAL=2 OUT=bench/ingest/results-<UTC timestamp>.jsonl
#   SYSTEMS=meterd,meterd-identity,prometheus,victoriametrics,victoriametrics-identity
#   METERD_BASE=path of another meterd binary, for the system meterd-base (a
#   before/after comparison in the same run, interleaved with the others)
#   (the -identity variants scrape without gzip: meterd scrape.compression:
#   identity, VictoriaMetrics disable_compression: true; Prometheus 2.42 has
#   no way to turn gzip off)
# Needs: /usr/bin/prometheus (Debian prometheus 2.42) and
# /usr/bin/victoria-metrics (apt-get install -y victoria-metrics, 1.79).
# Writes JSON lines to $OUT, then prints the Markdown table (summarize.py).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build}
# absolute: the scrapers run in their own temporary directories
build=$(cd "$build" && pwd)
[ -x "$build/meterd" ] && [ -x "$build/extproc-sim" ] || {
    echo "run.sh: build first: cmake -S . -B build && cmake --build build -j2" >&2; exit 2; }
[ -x /usr/bin/prometheus ] || { echo "run.sh: /usr/bin/prometheus missing" >&2; exit 2; }
[ -x /usr/bin/victoria-metrics ] || {
    echo "run.sh: apt-get install -y victoria-metrics" >&2; exit 2; }
out=${OUT:-$here/results-$(date -u +%Y%m%dT%H%M%SZ).jsonl}
echo "run.sh: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), results in $out" >&2
python3 "$here/bench.py" --build "$build" --scales "${SCALES:-200,50,500}" \
    --runs "${RUNS:-3}" --warmup "${WARMUP:-15}" --window "${WINDOW:-45}" \
    --interval "${INTERVAL:-2}" --out "$out" ${METERD_BASE:+--meterd-base "$METERD_BASE"} \
    --systems "${SYSTEMS:-meterd,meterd-identity,prometheus,victoriametrics,victoriametrics-identity}"
python3 "$here/summarize.py" "$out"
