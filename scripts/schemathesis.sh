#!/usr/bin/env bash
# Fuzzes the HTTP API with schemathesis: starts the service on a free port
# with the given storage, runs every check (`--checks all`) over every
# operation in every phase (examples, coverage, fuzzing, and the stateful
# phase that follows the spec's links), stops the service. The exit code is
# schemathesis's: any failure, or a `validation_mismatch` warning (see
# tests/schemathesis/schemathesis.toml), fails it.
#
# One check is left out, on purpose: `use_after_free` expects a card to be
# 404 after `DELETE …/cards/{card_id}`. Unbinding keeps the card, readable
# as `inactive` (listed, unbound again without error, bound again on the
# same record: docs/api.md) - the product's rule, not a defect.
#
#   bash scripts/schemathesis.sh sqlite      (the embedded store `serve` runs on)
#   bash scripts/schemathesis.sh memory
#   bash scripts/test-services.sh bash scripts/schemathesis.sh mongodb
#
# Needs CARDBIND_TEST_SCHEMATHESIS (the schemathesis executable, installed
# by scripts/test-services.sh) and, for `mongodb`, CARDBIND_TEST_MONGODB_URI.
# The case budget is in tests/schemathesis/schemathesis.toml;
# CARDBIND_ST_SEED (default fixed, for runs that can be replayed) and any
# further arguments (passed to `schemathesis run`) tune a run by hand;
# CARDBIND_ST_KEEP=1 keeps the work dir (service log) after the run.
set -euo pipefail

STORE=${1:-}
case $STORE in
sqlite | memory | mongodb) ;;
*)
    echo "usage: $0 sqlite|memory|mongodb" >&2
    exit 2
    ;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { echo "schemathesis[$STORE]: $*" >&2; }
die() {
    say "ERROR: $*"
    exit 1
}

ST=${CARDBIND_TEST_SCHEMATHESIS:-}
[[ -n $ST && -x $ST ]] || die "CARDBIND_TEST_SCHEMATHESIS is not set to the schemathesis executable (run through scripts/test-services.sh)"
if [[ $STORE == mongodb && -z ${CARDBIND_TEST_MONGODB_URI:-} ]]; then
    die "CARDBIND_TEST_MONGODB_URI is not set (run through scripts/test-services.sh)"
fi

(cd "$ROOT" && cargo build --quiet -p cardbind --bin cardbind)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/cardbind
[[ -x $BIN ]] || die "no $BIN after cargo build"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cardbind-schemathesis.XXXXXX")
SERVER_PID=
cleanup() {
    local rc=$?
    set +e
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
    fi
    if ((rc != 0)) && [[ -f $WORK/serve.log ]]; then
        say "last lines of the service log:"
        tail -n 30 "$WORK/serve.log" >&2
    fi
    if [[ -n ${CARDBIND_ST_KEEP:-} ]]; then
        say "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export CARDBIND_CONFIG=$ROOT/tests/schemathesis/cardbind.toml
export CARDBIND__SERVER__ADDRESS=127.0.0.1:0
export CARDBIND__SERVER__DATA_DIR=$WORK/data
if [[ $STORE == mongodb ]]; then
    export CARDBIND__STORAGE__KIND=mongodb
    export CARDBIND__STORAGE__URI=$CARDBIND_TEST_MONGODB_URI
    export CARDBIND__STORAGE__DATABASE="cardbind_st_$$_$RANDOM"
    # FerretDB 1.24 scans for every query not by `_id` (see below): on a
    # machine busy with other work its reads passed the default 3 s bound
    # (storage.timeout_ms) and the service answered 503 storage_unavailable,
    # which schemathesis counts as a server error (9 of 1,120 stateful
    # cases in a CI run of 4417588 while two release builds ran beside it).
    # 10 s keeps the fuzzing about the API, not about FerretDB's speed; the
    # 503 on a slow store is tested by the fault matrix.
    export CARDBIND__STORAGE__TIMEOUT_MS=10000
else
    export CARDBIND__STORAGE__KIND=$STORE
fi

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

token() { "$BIN" token --sub "schemathesis-$1" --role "$1"; }
CARDBIND_ST_SERVICE_TOKEN=$(token service)
CARDBIND_ST_ADMIN_TOKEN=$(token admin)
CARDBIND_ST_AUDITOR_TOKEN=$(token auditor)
export CARDBIND_ST_SERVICE_TOKEN CARDBIND_ST_ADMIN_TOKEN CARDBIND_ST_AUDITOR_TOKEN
export CARDBIND_ST_HOOKS=$ROOT/tests/schemathesis/hooks.py
export CARDBIND_ST_OTP=123456

say "service at $BASE, schemathesis $("$ST" --version | sed 's/.*version //')"
started=$SECONDS
# Two runs on the same service: the unit phases, then the stateful phase
# on its own (run together, schemathesis 4.32 sizes the stateful phase by
# the fuzzing phase's case count and ignores its own).
# `--checks all` includes schemathesis's response-time check, 10 s by
# default. On MongoDB the run talks to FerretDB 1.24, which scans a whole
# collection for every query not by `_id`: as the run's data grows, one
# request's few store calls (each bounded by storage.timeout_ms, 3 s) can
# add up past 10 s (one verify took 16 s in the CI of 3c9bc6a, the same
# bind path having passed before). That is FerretDB's cost, reported and
# not targeted (README, docs/storage.md); the embedded store keeps 10 s.
# The client's own read timeout (10 s by default) is raised with it: the
# review listing (a wallet read per entry in review, each a scan on
# FerretDB) timed out at 10 s in the CI of fdc49c0 as the run's reviews
# piled up, before the response-time check could judge it.
limit=()
[[ $STORE == mongodb ]] && limit=(--max-response-time 30 --request-timeout 30)
fuzz() {
    (
        cd "$WORK" &&
            "$ST" --no-color --config-file "$ROOT/tests/schemathesis/schemathesis.toml" run \
                "$BASE/openapi.json" \
                --checks all \
                "${limit[@]}" \
                --exclude-checks use_after_free \
                --seed "${CARDBIND_ST_SEED:-20260101}" \
                --generation-database none \
                --workers 1 \
                "$@"
    )
}
# The stateful phase's scenario budget alone ran some 40 scenarios in a
# few seconds, through 7 to 11 of the spec's 36 links (a black-box run of
# 9b09d39); given time, it goes on generating scenarios: 3,283 in 270 s
# reached 23. So it is given time: on the embedded store
# CARDBIND_ST_STATEFUL_SECONDS (150 s by default), on MongoDB (FerretDB's
# scans make each scenario slower) CARDBIND_ST_MONGO_STATEFUL_SECONDS (420
# s). With its budget alone, on MongoDB, how far it went hung on the seed
# and the spec: 171 scenarios and 13 links in one run, 39 scenarios and 5
# links after a change of one pattern in the spec.
stateful=(--max-time "${CARDBIND_ST_STATEFUL_SECONDS:-150}")
[[ $STORE == mongodb ]] && stateful=(--max-time "${CARDBIND_ST_MONGO_STATEFUL_SECONDS:-420}")
set +e
fuzz --phases examples,coverage,fuzzing "${@:2}"
rc=$?
fuzz --phases stateful "${stateful[@]}" "${@:2}"
rc2=$?
set -e
((rc == 0)) && rc=$rc2
say "finished in $((SECONDS - started)) s with exit code $rc"
exit "$rc"
