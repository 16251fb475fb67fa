#!/usr/bin/env bash
# Runs every test of the workspace, with FerretDB and moto installed (once,
# into .cache/) and started by scripts/test-services.sh. This is the README's
# test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec bash scripts/test-services.sh cargo test --workspace --all-targets --no-fail-fast "$@"
