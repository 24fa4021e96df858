"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

A delivery carries ``webhook-id`` (unique per message, the same on every retry, so
a receiver can drop duplicates), ``webhook-timestamp`` (Unix seconds, so it can
refuse replays) and ``webhook-signature``: ``v1,`` and the base64 HMAC-SHA256 of
``id.timestamp.body`` under the endpoint's secret. While a secret is rotated the
message is signed with every active one, space-separated, so receivers holding
either the old or the new secret verify it. Secrets are ``whsec_`` and base64 of
random bytes, the form the official libraries read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence

SECRET_PREFIX = "whsec_"
VERSION = "v1"
# The official verifiers refuse timestamps more than five minutes off.
TOLERANCE_S = 5 * 60
# 24 bytes is the Standard Webhooks minimum; 32 is a full SHA-256 block's worth of key.
SECRET_BYTES = 32


class SignatureError(ValueError):
    """A delivery that does not verify, or a secret that is not one."""


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(16)


def secret_key(secret: str) -> bytes:
    """The HMAC key a ``whsec_`` secret encodes."""
    if not secret.startswith(SECRET_PREFIX):
        raise SignatureError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("a webhook secret is whsec_ and base64") from None
    if len(key) < 24:
        raise SignatureError("a webhook secret needs at least 24 random bytes")
    return key


def _signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> bytes:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def sign(active: Sequence[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one ``v1,<base64>`` per active secret."""
    if not active:
        raise SignatureError("an endpoint needs at least one active secret to sign with")
    if not message_id:
        raise SignatureError("a webhook id is not empty")
    keys = [secret_key(s) for s in active]
    return " ".join(
        f"{VERSION},{base64.b64encode(_signature(k, message_id, timestamp, body)).decode()}"
        for k in keys
    )


def signed_headers(
    active: Sequence[str],
    body: bytes,
    *,
    message_id: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    """The three headers for a delivery of `body` (a retry passes its `message_id`)."""
    message_id = message_id or new_message_id()
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(active, message_id, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance_s: int = TOLERANCE_S,
) -> None:
    """Raise `SignatureError` unless `headers` sign `body` under `secret` (a receiver's view)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    message_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    if not (message_id and stamp and signatures):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise SignatureError("webhook-timestamp is not Unix seconds") from None
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        raise SignatureError("webhook-timestamp is too far from now (a replay?)")
    expected = _signature(secret_key(secret), message_id, timestamp, body)
    for item in signatures.split():
        version, _, value = item.partition(",")
        try:
            given = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if version == VERSION and hmac.compare_digest(given, expected):
            return
    raise SignatureError("no signature matches")
