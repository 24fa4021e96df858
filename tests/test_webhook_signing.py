"""Webhook signatures, verified by the official Standard Webhooks library."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from service.webhooks.signing import (
    SECRET_PREFIX,
    SignatureError,
    generate_secret,
    sign,
    signed_headers,
    verify,
)

BODY = json.dumps({"type": "batch.completed", "data": {"id": "batch_1"}}).encode()


def test_generated_secrets_are_distinct_and_readable_by_the_official_library() -> None:
    secrets = {generate_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith(SECRET_PREFIX)
        assert len(base64.b64decode(secret[len(SECRET_PREFIX) :])) == 32
        Webhook(secret)  # parses it


def test_a_signed_delivery_verifies() -> None:
    secret = generate_secret()
    headers = signed_headers([secret], BODY)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)
    verify(secret, headers, BODY)


def test_the_signature_is_the_official_one_for_the_same_message() -> None:
    secret = generate_secret()
    ts = 1_700_000_000
    official = Webhook(secret).sign("msg_abc", datetime.fromtimestamp(ts, tz=UTC), "{}")
    assert sign([secret], "msg_abc", ts, b"{}") == official


def test_rotation_signs_with_every_active_secret() -> None:
    old, new, other = generate_secret(), generate_secret(), generate_secret()
    headers = signed_headers([old, new], BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):  # a receiver holding either one accepts it
        Webhook(secret).verify(BODY, headers)
        verify(secret, headers, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(BODY, headers)
    with pytest.raises(SignatureError):
        verify(other, headers, BODY)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h, b: (h, b.replace(b"completed", b"cancelled")),
        lambda h, b: (h, b + b" "),
        lambda h, b: ({**h, "webhook-id": h["webhook-id"] + "x"}, b),
        lambda h, b: ({**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}, b),
    ],
    ids=["body", "trailing-space", "id", "timestamp"],
)
def test_tampering_fails(tamper: object) -> None:
    secret = generate_secret()
    headers, body = tamper(signed_headers([secret], BODY), BODY)  # type: ignore[operator]
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)
    with pytest.raises(SignatureError):
        verify(secret, headers, body)


def test_a_retry_keeps_its_id_and_is_signed_afresh() -> None:
    secret = generate_secret()
    first = signed_headers([secret], BODY, timestamp=int(time.time()) - 60)
    retry = signed_headers([secret], BODY, message_id=first["webhook-id"])
    assert retry["webhook-id"] == first["webhook-id"]
    assert retry["webhook-signature"] != first["webhook-signature"]
    Webhook(secret).verify(BODY, retry)


def test_an_old_timestamp_is_refused_as_a_replay() -> None:
    secret = generate_secret()
    headers = signed_headers([secret], BODY, timestamp=int(time.time()) - 3600)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, headers)
    with pytest.raises(SignatureError, match="replay"):
        verify(secret, headers, BODY)


@pytest.mark.parametrize(
    "secret",
    [
        "",
        "whsec_",
        "nope_" + base64.b64encode(bytes(32)).decode(),
        "whsec_not base64!",
        "whsec_AAAA",
    ],
)
def test_bad_secrets_are_refused(secret: str) -> None:
    with pytest.raises(SignatureError):
        sign([secret], "msg_1", 1, b"{}")


def test_signing_needs_a_secret() -> None:
    with pytest.raises(SignatureError, match="at least one"):
        signed_headers([], BODY)
