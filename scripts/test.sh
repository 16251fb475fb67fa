#!/usr/bin/env bash
# Runs every test of the project. This is the README's test command;
# .ci/run calls it (with CI=true). Arguments go to `cargo test`.
#
# 0. The code checks (scripts/lint.sh): rustfmt, and clippy with every
#    warning an error (it enforces the workspace lints: no unwrap, expect
#    or panic outside tests, no unsafe).
# 1. The Prometheus alert rules in deploy/prometheus/: `promtool check
#    rules` and their unit tests (`promtool test rules`); promtool is
#    installed once into the cache by scripts/promtool.sh.
# 2. Inside scripts/test-services.sh (FerretDB, moto, schemathesis,
#    openapi-python-client, openapi-generator and Alipay's Python SDK
#    installed once into .cache/, WeChat Pay's Go SDK and oapi-codegen
#    through Go's module cache; the services started on free loopback
#    ports): the API fuzz run (scripts/schemathesis.sh) against the service
#    on the embedded store and on MongoDB (FerretDB), the flows through
#    clients generated from the spec in Python, Go, Java, Rust and
#    TypeScript
#    (scripts/generated-client.sh), the Alipay and
#    WeChat Pay flows against gateways built on the channels' official SDKs
#    (scripts/sdk-interop.sh), then every test of the workspace.
#
# Every part runs even when an earlier one fails; the exit code is
# non-zero when any failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# No incremental compilation caches: a test run builds once, and those
# caches were a third of `target/` (3.2 of 9.9 GB on a clean clone of the
# code before the suites were merged, whose CI run ran out of disk). Set
# CARGO_INCREMENTAL=1 to keep them.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
# The tests read CI=true as "a test whose service is missing fails rather
# than skips"; a CI system's other spelling (CI=1, CI=yes) means the same
# here, so it is made CI=true (only an unset or empty CI, 0, false or no
# leaves the skips on).
case ${CI:-} in
    "" | 0 | [Ff]alse | FALSE | [Nn]o | NO) ;;
    *) export CI=true ;;
esac
if [[ ${1:-} != --with-services ]]; then
    failed=()
    # A run from a clean clone writes up to 5.6 GB in the clone (target/
    # and .cache/; the peak of `du` every 30 s over a CI run of c2277e6),
    # besides the caches of cargo, Go, Maven and npm in the home directory.
    # Say so before the build runs out of room (it is less when target/
    # and .cache/ are already built, so this only warns).
    where=${CARGO_TARGET_DIR:-target}
    [[ -e $where ]] || where=.
    free_mb() { df -Pm "$where" 2>/dev/null | awk 'NR == 2 { print $4 }'; }
    free_mb=$(free_mb)
    if [[ $free_mb =~ ^[0-9]+$ ]] && ((free_mb < 6000)); then
        printf 'test.sh: warning: %s MB free on the disk of %s; a run from a clean clone writes up to 5,600 MB there\n' \
            "$free_mb" "$where" >&2
    else
        printf 'test.sh: %s MB free on the disk of %s\n' "${free_mb:-?}" "$where" >&2
    fi
    bash scripts/lint.sh || failed+=("the code checks (rustfmt, clippy)")
    { bash scripts/promtool.sh check rules deploy/prometheus/*.rules.yml &&
        bash scripts/promtool.sh test rules deploy/prometheus/tests/*.yml; } ||
        failed+=("the alert rule checks (promtool)")
    bash scripts/test-services.sh bash scripts/test.sh --with-services "$@" ||
        failed+=("the tests with services")
    if ((${#failed[@]})); then
        printf 'test.sh: FAILED: %s\n' "${failed[@]}" >&2
        printf 'test.sh: %s MB free on the disk of %s at the end\n' \
            "$(free_mb)" "$where" >&2
        exit 1
    fi
    exit 0
fi
shift
failed=()
bash scripts/schemathesis.sh sqlite || failed+=("schemathesis on the embedded store")
bash scripts/generated-client.sh || failed+=("the generated-client flow")
bash scripts/sdk-interop.sh || failed+=("the channels' official SDKs against the service")
bash scripts/schemathesis.sh mongodb || failed+=("schemathesis on MongoDB")
cargo test --workspace --all-targets --no-fail-fast "$@" || failed+=("cargo test")
if ((${#failed[@]})); then
    printf 'test.sh: FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
