#!/usr/bin/env bash
# Runs promtool (Prometheus's rule checker and rule unit-test runner),
# installing it first if needed:
#
#   bash scripts/promtool.sh check rules deploy/prometheus/cardbind.rules.yml
#   bash scripts/promtool.sh test rules deploy/prometheus/tests/*.yml
#   bash scripts/promtool.sh --install-only      # install, print the path
#
# Installed once into $CARDBIND_CACHE_DIR/bin/promtool (default .cache/ at
# the repo root, gitignored), under the install lock that
# scripts/test-services.sh takes for FerretDB and moto, so parallel runs
# sharing a cache install it once. How, first that works:
#
#   1. Debian's `prometheus` package, which ships promtool: downloaded with
#      `apt-get download` (no root needed) and unpacked with `dpkg-deb`;
#      only usr/bin/promtool is kept. When apt has no package lists yet
#      (a fresh image) and we are root, `apt-get update` runs first.
#   2. With Go: cmd/promtool built from the Prometheus module at
#      $PROMTOOL_GO_VERSION (v0.55.1 is Prometheus 2.55.1, the 2.x line that
#      Debian 12 ships as 2.42: the same rule-test semantics). A last
#      resort: it links every service-discovery plugin and its cloud SDK
#      (58 minutes measured on this project's busy 2-core machine).
#
# Neither possible: it stops with an error that says what to install.
# CARDBIND_PROMTOOL_BIN points at an existing promtool instead (checked).
set -euo pipefail

PROMTOOL_GO_VERSION=v0.55.1
PROMETHEUS_MODULE=github.com/prometheus/prometheus

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${CARDBIND_CACHE_DIR:-$ROOT/.cache}

say() { echo "promtool.sh: $*" >&2; }
die() {
    say "ERROR: $*"
    exit 1
}

works() {
    [[ -x $1 ]] && "$1" --version >/dev/null 2>&1
}

if [[ -n ${CARDBIND_PROMTOOL_BIN:-} ]]; then
    PROMTOOL=$CARDBIND_PROMTOOL_BIN
    works "$PROMTOOL" || die "CARDBIND_PROMTOOL_BIN=$PROMTOOL does not run (\`$PROMTOOL --version\` failed)"
else
    mkdir -p "$CACHE"
    CACHE=$(cd "$CACHE" && pwd)
    PROMTOOL=$CACHE/bin/promtool
fi

# Debian: the package's promtool (it links only libc).
from_debian() {
    command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || {
        say "no apt-get/dpkg-deb here: not a Debian-like system"
        return 1
    }
    local work deb
    work=$(mktemp -d "$CACHE/promtool-deb.XXXXXX")
    # apt's download sandbox user must be able to write the directory.
    chmod 755 "$work"
    fetch() { (cd "$work" && apt-get -q download prometheus >"$work/apt.log" 2>&1); }
    if ! fetch; then
        if [[ $(id -u) -eq 0 ]]; then
            say "apt-get download failed (no package lists yet?); running apt-get update"
            apt-get -q update >"$work/apt-update.log" 2>&1 || {
                tail -n 20 "$work/apt-update.log" >&2
                rm -rf "$work"
                return 1
            }
            fetch || {
                tail -n 20 "$work/apt.log" >&2
                rm -rf "$work"
                return 1
            }
        else
            tail -n 20 "$work/apt.log" >&2
            say "apt-get download prometheus failed and we are not root: if apt has no package lists, run \`sudo apt-get update\` once"
            rm -rf "$work"
            return 1
        fi
    fi
    deb=$(find "$work" -maxdepth 1 -name 'prometheus_*.deb' | head -n 1)
    [[ -n $deb ]] || {
        rm -rf "$work"
        return 1
    }
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work" ./usr/bin/promtool || {
        rm -rf "$work"
        return 1
    }
    mkdir -p "$(dirname "$PROMTOOL")"
    mv -f "$work/usr/bin/promtool" "$PROMTOOL.tmp"
    rm -rf "$work"
    works "$PROMTOOL.tmp" || {
        rm -f "$PROMTOOL.tmp"
        return 1
    }
    mv -f "$PROMTOOL.tmp" "$PROMTOOL"
}

# Go: `go install …/cmd/promtool@version` is refused (the module's go.mod
# has replace directives), so build it inside the downloaded module, as
# scripts/test-services.sh does for FerretDB.
from_go() {
    command -v go >/dev/null || {
        say "no Go toolchain here"
        return 1
    }
    say "building promtool $PROMTOOL_GO_VERSION with Go (once; can take most of an hour on 2 cores)…"
    local src work
    src=$(go mod download -json "$PROMETHEUS_MODULE@$PROMTOOL_GO_VERSION" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
    [[ -n $src && -d $src ]] || return 1
    work=$(mktemp -d "$CACHE/promtool-build.XXXXXX")
    cp -R "$src/." "$work/"
    chmod -R u+w "$work"
    mkdir -p "$(dirname "$PROMTOOL")"
    (cd "$work" && GOFLAGS=-buildvcs=false CGO_ENABLED=0 go build -trimpath -o "$PROMTOOL.tmp" ./cmd/promtool) || {
        rm -rf "$work" "$PROMTOOL.tmp"
        return 1
    }
    rm -rf "$work"
    works "$PROMTOOL.tmp" || {
        rm -f "$PROMTOOL.tmp"
        return 1
    }
    mv -f "$PROMTOOL.tmp" "$PROMTOOL"
}

install_promtool() {
    works "$PROMTOOL" && return 0
    local started=$SECONDS
    say "installing promtool into $PROMTOOL (once)…"
    if from_debian; then
        say "promtool from Debian's prometheus package in $((SECONDS - started))s"
    elif from_go; then
        say "promtool built with Go in $((SECONDS - started))s"
    else
        die "could not install promtool: neither Debian's prometheus package (apt-get download) nor a Go build ($PROMETHEUS_MODULE@$PROMTOOL_GO_VERSION) worked. Install promtool yourself and set CARDBIND_PROMTOOL_BIN=/path/to/promtool."
    fi
}

if [[ -z ${CARDBIND_PROMTOOL_BIN:-} ]] && ! works "$PROMTOOL"; then
    # Same lock file as scripts/test-services.sh: one installer per cache.
    (
        flock -w 1800 9 || die "timed out waiting for the install lock $CACHE/.install.lock"
        install_promtool
    ) 9>"$CACHE/.install.lock"
fi

if [[ ${1:-} == --install-only ]]; then
    echo "$PROMTOOL"
    exit 0
fi
exec "$PROMTOOL" "$@"
