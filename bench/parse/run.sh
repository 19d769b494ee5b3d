#!/bin/sh
# run.sh [MB] [RUNS]: the parser throughput benchmark of issue 3.
#   1. generates a realistic EAIG v0.4-shaped exposition of MB megabytes
#      (default 100; cached in $BENCH_DIR, default /tmp/meterd-bench),
#      and the same exposition in the allow-utf-8 spelling (quoted names),
#      and a worst case for the parser's line-to-line reuse,
#   2. builds bench_parse with -O2 from the sources (no sanitizers),
#   3. runs it RUNS times (default 5): memchr newline scan, reused parser,
#      fresh parser, medians, allocations per sample,
#   4. runs Debian's python3-prometheus-client text parser on the same file
#      (3 runs, median) with /usr/bin/python3.
# Not part of `make test`.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
mb=${1:-100}
runs=${2:-5}
dir=${BENCH_DIR:-/tmp/meterd-bench}
mkdir -p "$dir"
file=$dir/eaig_${mb}mb.prom
[ -s "$file" ] || python3 "$here/gen.py" "$file" "$mb"
ufile=$dir/eaig_${mb}mb_utf8.txt
[ -s "$ufile" ] || python3 "$here/gen.py" "$ufile" "$mb" utf8
wfile=$dir/worst_${mb}mb.prom
[ -s "$wfile" ] || python3 "$here/gen.py" "$wfile" "$mb" unique
${CC:-cc} -O2 -std=c11 -D_DEFAULT_SOURCE -I "$root/meterd" -I "$root" \
    "$here/bench_parse.c" "$root/meterd/expfmt.c" "$root/meterd/util.c" \
    -lm -lpthread -o "$dir/bench_parse"
echo "host: $(nproc) cores, $(uname -m), $(${CC:-cc} --version | head -n 1)"
"$dir/bench_parse" "$file" "$runs"
echo
echo "same exposition, allow-utf-8 spelling (quoted dotted names):"
"$dir/bench_parse" "$ufile" "$runs"
echo
echo "worst case for line-to-line reuse (first label differs on every line):"
"$dir/bench_parse" "$wfile" "$runs"
echo
if /usr/bin/python3 -c 'import prometheus_client' 2>/dev/null; then
    /usr/bin/python3 "$here/py_parse.py" "$file" 3
else
    echo "(python3-prometheus-client missing: apt-get install -y python3-prometheus-client)"
fi
