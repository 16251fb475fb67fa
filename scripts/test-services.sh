#!/usr/bin/env bash
# Runs a command with every real service the tests need.
#
#   bash scripts/test-services.sh cargo test -p cardbind-mongo
#
# Installs (once, into the cache dir) and starts, each on a free loopback
# port inside a fresh temp dir:
#   * FerretDB v1.24.2 (SQLite handler)  -> CARDBIND_TEST_MONGODB_URI
#   * moto 5.2.6's KMS mock              -> CARDBIND_TEST_KMS_ENDPOINT
# waits until each answers, runs "$@" with these exported, and stops the
# services on exit (also when the command fails or is interrupted). The exit
# code is the command's.
#
# Also installs (once) schemathesis 4.32.5, the API fuzzer that
# scripts/schemathesis.sh runs, into its own venv:
#   CARDBIND_TEST_SCHEMATHESIS   the schemathesis executable
# and openapi-python-client 0.29.1 (with what the clients it generates
# import), which scripts/generated-client.sh drives the service with:
#   CARDBIND_TEST_OPENAPI_CLIENT_VENV   its venv
#
# and openapi-generator 7.25.0 (its command-line jar, fetched by Maven; Java
# and Maven build and run the Java client it generates), which
# scripts/generated-client.sh drives the service with too:
#   CARDBIND_TEST_OPENAPI_GENERATOR_JAR   the jar
# with TypeScript 5.9.3 and Node's types (npm, into the cache) for its
# TypeScript client:
#   CARDBIND_TEST_TS_TOOLS   the directory holding node_modules/.bin/tsc
#
# and Alipay's official Python SDK, alipay-sdk-python 3.7.1411, which
# scripts/sdk-interop.sh plays the Alipay gateway with:
#   CARDBIND_TEST_ALIPAY_SDK_VENV   its venv
#
# Also exported, for tests that stop/restart a FerretDB of their own:
#   CARDBIND_TEST_FERRETDB_BIN   the ferretdb binary
#   CARDBIND_TEST_FERRETDB_CTL   scripts/ferretdb-ctl.sh (start DIR PORT | stop DIR | kill DIR)
#   CARDBIND_TEST_SERVICES_DIR   the temp dir (removed on exit); put such instances under it
#
# Cache: $CARDBIND_CACHE_DIR, default .cache/ at the repo root (gitignored).
# CARDBIND_FERRETDB_BIN / CARDBIND_MOTO_VENV / CARDBIND_SCHEMATHESIS_VENV /
# CARDBIND_OPENAPI_CLIENT_VENV / CARDBIND_OPENAPI_GENERATOR_JAR /
# CARDBIND_TS_TOOLS / CARDBIND_ALIPAY_SDK_VENV point at an existing ferretdb
# binary / moto venv / schemathesis venv / client generator venv /
# openapi-generator jar / TypeScript directory / Alipay SDK venv instead
# (each is still checked before use). openapi-generator and TypeScript are
# skipped with a warning where Java and Maven, or npm, are missing (only
# scripts/generated-client.sh needs them; it then says so). The cache dir
# is exported as CARDBIND_TEST_CACHE_DIR.
# CARDBIND_KEEP_SERVICES_DIR=1 keeps the temp dir (logs) after exit.
set -euo pipefail

FERRETDB_VERSION=v1.24.2
FERRETDB_MODULE=github.com/FerretDB/FerretDB
SCHEMATHESIS_VERSION=4.32.5
# Pinned like the other tools: an unpinned install took whatever moto was
# newest on the day, and 5.2.6 answered the old readiness probe (which named
# no service) with a 500 from its S3 handler.
MOTO_VERSION=5.2.6

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${CARDBIND_CACHE_DIR:-$ROOT/.cache}
FERRETDB_BIN=${CARDBIND_FERRETDB_BIN:-$CACHE/bin/ferretdb}
VENV=${CARDBIND_MOTO_VENV:-$CACHE/venv}
ST_VENV=${CARDBIND_SCHEMATHESIS_VENV:-$CACHE/schemathesis-venv}
OPC_VERSION=0.29.1
OPC_VENV=${CARDBIND_OPENAPI_CLIENT_VENV:-$CACHE/openapi-client-venv}
OAG_VERSION=7.25.0
OAG_JAR=${CARDBIND_OPENAPI_GENERATOR_JAR:-$CACHE/openapi-generator-cli-$OAG_VERSION.jar}
TS_VERSION=5.9.3
NODE_TYPES_VERSION=20.19.43
TS_TOOLS=${CARDBIND_TS_TOOLS:-$CACHE/ts-tools}
ALIPAY_SDK_VERSION=3.7.1411
ALI_VENV=${CARDBIND_ALIPAY_SDK_VENV:-$CACHE/alipay-sdk-venv}
CTL="$ROOT/scripts/ferretdb-ctl.sh"
START_TIMEOUT=${CARDBIND_SERVICE_START_TIMEOUT:-30}

if [[ $# -eq 0 ]]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi

say() { echo "test-services: $*" >&2; }
die() {
    say "ERROR: $*"
    exit 1
}

mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)

# One installer at a time per cache dir (parallel runs share it).
with_install_lock() {
    (
        flock -w 1800 9 || die "timed out waiting for the install lock $CACHE/.install.lock"
        "$@"
    ) 9>"$CACHE/.install.lock"
}

ferretdb_ok() {
    # Read the whole output before matching: with pipefail, `grep -q` closing
    # the pipe early could fail the check by SIGPIPE on ferretdb.
    local out
    [[ -x $FERRETDB_BIN ]] && out=$("$FERRETDB_BIN" --version 2>/dev/null) &&
        [[ $out == *"version: $FERRETDB_VERSION"* ]]
}

# `GOBIN=… go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2`
# gives a binary that panics at start ("Invalid build/version/version.txt"):
# the module zip lacks the generated build/version/version.txt, and FerretDB
# refuses to run without it when it is the main module. So: download that
# exact module, copy it, write version.txt, and build the same command.
build_ferretdb() {
    ferretdb_ok && return 0
    command -v go >/dev/null || die "Go is needed to build FerretDB (https://go.dev/dl/)"
    say "building FerretDB $FERRETDB_VERSION into $FERRETDB_BIN (once; takes a few minutes)…"
    local started=$SECONDS src work
    src=$(go mod download -json "$FERRETDB_MODULE@$FERRETDB_VERSION" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
    [[ -n $src && -d $src ]] || die "go mod download $FERRETDB_MODULE@$FERRETDB_VERSION gave no source dir"
    work=$(mktemp -d "$CACHE/ferretdb-build.XXXXXX")
    cp -R "$src/." "$work/"
    chmod -R u+w "$work"
    echo "$FERRETDB_VERSION" >"$work/build/version/version.txt"
    echo "cardbind-test" >"$work/build/version/package.txt"
    mkdir -p "$(dirname "$FERRETDB_BIN")"
    (cd "$work" && GOFLAGS=-buildvcs=false CGO_ENABLED=0 go build -trimpath -o "$FERRETDB_BIN.tmp" ./cmd/ferretdb) ||
        { rm -rf "$work"; die "building FerretDB failed"; }
    rm -rf "$work"
    mv -f "$FERRETDB_BIN.tmp" "$FERRETDB_BIN"
    ferretdb_ok || die "$FERRETDB_BIN does not report version $FERRETDB_VERSION"
    say "FerretDB built in $((SECONDS - started))s"
}

# A Python venv of its own at DIR holding EXE, complete once MARKER is
# there: each tool has its own, since they pin different versions of shared
# dependencies (moto and schemathesis: werkzeug, among others).
venv_ok() { # DIR MARKER EXE
    [[ -f $1/.cardbind-$2 && -x $1/bin/$3 ]]
}

install_venv() { # WHAT DIR MARKER EXE PIP-ARGS…
    local what=$1 dir=$2 marker=$3 exe=$4
    shift 4
    venv_ok "$dir" "$marker" "$exe" && return 0
    say "installing $what into $dir (once)…"
    local started=$SECONDS
    rm -rf "$dir"
    python3 -m venv "$dir" || die "python3 -m venv failed (is python3-venv installed?)"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$@" || die "pip install $* failed"
    touch "$dir/.cardbind-$marker"
    say "$what installed in $((SECONDS - started))s"
}

if [[ -z ${CARDBIND_FERRETDB_BIN:-} ]]; then
    with_install_lock build_ferretdb
else
    ferretdb_ok || die "CARDBIND_FERRETDB_BIN=$FERRETDB_BIN is not a working FerretDB $FERRETDB_VERSION"
fi
if [[ -z ${CARDBIND_MOTO_VENV:-} ]]; then
    with_install_lock install_venv "moto[server] $MOTO_VERSION" "$VENV" "moto-$MOTO_VERSION" moto_server \
        "moto[server]==$MOTO_VERSION"
else
    [[ -x $VENV/bin/moto_server ]] || die "CARDBIND_MOTO_VENV=$VENV has no bin/moto_server"
fi
if [[ -z ${CARDBIND_SCHEMATHESIS_VENV:-} ]]; then
    with_install_lock install_venv "schemathesis $SCHEMATHESIS_VERSION" "$ST_VENV" \
        "schemathesis-$SCHEMATHESIS_VERSION" schemathesis "schemathesis==$SCHEMATHESIS_VERSION"
else
    [[ -x $ST_VENV/bin/schemathesis ]] || die "CARDBIND_SCHEMATHESIS_VENV=$ST_VENV has no bin/schemathesis"
fi
export CARDBIND_TEST_SCHEMATHESIS=$ST_VENV/bin/schemathesis
if [[ -z ${CARDBIND_OPENAPI_CLIENT_VENV:-} ]]; then
    # With what the clients it generates import (httpx, attrs, python-dateutil).
    with_install_lock install_venv "openapi-python-client $OPC_VERSION" "$OPC_VENV" \
        "opc-$OPC_VERSION" openapi-python-client "openapi-python-client==$OPC_VERSION" python-dateutil
else
    [[ -x $OPC_VENV/bin/openapi-python-client ]] ||
        die "CARDBIND_OPENAPI_CLIENT_VENV=$OPC_VENV has no bin/openapi-python-client"
fi
export CARDBIND_TEST_OPENAPI_CLIENT_VENV=$OPC_VENV
# openapi-generator's command-line jar, as Maven Central serves it (into
# the cache, through a temp dir so that a failed download leaves nothing).
install_openapi_generator() {
    [[ -s $OAG_JAR ]] && return 0
    if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
        say "WARNING: Java and Maven are needed for openapi-generator (a JDK 11 or later): not installed"
        return 0
    fi
    say "fetching openapi-generator-cli $OAG_VERSION into $OAG_JAR (once)…"
    local started=$SECONDS tmp
    tmp=$(mktemp -d "$CACHE/oag.XXXXXX")
    mvn -q -B dependency:copy "-Dartifact=org.openapitools:openapi-generator-cli:$OAG_VERSION" \
        "-DoutputDirectory=$tmp" >"$tmp/mvn.log" 2>&1 || {
        cat "$tmp/mvn.log" >&2
        rm -rf "$tmp"
        die "Maven could not fetch openapi-generator-cli $OAG_VERSION"
    }
    mv -f "$tmp/openapi-generator-cli-$OAG_VERSION.jar" "$OAG_JAR" || {
        rm -rf "$tmp"
        die "Maven fetched no openapi-generator-cli-$OAG_VERSION.jar"
    }
    rm -rf "$tmp"
    say "openapi-generator fetched in $((SECONDS - started))s"
}
if [[ -z ${CARDBIND_OPENAPI_GENERATOR_JAR:-} ]]; then
    with_install_lock install_openapi_generator
else
    [[ -s $OAG_JAR ]] || die "CARDBIND_OPENAPI_GENERATOR_JAR=$OAG_JAR is not a file"
fi
[[ -s $OAG_JAR ]] && export CARDBIND_TEST_OPENAPI_GENERATOR_JAR=$OAG_JAR
ts_tools_ok() { [[ -f $TS_TOOLS/.cardbind-ts-$TS_VERSION-$NODE_TYPES_VERSION && -x $TS_TOOLS/node_modules/.bin/tsc ]]; }
install_ts_tools() {
    ts_tools_ok && return 0
    if ! command -v npm >/dev/null; then
        say "WARNING: Node.js with npm is needed for the TypeScript client (Node 18 or later): not installed"
        return 0
    fi
    say "installing typescript $TS_VERSION into $TS_TOOLS (once)…"
    local started=$SECONDS
    rm -rf "$TS_TOOLS"
    mkdir -p "$TS_TOOLS"
    npm install --prefix "$TS_TOOLS" --silent --no-audit --no-fund --save-exact \
        "typescript@$TS_VERSION" "@types/node@$NODE_TYPES_VERSION" >"$TS_TOOLS/npm.log" 2>&1 || {
        cat "$TS_TOOLS/npm.log" >&2
        die "npm could not install typescript $TS_VERSION"
    }
    touch "$TS_TOOLS/.cardbind-ts-$TS_VERSION-$NODE_TYPES_VERSION"
    say "typescript installed in $((SECONDS - started))s"
}
if [[ -z ${CARDBIND_TS_TOOLS:-} ]]; then
    with_install_lock install_ts_tools
else
    [[ -x $TS_TOOLS/node_modules/.bin/tsc ]] || die "CARDBIND_TS_TOOLS=$TS_TOOLS has no node_modules/.bin/tsc"
fi
[[ -x $TS_TOOLS/node_modules/.bin/tsc ]] && export CARDBIND_TEST_TS_TOOLS=$TS_TOOLS
export CARDBIND_TEST_CACHE_DIR=$CACHE
if [[ -z ${CARDBIND_ALIPAY_SDK_VENV:-} ]]; then
    # Alipay's official Python SDK (with rsa and pycryptodome, its dependencies).
    with_install_lock install_venv "alipay-sdk-python $ALIPAY_SDK_VERSION" "$ALI_VENV" \
        "alipay-sdk-$ALIPAY_SDK_VERSION" python "alipay-sdk-python==$ALIPAY_SDK_VERSION"
else
    [[ -x $ALI_VENV/bin/python ]] || die "CARDBIND_ALIPAY_SDK_VENV=$ALI_VENV has no bin/python"
fi
export CARDBIND_TEST_ALIPAY_SDK_VENV=$ALI_VENV

free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

SERVICES_DIR=$(mktemp -d "${TMPDIR:-/tmp}/cardbind-services.XXXXXX")
MOTO_PID=

cleanup() {
    local rc=$?
    set +e
    # Every FerretDB started under the services dir, also those a test
    # started (and maybe left running) through ferretdb-ctl.sh.
    while IFS= read -r pidfile; do
        bash "$CTL" stop "$(dirname "$pidfile")"
    done < <(find "$SERVICES_DIR" -name ferretdb.pid 2>/dev/null)
    if [[ -n $MOTO_PID ]] && kill -0 "$MOTO_PID" 2>/dev/null; then
        kill -TERM "$MOTO_PID" 2>/dev/null
        for _ in $(seq 1 50); do
            kill -0 "$MOTO_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$MOTO_PID" 2>/dev/null
        wait "$MOTO_PID" 2>/dev/null
    fi
    if [[ -n ${CARDBIND_KEEP_SERVICES_DIR:-} ]]; then
        say "kept $SERVICES_DIR"
    else
        rm -rf "$SERVICES_DIR"
    fi
    exit "$rc"
}
CMD_PID=
# A signal ends the command too (it would otherwise keep the services
# running until it finished), then the EXIT trap stops the services.
on_signal() {
    trap - INT TERM HUP
    if [[ -n $CMD_PID ]]; then
        kill -TERM "$CMD_PID" 2>/dev/null
        wait "$CMD_PID" 2>/dev/null
    fi
    exit "$1"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'on_signal 129' HUP

export CARDBIND_TEST_FERRETDB_BIN=$FERRETDB_BIN
export CARDBIND_TEST_FERRETDB_CTL=$CTL
export CARDBIND_TEST_SERVICES_DIR=$SERVICES_DIR

# FerretDB (a free port can be taken between asking and binding: retry).
started=
for _ in 1 2 3; do
    FERRETDB_PORT=$(free_port)
    if bash "$CTL" start "$SERVICES_DIR/ferretdb" "$FERRETDB_PORT"; then
        started=1
        break
    fi
done
[[ -n $started ]] || die "FerretDB did not start (logs in $SERVICES_DIR/ferretdb/ferretdb.log)"
export CARDBIND_TEST_MONGODB_URI="mongodb://127.0.0.1:$FERRETDB_PORT/"

# moto
start_moto() {
    local port=$1 deadline
    "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >>"$SERVICES_DIR/moto.log" 2>&1 </dev/null &
    MOTO_PID=$!
    deadline=$((SECONDS + START_TIMEOUT))
    # Answers HTTP (not only accepts): the KMS API is served. moto picks the
    # service from the credential scope of Authorization (it does not check
    # the signature); without one, newer versions hand the request to S3.
    until curl -fsS -o /dev/null -X POST -H 'X-Amz-Target: TrentService.ListKeys' \
        -H 'Content-Type: application/x-amz-json-1.1' \
        -H 'Authorization: AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=00' \
        -d '{}' "http://127.0.0.1:$port/" 2>/dev/null; do
        if ! kill -0 "$MOTO_PID" 2>/dev/null; then
            wait "$MOTO_PID" 2>/dev/null || true
            MOTO_PID=
            return 1
        fi
        if ((SECONDS >= deadline)); then
            say "moto did not answer on 127.0.0.1:$port within ${START_TIMEOUT}s"
            kill -KILL "$MOTO_PID" 2>/dev/null || true
            wait "$MOTO_PID" 2>/dev/null || true
            MOTO_PID=
            return 1
        fi
        sleep 0.2
    done
}
started=
for _ in 1 2 3; do
    MOTO_PORT=$(free_port)
    if start_moto "$MOTO_PORT"; then
        started=1
        break
    fi
done
if [[ -z $started ]]; then
    tail -n 40 "$SERVICES_DIR/moto.log" >&2 || true
    die "moto did not start"
fi
export CARDBIND_TEST_KMS_ENDPOINT="http://127.0.0.1:$MOTO_PORT"

say "FerretDB $CARDBIND_TEST_MONGODB_URI, moto KMS $CARDBIND_TEST_KMS_ENDPOINT, dir $SERVICES_DIR"

# In the background so that `wait` (unlike a foreground command) lets the
# signal traps run at once; stdin passed on explicitly (a background job
# would otherwise get /dev/null).
exec 3<&0
"$@" <&3 3<&- &
CMD_PID=$!
set +e
wait "$CMD_PID"
rc=$?
set -e
CMD_PID=
exit "$rc"
