"""A card's life through a client generated from the service's own spec.

scripts/generated-client.sh generates a Python client with
openapi-python-client from the running service's /openapi.json, puts it
on the path as `cardbind_client` and runs this file: every call below goes
through the generated functions and models, and every answer must parse
into the model the spec promises (`parsed`), not only carry the status.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import sys
import uuid

from cardbind_client import AuthenticatedClient
from cardbind_client.api.audit import list_audit_events, list_consents
from cardbind_client.api.cards import (
    bind_card,
    get_card,
    list_cards,
    set_default_card,
    unbind_card,
    verify_card,
)
from cardbind_client.api.family import (
    accept_share,
    list_shared_cards,
    revoke_share,
    share_card,
)
from cardbind_client.api.meta import lookup_bin
from cardbind_client.models import (
    AcceptShareBody,
    BindCardBody,
    Card,
    CardList,
    ConsentBody,
    ErrorEnvelope,
    MoneyBody,
    MoneyBodyCurrency,
    ShareCardBody,
    ShareDto,
    SharedCardDto,
    SharedCardList,
    VerifyCardBody,
)

BASE = os.environ["CARDBIND_GC_BASE"]
SERVICE = AuthenticatedClient(base_url=BASE, token=os.environ["CARDBIND_GC_SERVICE_TOKEN"])
AUDITOR = AuthenticatedClient(base_url=BASE, token=os.environ["CARDBIND_GC_AUDITOR_TOKEN"])
OTP = os.environ.get("CARDBIND_GC_OTP", "123456")
TEXT = "I agree to bind my card (test text)"
RUN = uuid.uuid4().hex[:8]


def check(cond: bool, what: str) -> None:
    if not cond:
        print(f"generated-client flow: FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def parsed(resp, model, status: int, what: str):
    check(
        resp.status_code == status,
        f"{what}: status {resp.status_code}, wanted {status}: {resp.content[:300]!r}",
    )
    check(isinstance(resp.parsed, model), f"{what}: answer did not parse as {model.__name__}")
    return resp.parsed


def consent(cls):
    return cls(text_version="2026-01", text_sha256=hashlib.sha256(TEXT.encode()).hexdigest())


def luhn(body: str) -> str:
    total = 0
    for i, c in enumerate(reversed(body)):
        d = int(c)
        if i % 2 == 0:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return body + str((10 - total % 10) % 10)


def main() -> None:
    alice, bob = f"gc-alice-{RUN}", f"gc-bob-{RUN}"
    pan = luhn("411111" + str(uuid.uuid4().int)[:9])
    body = BindCardBody(
        card_number=pan,
        expiry_month=12,
        expiry_year=datetime.date.today().year + 3,
        cvv="123",
        holder_name="Alice Zhang",
        id_number="11010519491231002X",
        phone="13800138000",
        consent=consent(ConsentBody),
    )
    card = parsed(
        bind_card.sync_detailed(alice, client=SERVICE, body=body, idempotency_key=f"gc-{RUN}"),
        Card,
        201,
        "bindCard",
    )
    check(card.status.value == "pending_verification", f"bound as {card.status}")
    check(pan not in repr(card.to_dict()), "the answer holds the card number")
    check(card.last4 == pan[-4:], "last4")

    # The same request under the same key replays the answer.
    again = bind_card.sync_detailed(alice, client=SERVICE, body=body, idempotency_key=f"gc-{RUN}")
    check(again.status_code == 201 and again.headers.get("idempotent-replayed") == "true", "replay")

    wrong = verify_card.sync_detailed(alice, card.id, client=SERVICE, body=VerifyCardBody(otp="000000"))
    err = parsed(wrong, ErrorEnvelope, 422, "verifyCard with a wrong code")
    check(err.error.code == "invalid_otp", f"wrong code refused as {err.error.code}")
    card = parsed(
        verify_card.sync_detailed(alice, card.id, client=SERVICE, body=VerifyCardBody(otp=OTP)),
        Card,
        200,
        "verifyCard",
    )
    check(card.status.value == "active" and card.is_default, "verified card active and default")

    listed = parsed(list_cards.sync_detailed(alice, client=SERVICE), CardList, 200, "listCards")
    check([c.id for c in listed.cards] == [card.id], "the list holds the card once")
    got = parsed(get_card.sync_detailed(alice, card.id, client=SERVICE), Card, 200, "getCard")
    check(got.id == card.id, "getCard")
    parsed(set_default_card.sync_detailed(alice, card.id, client=SERVICE), Card, 200, "setDefaultCard")

    # Family: Alice shares the card with Bob, who accepts and sees it masked.
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)
    share = parsed(
        share_card.sync_detailed(
            alice,
            card.id,
            client=SERVICE,
            body=ShareCardBody(
                secondary_user_id=bob,
                monthly_limit=MoneyBody(amount=50_000, currency=MoneyBodyCurrency.CNY),
                expires_at=expires,
                consent=consent(ConsentBody),
            ),
            idempotency_key=f"gc-share-{RUN}",
        ),
        ShareDto,
        201,
        "shareCard",
    )
    invites = parsed(list_shared_cards.sync_detailed(bob, client=SERVICE), SharedCardList, 200, "listSharedCards")
    check([s.share_id for s in invites.shared_cards] == [share.id], "Bob is invited once")
    shared = parsed(
        accept_share.sync_detailed(bob, share.id, client=SERVICE, body=AcceptShareBody(consent=consent(ConsentBody))),
        SharedCardDto,
        200,
        "acceptShare",
    )
    check(shared.last4 == pan[-4:] and pan not in repr(shared.to_dict()), "Bob sees the card masked")
    bobs = parsed(list_cards.sync_detailed(bob, client=SERVICE), CardList, 200, "listCards (Bob)")
    check(len(bobs.cards) == 1 and bobs.cards[0].shared is not None, "Bob lists the shared card")
    parsed(revoke_share.sync_detailed(alice, card.id, share.id, client=SERVICE), ShareDto, 200, "revokeShare")
    bobs = parsed(list_cards.sync_detailed(bob, client=SERVICE), CardList, 200, "listCards (Bob, revoked)")
    check(bobs.cards == [], "a revoked share leaves Bob's list")

    gone = parsed(unbind_card.sync_detailed(alice, card.id, client=SERVICE), Card, 200, "unbindCard")
    check(gone.status.value == "inactive", "unbound")

    events = list_audit_events.sync_detailed(client=AUDITOR, user_id=alice)
    check(events.status_code == 200 and events.parsed is not None, "listAuditEvents")
    actions = {e.action for e in events.parsed.events}
    for a in ("binding.create", "binding.verify", "binding.unbind", "share.create", "share.revoke"):
        check(a in actions, f"audit lacks {a}: {sorted(actions)}")
    consents = list_consents.sync_detailed(client=AUDITOR, user_id=alice)
    check(consents.status_code == 200 and consents.parsed is not None and consents.parsed.consents, "listConsents")

    info = lookup_bin.sync_detailed("622588", client=SERVICE)
    check(info.status_code == 200 and info.parsed is not None, "lookupBin")
    print(f"generated-client flow: ok ({BASE})")


if __name__ == "__main__":
    main()
