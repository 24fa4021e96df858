"""Count a parsed text for every model role: local tokenizer, else the role's vLLM
server, else an estimate marked inexact."""

from __future__ import annotations

import codecs
import logging
from collections.abc import Iterator
from pathlib import Path

from ingestion.tokens.counting import count_stream, estimate_tokens, load_counter
from ingestion.types import TokenCount
from service.backends.tokenize import RemoteTokenizeError, count_with_server
from service.config import Settings
from service.deployment import MODEL_ROLES

log = logging.getLogger(__name__)
_READ_BYTES = 1 << 20


def iter_text(path: Path) -> Iterator[str]:
    """The file's text in ~1 MiB pieces, never the whole of it."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as f:
        while block := f.read(_READ_BYTES):
            if piece := decoder.decode(block):
                yield piece
        if tail := decoder.decode(b"", final=True):
            yield tail


def count_roles(text_path: Path, text_chars: int, settings: Settings) -> dict[str, TokenCount]:
    return {role: count_role(role, text_path, text_chars, settings) for role in MODEL_ROLES}


def count_role(role: str, text_path: Path, text_chars: int, settings: Settings) -> TokenCount:
    path = settings.tokenizers.get(role)
    if path is not None and path.is_file():
        return count_stream(load_counter(path), iter_text(text_path))
    for backend in (b for b in settings.backends if b.role == role):
        try:
            return count_with_server(str(backend.url), iter_text(text_path), settings)
        except RemoteTokenizeError as exc:
            log.warning("tokenize via %s failed: %s", backend.url, exc)
    log.warning("no tokenizer file or server for role %s: storing an estimate", role)
    return estimate_tokens(text_chars)
