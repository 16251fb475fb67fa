#!/usr/bin/env bash
# The service against the channels' official SDKs: starts cardbind on the
# embedded store with its Alipay and WeChat Pay channels pointed at two
# stand-in gateways built on the official SDKs, and lets each drive a
# binding flow through the service's HTTP API:
#
#   * tests/sdk_interop/alipay: Alipay's Python SDK (alipay-sdk-python) verifies
#     every request and signing page the service signs, signs every answer
#     (checked by the SDK's own client first) and every notification;
#   * tests/sdk_interop/wechat: WeChat Pay's Go SDK (wechatpay-go) verifies
#     every request's Authorization, signs every answer (checked by the SDK's
#     validator first) and every notification (checked by the SDK's notify
#     handler first).
#
# Both flows: bind, sign in the wallet app, the signed notification, its
# replay, a tampered and a forged notification, unbind.
#
#   bash scripts/test-services.sh bash scripts/sdk-interop.sh
#
# Needs CARDBIND_TEST_ALIPAY_SDK_VENV (a venv with alipay-sdk-python,
# installed by scripts/test-services.sh), Go (the WeChat Pay SDK is fetched
# through the Go module proxy, pinned in tests/sdk_interop/wechat/go.mod) and
# openssl (the keys are made anew each run). CARDBIND_SDK_KEEP=1 keeps the
# work dir; CARDBIND_SDK_ONLY=alipay or wechat runs one side alone.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { echo "sdk-interop: $*" >&2; }
die() {
    say "ERROR: $*"
    exit 1
}
VENV=${CARDBIND_TEST_ALIPAY_SDK_VENV:-}
[[ -n $VENV && -x $VENV/bin/python ]] ||
    die "CARDBIND_TEST_ALIPAY_SDK_VENV is not set to a venv with alipay-sdk-python (run through scripts/test-services.sh)"
command -v go >/dev/null || die "Go is needed to build the WeChat Pay SDK harness"
command -v openssl >/dev/null || die "openssl is needed to make the test keys"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cardbind-sdk-interop.XXXXXX")
SERVER_PID=
PIDS=()
cleanup() {
    local rc=$?
    set +e
    for p in "${PIDS[@]}" $SERVER_PID; do
        kill -TERM "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    if ((rc != 0)) && [[ -f $WORK/serve.log ]]; then
        say "last lines of the service log:"
        tail -n 30 "$WORK/serve.log" >&2
    fi
    [[ -n ${CARDBIND_SDK_KEEP:-} ]] && say "kept $WORK" || rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT

(cd "$ROOT" && cargo build --quiet -p cardbind --bin cardbind)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/cardbind
[[ -x $BIN ]] || die "no $BIN after cargo build"
ONLY=${CARDBIND_SDK_ONLY:-}
case $ONLY in
"" | alipay | wechat) ;;
*) die "CARDBIND_SDK_ONLY is alipay or wechat, not '$ONLY'" ;;
esac
run() { [[ -z $ONLY || $ONLY == "$1" ]]; }
# Built even when only Alipay runs: the service's WeChat Pay section is
# written from the harness's merchant set-up (below).
(cd "$ROOT/tests/sdk_interop/wechat" && go build -mod=readonly -o "$WORK/wechat-harness" .) ||
    die "building the WeChat Pay SDK harness failed"

# ---- keys, as each side holds them -----------------------------------------
K=$WORK/keys
mkdir -p "$K"
rsa_key() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null; }
pkcs1() { openssl pkey -in "$1" -traditional; }
spki() { openssl pkey -in "$1" -pubout; }
bare() { grep -v -- '-----' | tr -d '\n'; }
# Alipay: our application key, handed out by Alipay's key tool as bare
# base64 (PKCS#1); Alipay's public key as the console shows it (bare base64
# SPKI).
rsa_key "$K/app.pem"
rsa_key "$K/alipay.pem"
rsa_key "$K/stranger.pem"
pkcs1 "$K/app.pem" | bare >"$K/alipay_app_private_key.txt"
spki "$K/app.pem" >"$K/alipay_app_public.pem"
pkcs1 "$K/alipay.pem" >"$K/alipay_platform_private.pem"
spki "$K/alipay.pem" | bare >"$K/alipay_public_key.txt"
pkcs1 "$K/stranger.pem" >"$K/alipay_stranger_private.pem"
# WeChat Pay: the merchant API key as apiclient_key.pem (PKCS#8), the
# platform's public key as WeChat Pay's "public key" mode hands it out.
rsa_key "$K/wechat_apiclient_key.pem"
spki "$K/wechat_apiclient_key.pem" >"$K/wechat_merchant_public.pem"
rsa_key "$K/wechat_platform_private.pem"
spki "$K/wechat_platform_private.pem" >"$K/wechat_platform_public.pem"
openssl rand -hex 16 >"$K/wechat_apiv3.key"

# Three distinct free ports, held together until all are known.
PORTS=$(python3 -c 'import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()') || die "could not find free ports"
read -r SVC_PORT ALI_PORT WX_PORT <<<"$PORTS"
SVC=http://127.0.0.1:$SVC_PORT
APP_ID=2021000000000001
# The WeChat Pay merchant set-up, as the Go harness holds it: WX_MCHID,
# WX_APPID, WX_SERIAL, WX_PLATFORM_SERIAL, WX_PLAN.
MERCHANT=$("$WORK/wechat-harness" --print-merchant) || die "the harness did not print its merchant set-up"
eval "$MERCHANT"
[[ -n ${WX_MCHID:-} && -n ${WX_APPID:-} && -n ${WX_SERIAL:-} && -n ${WX_PLATFORM_SERIAL:-} && -n ${WX_PLAN:-} ]] ||
    die "the harness's merchant set-up lacks a value: $MERCHANT"

cat >"$WORK/cardbind.toml" <<EOF
[server]
address = "127.0.0.1:$SVC_PORT"
data_dir = "$WORK/data"
purge_interval_seconds = 0

[auth]
jwt_secret = "$(openssl rand -hex 24)"

[channels]
enabled = ["mock", "alipay", "wechat"]
default = "mock"

[channels.alipay]
gateway_url = "http://127.0.0.1:$ALI_PORT/gateway.do"
app_id = "$APP_ID"
private_key_file = "$K/alipay_app_private_key.txt"
alipay_public_key_file = "$K/alipay_public_key.txt"
notify_url = "$SVC/v1/channels/alipay/notify"
sign_scene = "INDUSTRY|DIGITAL_MEDIA"

[channels.wechat]
base_url = "http://127.0.0.1:$WX_PORT"
mchid = "$WX_MCHID"
appid = "$WX_APPID"
serial_no = "$WX_SERIAL"
private_key_file = "$K/wechat_apiclient_key.pem"
apiv3_key_file = "$K/wechat_apiv3.key"
notify_url = "$SVC/v1/channels/wechat/notify"
plan_id = $WX_PLAN
presign_path = "/v3/papay/scheduled-deduct-sign/contracts/pre-entrust-sign/h5"

[channels.wechat.platform_keys]
"$WX_PLATFORM_SERIAL" = "$K/wechat_platform_public.pem"
EOF
export CARDBIND_CONFIG=$WORK/cardbind.toml
"$BIN" token --sub sdk-interop --role service >"$WORK/service.token"
"$BIN" token --sub sdk-interop-auditor --role auditor >"$WORK/auditor.token"

"$BIN" serve >"$WORK/serve.out" 2>"$WORK/serve.log" </dev/null &
SERVER_PID=$!

ALI_PID=
WX_PID=
if run alipay; then
    "$VENV/bin/python" "$ROOT/tests/sdk_interop/alipay/harness.py" \
        --listen "127.0.0.1:$ALI_PORT" --service "$SVC" --app-id "$APP_ID" --keys "$K" \
        --token-file "$WORK/service.token" --auditor-token-file "$WORK/auditor.token" \
        >"$WORK/alipay.out" 2>&1 &
    ALI_PID=$!
    PIDS+=("$ALI_PID")
fi
if run wechat; then
    "$WORK/wechat-harness" \
        --listen "127.0.0.1:$WX_PORT" --service "$SVC" --keys "$K" \
        --token-file "$WORK/service.token" --auditor-token-file "$WORK/auditor.token" \
        >"$WORK/wechat.out" 2>&1 &
    WX_PID=$!
    PIDS+=("$WX_PID")
fi

failed=()
if [[ -n $ALI_PID ]]; then
    wait "$ALI_PID" || failed+=("Alipay (alipay-sdk-python)")
    cat "$WORK/alipay.out"
fi
if [[ -n $WX_PID ]]; then
    wait "$WX_PID" || failed+=("WeChat Pay (wechatpay-go)")
    cat "$WORK/wechat.out"
fi
PIDS=()
kill -0 "$SERVER_PID" 2>/dev/null || failed+=("the service exited during the flows")
if ((${#failed[@]})); then
    printf 'sdk-interop: FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
say "${ONLY:-alipay and wechat}: the channels' official SDKs agree with the service"
