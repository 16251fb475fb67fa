#!/usr/bin/env bash
# The code checks the test command runs before the tests: formatting
# (rustfmt) and clippy with every warning an error. Clippy is what
# enforces the workspace lints of Cargo.toml, among them no `unwrap`,
# `expect` or `panic!` outside tests and no `unsafe` (clippy.toml lets
# tests use them). The `fakes` feature brings in the channel fakes the
# test targets use, so that every target is checked.
#
# rustfmt and clippy are rustup components; where rustup manages the
# toolchain and they are missing, they are added first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

for component in rustfmt clippy; do
    tool=${component/rustfmt/fmt}
    if ! cargo "$tool" --version >/dev/null 2>&1; then
        if command -v rustup >/dev/null 2>&1; then
            rustup component add "$component"
        else
            echo "lint.sh: cargo $tool is not installed and there is no rustup to add it" >&2
            exit 1
        fi
    fi
done

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --features cardbind-channels/fakes -- -D warnings
