"""The Alipay side of cardbind, built on Alipay's official Python SDK.

Plays the Alipay OpenAPI gateway for a running cardbind service and drives
an agreement flow through the service's HTTP API. Whatever the SDK has a
function for is done by the SDK (alipay-sdk-python, pinned in
scripts/test-services.sh, which installs it):

* every request the service sends (and the signing-page URL it hands the
  user) is checked as the gateway checks it: the SDK's `get_sign_content`
  over every non-empty parameter but `sign`, verified as the SDK's
  `verify_with_rsa` verifies (its key loading, the same `rsa` call) with
  the application's public key, and held to SHA-256 (`verify_with_rsa`
  takes a signature over any hash, SHA-1 too; `sign_type=RSA2` means
  SHA-256);
* every answer is signed by the SDK's `sign_with_rsa2` with the gateway's
  key, and parsed by the SDK's own client (`DefaultAlipayClient`) before it
  is sent, so an answer the harness sends is one the official client takes;
* every notification is signed by the SDK over the sorted parameters but
  `sign` and `sign_type`, empty ones included, as Alipay signs its
  notifications (requests leave empty ones out; notifications do not).

Not covered: AES content encryption (`encrypt_type=AES`). The SDK's AES
helper cannot run on Python 3 with the pycryptodome it depends on (it hands
the cipher a `str` IV); the project's own fake gateway tests that part.

    python harness.py --listen 127.0.0.1:PORT --service http://127.0.0.1:SVC \
        --token-file F --auditor-token-file G --keys DIR --app-id ID

DIR holds alipay_app_public.pem (the application's public key, SPKI),
alipay_platform_private.pem (the gateway's key, PKCS#1),
alipay_public_key.txt (its public half, bare base64 SPKI) and
alipay_stranger_private.pem (someone else's key, PKCS#1). Prints one line
per check and exits 0 only when every check passed.
"""

import argparse
import base64
import datetime
import json
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from alipay.aop.api.AlipayClientConfig import AlipayClientConfig
from alipay.aop.api.DefaultAlipayClient import DefaultAlipayClient
from alipay.aop.api.constant.CommonConstants import THREAD_LOCAL
from alipay.aop.api.util.SignatureUtils import (
    fill_public_key_marker,
    get_sign_content,
    sign_with_rsa2,
)
import rsa  # the SDK's own RSA library

CHARSET = "utf-8"
BEIJING = datetime.timezone(datetime.timedelta(hours=8))
PAGE_SIGN = "alipay.user.agreement.page.sign"
# The scene this merchant agreed with Alipay (the service's configuration
# names it): Alipay refuses its default DEFAULT|DEFAULT with an
# external_agreement_no, which names every agreement the service makes.
SIGN_SCENE = "INDUSTRY|DIGITAL_MEDIA"
QUERY = "alipay.user.agreement.query"
UNSIGN = "alipay.user.agreement.unsign"
# Text the service must verify byte for byte: Chinese, JSON escapes, braces
# and quotes inside strings, and the characters a form encoding changes.
AWKWARD = '代扣协议 "签约" {成功} \\ 100% + tax & more = done / é'

failures = []


def check(ok, what, detail=""):
    if ok:
        print(f"alipay-sdk: ok {what}", flush=True)
    else:
        failures.append(what)
        print(f"alipay-sdk: FAIL {what}: {detail}", flush=True)
    return ok


BASE62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def card_of_code(code):
    """The card id a per-bind reference names: the card's UUID in base 62
    (22 digits), then the bind's attempt (6 digits); None if it is not one."""
    if len(code) != 28 or any(c not in BASE62 for c in code):
        return None
    n = 0
    for c in code[:22]:
        n = n * 62 + BASE62.index(c)
    attempt = 0
    for c in code[22:]:
        attempt = attempt * 62 + BASE62.index(c)
    if n >= 1 << 128 or attempt >= 1 << 32:
        return None
    return str(uuid.UUID(int=n))


def verify_rsa2(public_key, message, sign):
    """The SDK's `verify_with_rsa`, held to RSA2: `rsa.verify` answers the
    hash the signature was made with, which the SDK does not look at."""
    key = rsa.PublicKey.load_pkcs1_openssl_pem(fill_public_key_marker(public_key))
    return rsa.verify(message, base64.b64decode(sign), key) == "SHA-256"


def beijing_now():
    return datetime.datetime.now(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


class Gateway:
    """The gateway's state: the agreements and every request received."""

    def __init__(self, app_id, app_public, platform_private, platform_public, public_url):
        self.app_id = app_id
        self.app_public = app_public
        self.platform_private = platform_private
        self.public_url = public_url
        self.lock = threading.Lock()
        self.agreements = {}  # external_agreement_no -> dict
        self.requests = []  # (method, refusal or None, biz)
        self.next_no = 1
        # The SDK's own client, used to parse every answer before it leaves.
        config = AlipayClientConfig()
        config.app_id = app_id
        config.alipay_public_key = platform_public
        self.client = DefaultAlipayClient(config)

    def verify(self, params):
        """Checks parameters as the gateway does; returns (biz, refusal)."""
        sign = params.get("sign", "")
        if not sign:
            return None, "missing sign"
        if params.get("app_id") != self.app_id:
            return None, f"app_id {params.get('app_id')!r}"
        if params.get("sign_type") != "RSA2":
            return None, f"sign_type {params.get('sign_type')!r}"
        if params.get("charset") != CHARSET:
            return None, f"charset {params.get('charset')!r}"
        if params.get("version") != "1.0":
            return None, f"version {params.get('version')!r}"
        signed = {k: v for k, v in params.items() if k != "sign" and v != ""}
        content = get_sign_content(signed).encode(CHARSET)
        try:
            good = verify_rsa2(self.app_public, content, sign)
        except Exception as e:  # rsa raises VerificationError
            good = False
            why = type(e).__name__
        else:
            why = "not a SHA-256 signature"
        if not good:
            return None, f"signature ({why})"
        try:
            at = datetime.datetime.strptime(params.get("timestamp", ""), "%Y-%m-%d %H:%M:%S")
        except ValueError:
            return None, f"timestamp {params.get('timestamp')!r}"
        skew = abs((at.replace(tzinfo=BEIJING) - datetime.datetime.now(BEIJING)).total_seconds())
        if skew > 600:
            return None, f"timestamp {params['timestamp']} is not Beijing time now"
        try:
            biz = json.loads(params.get("biz_content", ""))
        except ValueError:
            return None, "biz_content is not JSON"
        return biz, None

    def record(self, method, refusal, biz):
        with self.lock:
            self.requests.append((method, refusal, biz))

    def answer(self, method, fields):
        """A signed answer, checked by the SDK's client before it is sent."""
        node = json.dumps(fields, ensure_ascii=False, indent=1)
        sign = sign_with_rsa2(self.platform_private, node, CHARSET)
        name = method.replace(".", "_") + "_response"
        body = f'{{"{name}":{node},\n  "sign":"{sign}"}}'.encode(CHARSET)
        # What the SDK's `execute` sets on its thread before it parses.
        THREAD_LOCAL.logger = None
        THREAD_LOCAL.uuid = str(uuid.uuid4())
        parsed = json.loads(self.client._DefaultAlipayClient__parse_response(body))
        if parsed != fields:
            raise RuntimeError(f"the SDK parsed {parsed!r} from our own answer")
        return body

    def handle(self, params):
        method = params.get("method", "")
        biz, refusal = self.verify(params)
        self.record(method, refusal, biz)
        if refusal:
            fields = {
                "code": "40002",
                "msg": "Invalid Arguments",
                "sub_code": "isv.invalid-signature",
                "sub_msg": refusal,
            }
            return self.answer("error", fields)
        with self.lock:
            found = None
            for ext, a in self.agreements.items():
                if biz.get("agreement_no") and a["agreement_no"] == biz["agreement_no"]:
                    found = (ext, a)
                elif biz.get("external_agreement_no") == ext:
                    found = (ext, a)
            if found is None:
                fields = {
                    "code": "40004",
                    "msg": "Business Failed",
                    "sub_code": "USER_AGREEMENT_NOT_EXIST",
                    "sub_msg": "用户协议不存在",
                }
            elif method == QUERY:
                ext, a = found
                fields = {
                    "code": "10000",
                    "msg": "Success",
                    "external_agreement_no": ext,
                    "status": a["status"],
                    "personal_product_code": "GENERAL_WITHHOLDING_P",
                    "sign_scene": SIGN_SCENE,
                    "principal_id": "2088000000000001",
                    "memo": AWKWARD,
                }
                if a["agreement_no"]:
                    fields["agreement_no"] = a["agreement_no"]
            elif method == UNSIGN and found[1]["status"] == "UNSIGN":
                fields = {
                    "code": "40004",
                    "msg": "Business Failed",
                    "sub_code": "AGREEMENT_ALREADY_UNSIGNED",
                    "sub_msg": "协议已解约",
                }
            elif method == UNSIGN:
                ext, a = found
                a["status"] = "UNSIGN"
                fields = {"code": "10000", "msg": "Success", "memo": AWKWARD}
            else:
                fields = {"code": "40004", "msg": "Business Failed", "sub_code": "UNKNOWN_METHOD"}
        return self.answer(method, fields)

    def open_sign_page(self, url):
        """The user's browser opens the signing page the service handed out."""
        if not url.startswith(self.public_url + "?"):
            return None, f"the page is not on the gateway: {url[:80]}"
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True))
        method = params.get("method", "")
        biz, refusal = self.verify(params)
        self.record(method, refusal, biz)
        if refusal:
            return None, refusal
        if method != PAGE_SIGN:
            return None, f"method {method}"
        ext = biz.get("external_agreement_no")
        if not ext:
            return None, "no external_agreement_no"
        if biz.get("sign_scene") != SIGN_SCENE:
            return None, f"sign_scene {biz.get('sign_scene')!r} is not the scene agreed for the product"
        if not (len(ext) <= 32 and ext.isascii() and ext.isalnum()):
            # Alipay takes at most 32 letters and digits.
            return None, f"external_agreement_no {ext!r} is not 1 to 32 letters and digits"
        with self.lock:
            self.agreements[ext] = {"status": "TEMP", "agreement_no": ""}
        return (ext, params, biz), None

    def user_unsigns_quietly(self, ext):
        """The user ends the agreement in the Alipay app; the notification is lost."""
        with self.lock:
            self.agreements[ext]["status"] = "UNSIGN"

    def calls(self, method, ext, agreement_no):
        """The verified calls of `method` about this agreement."""
        with self.lock:
            return [
                b for (m, r, b) in self.requests
                if m == method and r is None
                and (b.get("agreement_no") == agreement_no or b.get("external_agreement_no") == ext)
            ]

    def user_signs(self, ext):
        with self.lock:
            a = self.agreements[ext]
            a["status"] = "NORMAL"
            a["agreement_no"] = "2026120200%010d" % self.next_no
            self.next_no += 1
            return a["agreement_no"]


def notification(pairs, key):
    """A notification form body signed by the SDK as Alipay signs it: over
    every parameter but `sign` and `sign_type`, empty values included."""
    content = get_sign_content(pairs)
    signed = dict(pairs)
    signed["sign_type"] = "RSA2"
    signed["sign"] = sign_with_rsa2(key, content, CHARSET)
    return urllib.parse.urlencode(signed, encoding=CHARSET).encode()


def serve(gateway, listen):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n).decode(CHARSET)
            params = dict(urllib.parse.parse_qsl(raw, keep_blank_values=True))
            query = urllib.parse.urlsplit(self.path).query
            params.update(urllib.parse.parse_qsl(query, keep_blank_values=True))
            try:
                body = gateway.handle(params)
                status = 200
            except Exception as e:
                body = f"harness error: {e}".encode()
                status = 500
                check(False, "the gateway answers", repr(e))
            self.send_response(status)
            self.send_header("Content-Type", "text/html;charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    host, port = listen.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Api:
    def __init__(self, base, token, auditor):
        self.base, self.token, self.auditor = base, token, auditor

    def call(self, method, path, body=None, token=None, headers=None, raw=None):
        h = {"Authorization": "Bearer " + (token or self.token)}
        h.update(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, headers=h, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def json(self, method, path, **kw):
        status, text = self.call(method, path, **kw)
        try:
            return status, json.loads(text)
        except ValueError:
            return status, {"_text": text}

    def notify(self, body):
        h = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        req = urllib.request.Request(
            self.base + "/v1/channels/alipay/notify", data=body, headers=h, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def bind(self, user, card):
        body = {
            "card_number": card,
            "expiry_month": 12,
            "expiry_year": 2035,
            "cvv": "123",
            "holder_name": "张三",
            "id_number": "11010519491231002X",
            "phone": "13800138000",
            "consent": {
                "text_version": "v1",
                "text_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            },
            "channel": "alipay",
        }
        return self.json(
            "POST",
            f"/v1/users/{user}/cards",
            body=body,
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )

    def card(self, user, card_id):
        return self.json("GET", f"/v1/users/{user}/cards/{card_id}")[1]

    def consent(self, user, card_id):
        status, v = self.json("GET", f"/v1/consents?user_id={user}&limit=100", token=self.auditor)
        for c in v.get("consents", []):
            if c.get("card_id") == card_id:
                return c
        return {"_status": status, "_body": v}

    def channel_events(self, card_id, action="binding.channel_event"):
        path = f"/v1/audit/events?card_id={card_id}&action={action}&limit=100"
        status, v = self.json("GET", path, token=self.auditor)
        return v.get("events", []) if status == 200 else None


def wait_ready(base, deadline):
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def flow(gw, api, keys):
    user = "sdk-ali-" + uuid.uuid4().hex[:8]
    notify_url = api.base + "/v1/channels/alipay/notify"

    # 1. A bind through the alipay channel hands out the signing page.
    status, v = api.bind(user, "4111111111111111")
    if not check(status == 201 and v.get("status") == "pending_verification",
                 "a bind answers 201 pending_verification", f"{status} {v}"):
        return
    card_id = v["id"]
    url = (v.get("next_action") or {}).get("url", "")
    check((v.get("next_action") or {}).get("type") == "redirect", "the bind's next action is a redirect", v)

    # 2. The page verifies as the gateway verifies it.
    opened, why = gw.open_sign_page(url)
    if not check(opened is not None, "the signing page's signature verifies with the SDK", why):
        return
    ext, params, biz = opened
    check(card_of_code(ext) == card_id,
          "external_agreement_no is the card's UUID and the bind's attempt, 28 letters and digits",
          f"{ext} does not name {card_id}")
    check(params.get("notify_url") == notify_url, "notify_url is the service's", params.get("notify_url"))
    check(biz.get("personal_product_code") == "GENERAL_WITHHOLDING_P", "the product code", biz)
    check(biz.get("sign_scene") == SIGN_SCENE, "the signing scene is the configured one", biz)

    # 3. The user signs; Alipay posts a notification signed as it signs them.
    agreement_no = gw.user_signs(ext)
    now = beijing_now()
    pairs = {
        "notify_type": "dut_user_sign",
        "notify_id": "sdk-" + uuid.uuid4().hex,
        "notify_time": now,
        "app_id": gw.app_id,
        "status": "NORMAL",
        "agreement_no": agreement_no,
        "external_agreement_no": ext,
        "personal_product_code": "GENERAL_WITHHOLDING_P",
        "sign_scene": SIGN_SCENE,
        "alipay_user_id": "2088000000000001",
        "invalid_time": "2115-02-01 00:00:00",
        "sign_time": now,
        "zm_open_id": "",
        "external_logon_id": AWKWARD,
    }
    body = notification(pairs, gw.platform_private)
    status, text = api.notify(body)
    check((status, text) == (200, "success"), "the signed notification is acknowledged", f"{status} {text}")
    card = api.card(user, card_id)
    check(card.get("status") == "active", "the card is active", card)
    consent = api.consent(user, card_id)
    check(consent.get("agreement_id") == agreement_no, "the consent names the agreement", consent)

    # 4. The same notification again: acknowledged, nothing changes.
    status, text = api.notify(body)
    check((status, text) == (200, "success"), "a replayed notification is acknowledged", f"{status} {text}")
    check(api.card(user, card_id) == card, "a replay changes nothing", api.card(user, card_id))
    events = api.channel_events(card_id)
    check(events is not None and len(events) == 1, "one channel event applied", events)

    # 5. Tampered after signing, and signed by a stranger: refused.
    tampered = body.replace(b"dut_user_sign", b"dut_user_unsign", 1)
    status, v = api.json("POST", "/v1/channels/alipay/notify", raw=tampered,
                         headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    check(status == 401 and v.get("error", {}).get("code") == "invalid_signature",
          "a tampered notification is refused as invalid_signature", f"{status} {v}")
    forged = notification(dict(pairs, notify_type="dut_user_unsign", status="UNSIGN",
                               notify_id="sdk-forged"), keys["stranger"])
    status, v = api.json("POST", "/v1/channels/alipay/notify", raw=forged,
                         headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    check(status == 401 and v.get("error", {}).get("code") == "invalid_signature",
          "a notification signed by another key is refused", f"{status} {v}")
    check(api.card(user, card_id) == card, "refused notifications change nothing", api.card(user, card_id))

    # 6. The service unbinds: one verified unsign call, the answer verified.
    status, v = api.json("DELETE", f"/v1/users/{user}/cards/{card_id}")
    check(status == 200 and v.get("status") == "inactive", "the unbind answers 200 inactive", f"{status} {v}")
    unsigns = gw.calls(UNSIGN, ext, agreement_no)
    check(len(unsigns) == 1, "exactly one verified unsign call names the agreement", gw.requests)
    check(gw.agreements[ext]["status"] == "UNSIGN", "the gateway's agreement is unsigned", gw.agreements[ext])
    # The service took the SDK-signed answer: a refused or unverifiable one
    # leaves a `binding.channel_unsign` event ("may still be active").
    failed_unsign = api.channel_events(card_id, "binding.channel_unsign")
    check(failed_unsign == [], "the service verified the unsign answer", failed_unsign)

    # 7. A second card: signed, then ended by the user in the Alipay app
    # with the notification lost. The service's unsign is refused
    # (AGREEMENT_ALREADY_UNSIGNED, signed), so it asks: the query's signed
    # answer carries text that must be verified byte for byte.
    status, v = api.bind(user, "5555555555554444")
    if not check(status == 201, "a second bind answers 201", f"{status} {v}"):
        return
    card2 = v["id"]
    opened, why = gw.open_sign_page((v.get("next_action") or {}).get("url", ""))
    if not check(opened is not None, "the second signing page verifies", why):
        return
    ext2 = opened[0]
    no2 = gw.user_signs(ext2)
    now = beijing_now()
    body2 = notification(dict(pairs, notify_id="sdk-" + uuid.uuid4().hex, agreement_no=no2,
                              external_agreement_no=ext2, notify_time=now, sign_time=now),
                         gw.platform_private)
    status, text = api.notify(body2)
    check((status, text) == (200, "success") and api.card(user, card2).get("status") == "active",
          "the second card is active", f"{status} {text}")
    gw.user_unsigns_quietly(ext2)
    status, v = api.json("DELETE", f"/v1/users/{user}/cards/{card2}")
    check(status == 200 and v.get("status") == "inactive", "the second unbind answers 200 inactive",
          f"{status} {v}")
    check(len(gw.calls(UNSIGN, ext2, no2)) == 1, "one verified unsign of the second agreement",
          gw.requests)
    check(len(gw.calls(QUERY, ext2, no2)) == 1, "then one verified query of it", gw.requests)
    failed_unsign = api.channel_events(card2, "binding.channel_unsign")
    check(failed_unsign == [], "the service verified the refusal and the query's answer",
          failed_unsign)

    # 8. Every request the service sent verified.
    refused = [(m, r) for (m, r, _) in gw.requests if r is not None]
    check(not refused, "no request of the service was refused by the gateway", refused)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--token-file", required=True)
    p.add_argument("--auditor-token-file", required=True)
    p.add_argument("--keys", required=True)
    p.add_argument("--app-id", required=True)
    a = p.parse_args()
    read = lambda path: open(path, encoding="utf-8").read().strip()
    keys = {
        "app_public": read(f"{a.keys}/alipay_app_public.pem"),
        "platform": read(f"{a.keys}/alipay_platform_private.pem"),
        # As the Alipay console shows it (bare base64), which the service holds too.
        "platform_public": read(f"{a.keys}/alipay_public_key.txt"),
        "stranger": read(f"{a.keys}/alipay_stranger_private.pem"),
    }
    gw = Gateway(a.app_id, keys["app_public"], keys["platform"], keys["platform_public"],
                 f"http://{a.listen}/gateway.do")
    server = serve(gw, a.listen)
    deadline = time.monotonic() + 120
    if not wait_ready(a.service, time.monotonic() + 60):
        check(False, "the service is ready", f"no 200 from {a.service}/readyz in 60 s")
    else:
        api = Api(a.service.rstrip("/"), read(a.token_file), read(a.auditor_token_file))
        ended = []

        def run():
            try:
                flow(gw, api, keys)
                ended.append(True)
            except BaseException:  # a dropped connection, a timeout, a body not as expected
                check(False, "the flow ran to its end", traceback.format_exc())

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            check(False, "the flow finished", "the 120 s deadline passed")
        elif not ended and not failures:
            check(False, "the flow ran to its end", "it stopped without a failed check")
    server.shutdown()
    if failures:
        print(f"alipay-sdk: {len(failures)} check(s) failed", flush=True)
        sys.exit(1)
    print("alipay-sdk: every check passed", flush=True)


if __name__ == "__main__":
    main()
