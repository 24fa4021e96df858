"""The two kinds of exact token counter, and the proofs of where each may cut a text.

A counter counts *content* tokens: no BOS/EOS or other template tokens are
added, and text that spells a special token (``<|begin_of_text|>``,
``<start_of_turn>``) is counted as the plain text it is, on both tokenizers
(a vLLM ``/tokenize`` of the same text may match them as one token each).
Gemma's *non-special* added tokens (newline runs, ``<table>``-style tags) are
still matched, as Gemma's tokenizer always does for ordinary text.
Lone surrogates (from ``surrogateescape`` decoding) are counted as one U+FFFD
each.
"""

from __future__ import annotations

import re
from typing import Protocol

import tiktoken
from tokenizers import Tokenizer


class TokenizerLimitError(ValueError):
    """The tokenizer library cannot count this text in one call (see TiktokenCounter)."""


class TokenCounter(Protocol):
    name: str

    @property
    def model(self) -> str | None:
        """The model whose tokenizer this is, where known."""
        ...

    def count(self, text: str) -> int:
        """Content tokens in `text` (no special tokens added)."""
        ...

    def safe_cut(self, text: str, limit: int) -> int:
        """Largest 0 < i <= limit with count(t[:i]) + count(t[i:]) == count(t) for
        every t that starts with `text`; 0 when no such i is proven.

        i is always < len(text): whether a cut is safe depends on the character
        after it, which must be known.
        """
        ...


_SURROGATE = re.compile("[\ud800-\udfff]")


def _clean(text: str) -> str:
    # Per code point, so it commutes with cutting. tiktoken would otherwise pair
    # up surrogates itself (not local) and tokenizers would raise TypeError.
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub("\ufffd", text)


def _is_surrogate(char: str) -> bool:
    return "\ud800" <= char <= "\udfff"


class TiktokenCounter:
    """Llama 4 (tiktoken BPE + the o200k-style split pattern).

    Safe cuts. tiktoken splits the text with the pattern (leftmost match, tried
    alternative by alternative: A/B letters with one optional leading
    non-letter/digit/CR/LF and an optional 's 't ... suffix; C 1-3 digits;
    D ` ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*`; E `\\s*[\\r\\n]+`; F `\\s+(?!\\S)`; G `\\s+`)
    and BPE-encodes each piece on its own. A cut at i is exact when no piece
    spans i and the pieces on each side come out the same when that side stands
    alone. The pattern has no anchors or lookbehind, so the right side always
    matches as it does in place; the left side can differ only through a
    greedy step or lookahead that reads text[i].

    Rule 1, text[i-1] == "\\n" and text[i] is neither whitespace nor "/":
    A, B, C never contain "\\n"; D's body excludes whitespace and its tail
    `[\\r\\n/]*` can go on after "\\n" only with \\r, \\n or "/"; E, F, G can go on
    only with whitespace. So no piece spans i. The only lookahead is F's: a
    piece ending at i through F is all whitespace, and on such a run E (tried
    first, A-D cannot start on two whitespace characters) ends at the same i
    whether text[i] exists or not. So the left side's pieces are unchanged.

    Rule 2 (long lines), text[i] == " " and text[i-1] is not whitespace: a space
    can only be the first character of an A/B/D piece and E/F/G hold only
    whitespace, so a piece containing text[i] starts at i; F cannot end at i
    because text[i-1] is not whitespace. Same conclusion.

    "Whitespace" is tested with str.isspace(), a superset of the regex's \\s
    (Unicode White_Space), which errs toward refusing a cut.
    """

    # fancy-regex overflows its backtracking stack on ~1,000,000 whitespace chars
    # in a row (tiktoken 0.14 panics); refuse well before that.
    MAX_WHITESPACE_RUN = 500_000
    _LONG_WHITESPACE = re.compile(r"\s{" + str(MAX_WHITESPACE_RUN) + "}")

    def __init__(self, encoding: tiktoken.Encoding, name: str, model: str | None = None) -> None:
        self.encoding = encoding
        self.name = name
        self.model = model
        self.vocab_size: int = encoding.n_vocab

    def count(self, text: str) -> int:
        text = _clean(text)
        if len(text) >= self.MAX_WHITESPACE_RUN and self._LONG_WHITESPACE.search(text):
            raise TokenizerLimitError(
                f"{self.name}: a run of >= {self.MAX_WHITESPACE_RUN} whitespace characters "
                "cannot be encoded by tiktoken in one call"
            )
        try:
            # encode_ordinary == encode(disallowed_special=()): special-token
            # spellings stay plain text, which is what a document holds.
            return len(self.encoding.encode_ordinary(text))
        except BaseException as exc:  # pyo3 panics are BaseException
            if type(exc).__name__ == "PanicException":
                raise TokenizerLimitError(f"{self.name}: tiktoken failed: {exc}") from exc
            raise

    def safe_cut(self, text: str, limit: int) -> int:
        hi = min(limit, len(text) - 1)
        if hi < 1:
            return 0
        # Each loop stops at its rule's last cut, and the newline search only
        # looks past the space cut, so the scan is as short as the answer allows.
        best = 0
        k = text.rfind(" ", 1, hi + 1)
        while k > 0:
            if not text[k - 1].isspace():
                best = k
                break
            k = text.rfind(" ", 1, k)
        j = text.rfind("\n", best, hi)
        while j >= best:
            after = text[j + 1]
            if after != "/" and not after.isspace():
                return j + 1
            j = text.rfind("\n", best, j)
        return best


class HFBPECounter:
    """A `tokenizers` BPE tokenizer with no effective pre-tokenization (Gemma 3).

    Safe cuts. Encoding is: match added tokens in the text (leftmost-longest),
    normalise the rest one character at a time (Gemma: " " -> "▁"), then run BPE
    over each whole segment (Gemma's Split on " " never fires after that), with
    byte fallback for characters missing from the vocabulary. BPE only ever
    merges two adjacent symbols into a symbol that is itself a vocabulary
    token, so a symbol covering both text[i-1] and text[i] would be a token
    containing that character pair. If no token or added token contains the
    pair, no merge and no added-token match crosses i, merges on the two sides
    never interact, and each side is merged in the same (rank, position) order
    as alone: the counts add up. ``pairs`` holds every adjacent pair inside any
    token (literal and with "▁" read as a raw space); the loader refuses
    tokenizers where this argument does not hold (other models, dropout, no
    byte fallback, strip flags, real pre-tokenizers such as ByteLevel).

    Gemma's vocabulary never has "\\n" followed by anything but "\\n" inside a
    token, so every line end is a cut; most word ends are too ("e▁" is not a
    token), which keeps the backward scan short.
    """

    def __init__(
        self, tokenizer: Tokenizer, pairs: frozenset[str], name: str, model: str | None = None
    ) -> None:
        self.tokenizer = tokenizer
        self.pairs = pairs
        self.name = name
        self.model = model
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)

    def count(self, text: str) -> int:
        if not text:
            return 0
        # encode_batch_fast skips offsets: ~2x faster than encode on long text.
        (encoding,) = self.tokenizer.encode_batch_fast([_clean(text)], add_special_tokens=False)
        return len(encoding.ids)

    def safe_cut(self, text: str, limit: int) -> int:
        pairs = self.pairs
        for i in range(min(limit, len(text) - 1), 0, -1):
            pair = text[i - 1 : i + 1]
            # A surrogate is counted as U+FFFD, whose pairs are not looked up here.
            if pair not in pairs and not (_is_surrogate(pair[0]) or _is_surrogate(pair[1])):
                return i
        return 0
