"""Prefix-cache affinity for chat requests: the key that chat requests sharing a long
opening share, so that admission sends them to one replica back to back.

A batch often holds thousands of chat requests with one long system prompt or
context, differing only in the final question. vLLM's prefix cache serves the shared
opening's KV from memory only on the replica that computed it, so those requests are
worth keeping together, as the jobs on one document are (`admission`'s affinity).

The key covers every message but the last, each as the chat template sees it: its
role and its text (text parts joined as they are counted, `service/jobs/chat.py`).
Two requests whose openings differ in one character get different keys; the model is
not part of the key, as admission looks the key up among one role's jobs only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

# "prefix:" + key: an affinity that no document id (a UUID) can be.
AFFINITY_PREFIX = "prefix:"


def prefix_key(messages: Sequence[tuple[str, str]], min_chars: int) -> str | None:
    """sha256 (hex) of the (role, text) messages but the last, or None when they hold
    fewer than `min_chars` characters of text (a cache hit on them would save little)
    or there is no message before the last (nothing is shared)."""
    shared = messages[:-1]
    if not shared or sum(len(text) for _, text in shared) < min_chars:
        return None
    # JSON with ASCII escapes: one spelling per sequence of (role, text), whatever the
    # characters, so two requests with the same opening always hash alike.
    canonical = json.dumps([[role, text] for role, text in shared], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def affinity(prefix: str) -> str:
    """The admission affinity of chat jobs with this prefix key."""
    return AFFINITY_PREFIX + prefix
