#!/bin/sh
# smoke.sh FUZZER CORPUS WORKDIR SECONDS: a short libFuzzer run seeded from
# the committed corpus; fails on any crash, leak, timeout (1 s) or RSS over
# 256 MiB.  New inputs go to WORKDIR, the committed corpus stays untouched.
set -u
fuzzer=$1
corpus=$2
work=$3
secs=$4
mkdir -p "$work/corpus" "$work/artifacts"
# ASan keeps freed memory in a 256 MiB quarantine by default, which alone
# would cross the RSS limit below; a small one still catches use-after-free
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=16"
"$fuzzer" -max_total_time="$secs" -timeout=1 -rss_limit_mb=256 -max_len=65536 \
    -artifact_prefix="$work/artifacts/" -print_final_stats=1 \
    "$work/corpus" "$corpus" > "$work/fuzz.log" 2>&1
rc=$?
tail -n 12 "$work/fuzz.log"
if [ $rc -ne 0 ]; then
    echo "0 passed, 1 failed: fuzzer exited $rc; artifacts in $work/artifacts"
    exit 1
fi
echo "1 passed, 0 failed"
