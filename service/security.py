"""API keys: generated once, shown once, stored as SHA-256."""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "ld_"
_LOOKUP_CHARS = 12


def new_key() -> tuple[str, str, str]:
    """Return (key, lookup prefix, hash). Only the caller ever sees the key itself."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, lookup_prefix(key), hash_key(key)


def lookup_prefix(key: str) -> str:
    return key[len(KEY_PREFIX) : len(KEY_PREFIX) + _LOOKUP_CHARS]


def hash_key(key: str) -> str:
    # The secret has 256 bits of entropy, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def key_matches(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(key), stored_hash)


def well_formed(key: str) -> bool:
    return key.startswith(KEY_PREFIX) and len(key) > len(KEY_PREFIX) + _LOOKUP_CHARS
