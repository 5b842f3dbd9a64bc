#!/usr/bin/env bash
# CI: the API fuzzed by schemathesis (PyPI) against the running server and
# its own /openapi.json: every route, positive and negative cases, every
# check (.ci/schemathesis.toml). Three runs: without api_tokens; with them
# and the token; with them and no token (every protected route must say
# 401, as the document declares). Any 5xx, any answer that breaks the
# document, or a crash fails the step.
# Runs from the repo root after a release build: bash .ci/schemathesis.sh
set -euo pipefail
cd "$(dirname "$0")/.."

version=4.32.5
if [[ "$(st --version 2>/dev/null)" != *"$version"* ]]; then
    python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$version"
fi
bin=target/release/video-scheduler
[[ -x "$bin" ]] || cargo build --release --all-features --bin video-scheduler

tmp="$(mktemp -d)"
server_pid=
cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid"
        wait "$server_pid" || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# Starts the server on a free port with `$1` as api_tokens; sets $base.
start() {
    local dir="$tmp/$2"
    mkdir -p "$dir"
    cat >"$dir/conf.json" <<JSON
{ "listen": "127.0.0.1:0", "database_url": "sqlite://$dir/st.db",
  "storage": { "root": "$dir/videos" }, "tick_ms": 200, "api_tokens": $1 }
JSON
    "$bin" --config "$dir/conf.json" serve >"$dir/server.log" 2>&1 &
    server_pid=$!
    local deadline=$((SECONDS + 60)) addr=
    until addr="$(grep -o 'listening on http://[0-9.:]*' "$dir/server.log" | cut -d/ -f3)" && [[ -n "$addr" ]]; do
        ((SECONDS < deadline)) || { cat "$dir/server.log"; exit 1; }
        kill -0 "$server_pid" || { cat "$dir/server.log"; exit 1; }
        sleep 0.2
    done
    base="http://$addr"
}

stop() {
    kill -0 "$server_pid" || { echo "the server died"; exit 1; }
    kill "$server_pid"
    wait "$server_pid"
    server_pid=
}

# `fuzz NAME [ARGS]`: the document is fetched with the token when there is
# one (with api_tokens set, /openapi.json needs it too), then every route
# is called with ARGS (headers) against $base.
fuzz() {
    echo "--- schemathesis: $1"
    shift
    curl -sf ${token:+-H "Authorization: Bearer $token"} "$base/openapi.json" >"$tmp/openapi.json"
    st --config-file .ci/schemathesis.toml run "$tmp/openapi.json" --url "$base" \
        --phases examples,coverage,fuzzing --max-examples 100 --workers 2 "$@"
}

token=
start '[]' open
fuzz "no api_tokens"
stop

token=ci-token
start "[\"$token\"]" secured
fuzz "api_tokens, with the token" -H "Authorization: Bearer $token"
fuzz "api_tokens, without a token"
stop
