#!/bin/sh
# test.sh BUILD ASAN_BUILD: build both configurations and run every test in
# each; prints one closing line "N passed, N failed" over both runs.
set -u
build=$1
asan=$2
jobs=$(nproc 2>/dev/null || echo 2)
passed=0
failed=0

run_suite() {
    dir=$1
    log=$dir/ctest.log
    (cd "$dir" && ctest --output-on-failure -j "$jobs" --timeout 900 -LE long) 2>&1 | tee "$log"
    p=$(sed -n 's/.*tests passed, \([0-9]*\) tests failed out of \([0-9]*\).*/\2 \1/p' "$log" | tail -n 1)
    if [ -z "$p" ]; then
        failed=$((failed + 1))
        return
    fi
    set -- $p
    passed=$((passed + $1 - $2))
    failed=$((failed + $2))
}

echo "== build ($build): gcc, -Werror"
if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S . -B "$build" -DMD_WERROR=ON || exit 1
fi
cmake --build "$build" -j "$jobs" || { echo "0 passed, 1 failed"; exit 1; }
run_suite "$build"

echo "== build ($asan): clang, AddressSanitizer + UndefinedBehaviorSanitizer, libFuzzer"
if [ ! -f "$asan/CMakeCache.txt" ]; then
    CC=clang cmake -S . -B "$asan" -DMD_WERROR=ON -DCMAKE_BUILD_TYPE=Debug \
        -DMD_SANITIZE=address,undefined -DMD_FUZZ=ON || exit 1
fi
cmake --build "$asan" -j "$jobs" || { echo "$passed passed, $((failed + 1)) failed"; exit 1; }
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 run_suite "$asan"

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
