#!/bin/sh
# deps.sh: install the Debian packages meterd needs to build, run and test,
# only when some are missing.  Called by `make run` and `make test`.
#   scripts/deps.sh build   -- compiler, CMake and the libraries
#   scripts/deps.sh test    -- the above plus test tools (cmocka, promtool, clang fuzz runtime)
set -eu

build_pkgs="cmake make gcc pkg-config libmicrohttpd-dev libcurl4-openssl-dev
libsqlite3-dev libjansson-dev libpcre2-dev libyaml-dev zlib1g-dev libdeflate-dev"
test_pkgs="libcmocka-dev clang libclang-rt-14-dev prometheus sqlite3 python3 python3-yaml curl strace"
# npm (the OpenAPI lint): any working npm will do; machines that ship Node.js
# from elsewhere carry their own npm, which Debian's npm package conflicts with
if [ "${1:-build}" = test ] && ! command -v npm >/dev/null 2>&1; then
    test_pkgs="$test_pkgs npm"
fi

want="$build_pkgs"
[ "${1:-build}" = test ] && want="$want $test_pkgs"

missing=""
for p in $want; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

echo "deps: installing missing Debian packages:$missing" >&2
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=sudo
    else
        echo "deps: not root and no sudo: install these yourself: apt-get install$missing" >&2
        exit 1
    fi
else
    SUDO=""
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get update -q >&2 || \
   ! $SUDO apt-get install -y -q --no-install-recommends $missing >&2; then
    echo "deps: apt-get failed; install these yourself: apt-get install$missing" >&2
    exit 1
fi
