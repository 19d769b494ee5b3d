#!/bin/sh
# redocly.sh BUILD_DIR ARGS...: runs @redocly/cli (pinned version), installed
# with npm into BUILD_DIR/redocly on first use (npm's cache lives there too,
# and --prefer-offline reuses it, so later runs need no network).  If npm is
# missing or the install fails, this exits 1 with the reason: the OpenAPI
# test must fail loudly, never skip.
set -eu
ver=2.77.0
[ $# -ge 1 ] || { echo "usage: redocly.sh BUILD_DIR ARGS..." >&2; exit 2; }
dir="$1/redocly"
shift
bin="$dir/node_modules/.bin/redocly"
if [ ! -x "$bin" ] || [ "$(cat "$dir/.version" 2>/dev/null || true)" != "$ver" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "redocly.sh: FAILED: npm not found (scripts/deps.sh test installs it)" >&2
        exit 1
    fi
    mkdir -p "$dir"
    echo "redocly.sh: installing @redocly/cli@$ver into $dir" >&2
    if ! npm install --no-audit --no-fund --prefer-offline --prefix "$dir" \
            --cache "$dir/.npm-cache" "@redocly/cli@$ver" >&2; then
        echo "redocly.sh: FAILED: npm install @redocly/cli@$ver (is the npm registry" \
             "reachable?)" >&2
        exit 1
    fi
    echo "$ver" > "$dir/.version"
fi
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
exec "$bin" "$@"
