#!/usr/bin/env bash
# Drives the service through a client generated from its own spec: starts
# the service on the embedded store, generates a Python client with
# openapi-python-client from the running service's /openapi.json (every
# operation the spec declares for clients must generate: a warning about
# one fails the run), and runs tests/generated_client/flow.py with it
# (bind, replay, verify, list, default, share, accept, revoke, unbind,
# audit, consents, BIN lookup). Channel notifications are left out: they
# are for the channels (their body is the channel's own, `*/*`), not for
# clients.
#
#   bash scripts/test-services.sh bash scripts/generated-client.sh
#
# Needs CARDBIND_TEST_OPENAPI_CLIENT_VENV (a venv with openapi-python-client
# and the generated client's dependencies, installed by
# scripts/test-services.sh). CARDBIND_GC_KEEP=1 keeps the work dir.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { echo "generated-client: $*" >&2; }
die() {
    say "ERROR: $*"
    exit 1
}
VENV=${CARDBIND_TEST_OPENAPI_CLIENT_VENV:-}
[[ -n $VENV && -x $VENV/bin/openapi-python-client ]] ||
    die "CARDBIND_TEST_OPENAPI_CLIENT_VENV is not set to a venv with openapi-python-client (run through scripts/test-services.sh)"

(cd "$ROOT" && cargo build --quiet -p cardbind --bin cardbind)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/cardbind
[[ -x $BIN ]] || die "no $BIN after cargo build"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cardbind-generated-client.XXXXXX")
SERVER_PID=
cleanup() {
    local rc=$?
    set +e
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
    fi
    if ((rc != 0)) && [[ -f $WORK/serve.log ]]; then
        say "last lines of the service log:"
        tail -n 20 "$WORK/serve.log" >&2
    fi
    [[ -n ${CARDBIND_GC_KEEP:-} ]] && say "kept $WORK" || rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT

export CARDBIND__SERVER__ADDRESS=127.0.0.1:0
export CARDBIND__SERVER__DATA_DIR=$WORK/data
export CARDBIND__STORAGE__KIND=sqlite
export CARDBIND__CHANNELS__MOCK__MODE=otp
"$BIN" serve >"$WORK/serve.out" 2>"$WORK/serve.log" </dev/null &
SERVER_PID=$!
BASE=
for _ in $(seq 1 300); do
    BASE=$(sed -n 's/^cardbind listening on \(http:\/\/[^ ]*\)$/\1/p' "$WORK/serve.out" 2>/dev/null | head -n 1)
    [[ -n $BASE ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "the service exited before listening"
    sleep 0.1
done
[[ -n $BASE ]] || die "the service did not start listening within 30 s"

curl -fsS "$BASE/openapi.json" -o "$WORK/openapi.json" || die "no spec at $BASE/openapi.json"
(
    cd "$WORK" &&
        "$VENV/bin/openapi-python-client" generate --path "$WORK/openapi.json" --meta none \
            --output-path "$WORK/cardbind_client" >"$WORK/generate.log" 2>&1
) || {
    cat "$WORK/generate.log" >&2
    die "openapi-python-client could not generate a client"
}
# Every warning names a piece the generator dropped; the notification
# endpoint (the channels' own body, */*) is the one expected.
if grep -E "WARNING|Unable to|Cannot" "$WORK/generate.log" | grep -v "POST /v1/channels/{channel}/notify" >"$WORK/warnings"; then
    cat "$WORK/generate.log" >&2
    die "the generated client is missing pieces (above)"
fi

token() { "$BIN" token --sub "generated-client-$1" --role "$1"; }
export CARDBIND_GC_BASE=$BASE
CARDBIND_GC_SERVICE_TOKEN=$(token service)
CARDBIND_GC_AUDITOR_TOKEN=$(token auditor)
export CARDBIND_GC_SERVICE_TOKEN CARDBIND_GC_AUDITOR_TOKEN
PYTHONPATH=$WORK "$VENV/bin/python" "$ROOT/tests/generated_client/flow.py"
