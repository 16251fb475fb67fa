#!/usr/bin/env bash
# Runs every test: inside scripts/test-services.sh (FerretDB, moto and
# schemathesis installed once into .cache/, the services started on free
# loopback ports), first the API fuzz run (scripts/schemathesis.sh) against
# the service on the embedded store and on MongoDB (FerretDB), then every
# test of the workspace. Every part runs even when an earlier one fails;
# the exit code is non-zero when any failed. Arguments go to `cargo test`.
# This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ ${1:-} != --with-services ]]; then
    exec bash scripts/test-services.sh bash scripts/test.sh --with-services "$@"
fi
shift
failed=()
bash scripts/schemathesis.sh memory || failed+=("schemathesis on the embedded store")
bash scripts/schemathesis.sh mongodb || failed+=("schemathesis on MongoDB")
cargo test --workspace --all-targets --no-fail-fast "$@" || failed+=("cargo test")
if ((${#failed[@]})); then
    printf 'test.sh: FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
