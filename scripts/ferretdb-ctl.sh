#!/usr/bin/env bash
# Starts or stops one FerretDB (SQLite handler) instance for tests.
#
#   scripts/ferretdb-ctl.sh start DIR PORT   # data, state, log and pid file in DIR
#   scripts/ferretdb-ctl.sh stop  DIR        # SIGTERM, then SIGKILL after 10 s
#   scripts/ferretdb-ctl.sh kill  DIR        # SIGKILL at once (a crash)
#
# The binary is $CARDBIND_TEST_FERRETDB_BIN (exported by
# scripts/test-services.sh). `start` returns once the port accepts
# connections and fails loudly (printing the log) if it does not within
# $CARDBIND_SERVICE_START_TIMEOUT seconds (default 30). Restarting with the
# same DIR keeps the data. Tests that stop FerretDB start their own instance
# with this script so that they never take down the shared one.
set -euo pipefail

usage() {
    echo "usage: $0 start DIR PORT | stop DIR | kill DIR" >&2
    exit 2
}

[[ $# -ge 2 ]] || usage
action=$1
dir=$2
pidfile="$dir/ferretdb.pid"
log="$dir/ferretdb.log"

port_open() {
    # bash's /dev/tcp: succeeds once something accepts on the port.
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

running_pid() {
    local pid
    [[ -f $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

case $action in
start)
    [[ $# -eq 3 ]] || usage
    port=$3
    bin=${CARDBIND_TEST_FERRETDB_BIN:?CARDBIND_TEST_FERRETDB_BIN is not set; run under scripts/test-services.sh}
    timeout=${CARDBIND_SERVICE_START_TIMEOUT:-30}
    mkdir -p "$dir"
    if pid=$(running_pid); then
        echo "ferretdb-ctl: already running in $dir (pid $pid)" >&2
        exit 1
    fi
    if port_open "$port"; then
        echo "ferretdb-ctl: port $port is already taken" >&2
        exit 1
    fi
    # setsid: its own process group, so a Ctrl-C aimed at the test runner
    # does not race our own orderly stop.
    setsid "$bin" \
        --handler=sqlite \
        "--sqlite-url=file:$dir/" \
        "--listen-addr=127.0.0.1:$port" \
        --debug-addr=- \
        "--state-dir=$dir" \
        --telemetry=disable \
        --log-level=warn \
        >>"$log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$pidfile"
    deadline=$((SECONDS + timeout))
    until port_open "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "ferretdb-ctl: FerretDB exited during start-up; log ($log):" >&2
            tail -n 40 "$log" >&2 || true
            rm -f "$pidfile"
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            echo "ferretdb-ctl: FerretDB did not answer on 127.0.0.1:$port within ${timeout}s; log ($log):" >&2
            tail -n 40 "$log" >&2 || true
            kill -KILL "$pid" 2>/dev/null || true
            rm -f "$pidfile"
            exit 1
        fi
        sleep 0.1
    done
    ;;
stop | kill)
    if ! pid=$(running_pid); then
        rm -f "$pidfile"
        exit 0
    fi
    if [[ $action == kill ]]; then
        kill -KILL "$pid" 2>/dev/null || true
    else
        kill -TERM "$pid" 2>/dev/null || true
    fi
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "ferretdb-ctl: pid $pid ignored SIGTERM for 10s; killing" >&2
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$pidfile"
    ;;
*)
    usage
    ;;
esac
