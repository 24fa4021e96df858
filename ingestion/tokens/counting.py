"""Exact token counts from local tokenizer files, for texts of any length.

`load_counter` picks the counter for a file (ingestion.tokens.counters: what a count
means, and where each kind may cut a text).

Long documents are counted by `count_stream`, which splits the text only at
cuts the counter proves cannot change the total (`TokenCounter.safe_cut`), so
memory stays bounded and the count stays exact.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

import tiktoken

from ingestion.tokens.counters import (
    HFBPECounter,
    TiktokenCounter,
    TokenCounter,
    TokenizerLimitError,
)
from ingestion.tokens.files import (
    LLAMA4_SPLIT_PATTERN,
    llama4_special_tokens,
    load_hf_bpe,
    looks_like_json,
    read_label,
    read_model,
    read_tiktoken_ranks,
)
from ingestion.types import TokenCount

__all__ = [
    "HFBPECounter",
    "TiktokenCounter",
    "TokenCounter",
    "TokenizerLimitError",
    "count_stream",
    "estimate_tokens",
    "load_counter",
]


_CACHE: dict[Path, tuple[tuple[int, int], TokenCounter]] = {}
_CACHE_LOCK = threading.Lock()


def load_counter(path: Path) -> TokenCounter:
    """A counter for a ``tokenizer.json`` or a Llama 4 tiktoken ``tokenizer.model``.

    Cached per resolved path (Gemma's takes ~3 s to load); a file replaced on
    disk is reloaded. Raises ValueError naming the path for a missing,
    unreadable, malformed or unsupported file.
    """
    resolved = Path(path).expanduser().resolve()
    try:
        stat = resolved.stat()
    except OSError as exc:
        raise ValueError(f"tokenizer file {resolved}: {exc.strerror}") from exc
    if not resolved.is_file():
        raise ValueError(f"tokenizer file {resolved}: not a regular file")
    key = (stat.st_mtime_ns, stat.st_size)
    with _CACHE_LOCK:
        hit = _CACHE.get(resolved)
        if hit is not None and hit[0] == key:
            return hit[1]
        counter = _load(resolved)
        _CACHE[resolved] = (key, counter)
        return counter


def _load(path: Path) -> TokenCounter:
    label, model = read_label(path), read_model(path)
    if looks_like_json(path):
        tok, pairs = load_hf_bpe(path)
        vocab = tok.get_vocab_size(with_added_tokens=True)
        return HFBPECounter(tok, pairs, label or f"{path.name} ({vocab} ids)", model)
    ranks = read_tiktoken_ranks(path)
    try:
        encoding = tiktoken.Encoding(
            name=f"llama4:{path}",
            pat_str=LLAMA4_SPLIT_PATTERN,
            mergeable_ranks=ranks,
            special_tokens=llama4_special_tokens(len(ranks)),
        )
    except Exception as exc:
        raise ValueError(f"tiktoken file {path}: tiktoken rejected it ({exc})") from exc
    return TiktokenCounter(
        encoding, label or f"{path.name} (Llama 4 layout, {encoding.n_vocab} ids)", model
    )


def count_stream(  # noqa: C901
    counter: TokenCounter,
    pieces: Iterable[str],
    *,
    slice_chars: int = 1 << 16,
    max_buffer_chars: int = 1 << 22,
) -> TokenCount:
    """Count a text given as consecutive pieces, holding O(slice_chars) of it.

    Whenever the buffer passes its threshold, everything up to the last safe
    cut is counted and the rest carried. With no safe cut the threshold doubles
    (so rescans cost O(n) overall) up to `max_buffer_chars`; past that the
    buffer is counted anyway in `slice_chars` slices and the result says
    ``exact=False``. The same happens if the tokenizer cannot take a chunk in
    one call (TokenizerLimitError).
    """
    if slice_chars < 1 or max_buffer_chars < slice_chars:
        raise ValueError("need 1 <= slice_chars <= max_buffer_chars")
    total = 0
    exact = True

    def count_chunk(text: str) -> None:
        nonlocal total, exact
        try:
            total += counter.count(text)
        except TokenizerLimitError:
            count_sliced(text)

    def count_sliced(text: str) -> None:
        nonlocal total, exact
        exact = False
        # Small enough for any tokenizer call (tiktoken's limit is ~1M whitespace).
        step = min(slice_chars, 1 << 16)
        for start in range(0, len(text), step):
            total += counter.count(text[start : start + step])

    buf = ""
    pending: list[str] = []
    pending_len = 0
    threshold = slice_chars
    for piece in pieces:
        # Bound what one piece adds, so a caller's 40 MB string is not buffered whole.
        for start in range(0, len(piece), slice_chars):
            part = piece if len(piece) <= slice_chars else piece[start : start + slice_chars]
            pending.append(part)
            pending_len += len(part)
            if len(buf) + pending_len <= threshold:
                continue
            buf += "".join(pending)
            pending.clear()
            pending_len = 0
            cut = counter.safe_cut(buf, len(buf))
            if cut > 0:
                count_chunk(buf[:cut])
                buf = buf[cut:]
                # The carried tail had no proven cut; rescan once it has doubled.
                threshold = min(max(slice_chars, 2 * len(buf)), max_buffer_chars)
            elif len(buf) >= max_buffer_chars:
                count_sliced(buf)
                buf = ""
                threshold = slice_chars
            else:
                threshold = min(2 * len(buf), max_buffer_chars)
    rest = buf + "".join(pending)
    if rest:
        count_chunk(rest)
    return TokenCount(
        count=total, exact=exact, tokenizer=counter.name, method="tokenizer", model=counter.model
    )


# Characters per token used when no tokenizer is available. Measured on the
# corpus (Gemma 3 / Llama 4): English prose and docs 3.4-4.3 (KJV 3.8/3.8,
# Debian policy 4.1/4.3, Python docs 3.9/4.3, Linux docs 3.6/4.0, R manual
# PDF 3.4/3.6), Russian 3.2-4.1, Arabic 3.1-3.2, Chinese/Japanese/Korean
# 1.7-2.6. 3 over-counts the alphabetic scripts on purpose, because routing
# must not under-count a context budget; CJK text is still under-counted by up
# to ~45%, which is why an estimate is never exact.
ESTIMATE_CHARS_PER_TOKEN = 3


def estimate_tokens(chars: int) -> TokenCount:
    """ceil(chars / 3), method "estimate", exact False (see ESTIMATE_CHARS_PER_TOKEN)."""
    if chars < 0:
        raise ValueError("chars must be >= 0")
    return TokenCount(
        count=-(-chars // ESTIMATE_CHARS_PER_TOKEN),
        exact=False,
        tokenizer=f"estimate ({ESTIMATE_CHARS_PER_TOKEN} chars/token)",
        method="estimate",
    )
