#!/usr/bin/env bash
# Runs every test of the project: the Prometheus alert rules in
# deploy/prometheus/ (`promtool check rules` and their unit tests with
# `promtool test rules`; promtool installed once into the cache by
# scripts/promtool.sh), then every test of the workspace, with FerretDB and
# moto installed (once, into .cache/) and started by
# scripts/test-services.sh. Both always run; the exit code is non-zero if
# either failed. This is the README's test command; .ci/run calls it.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

rules_rc=0
bash scripts/promtool.sh check rules deploy/prometheus/*.rules.yml &&
    bash scripts/promtool.sh test rules deploy/prometheus/tests/*.yml ||
    rules_rc=$?

cargo_rc=0
bash scripts/test-services.sh cargo test --workspace --all-targets --no-fail-fast "$@" || cargo_rc=$?

if ((rules_rc != 0)); then
    echo "test.sh: the alert rule checks failed (exit $rules_rc): see the promtool output above" >&2
fi
if ((cargo_rc != 0)); then
    exit "$cargo_rc"
fi
exit "$rules_rc"
