"""Reading tokenizer files from disk, and the facts about them that safe cuts rest on.

Two formats:
- a Hugging Face ``tokenizer.json`` (the converted Gemma 3 tokenizer), read with
  ``tokenizers``; only the shape whose cut rule is proven in ``ingestion.tokens.counting``
  is accepted (BPE, byte fallback, a character-wise normaliser, no effective
  pre-tokenizer). Anything else is refused with a ValueError rather than
  counted with cut rules that were never argued for it.
- a tiktoken BPE file (``tokenizer.model``: ``base64(token) rank`` per line), read
  as the Llama 4 tokenizer: its split pattern and special-token layout are fixed
  here because the file itself carries neither.
"""

from __future__ import annotations

import base64
import binascii
import json
import operator
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer
from tokenizers.models import BPE

# Llama 4's pre-tokenizer (o200k-style). It is a fact about the model, not a
# choice: counts only match Meta's tokenizer with exactly this pattern.
LLAMA4_SPLIT_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n/]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+"
)

LLAMA4_NUM_SPECIAL = 2048


def llama4_special_tokens(num_base: int) -> dict[str, int]:
    """Llama 4's 2,048 special tokens, numbered right after the BPE ranks.

    Order (ids for the real 200,000-rank file): 5 basic tokens from 200000
    (``<|begin_of_text|>`` first), 75 text post-training tokens from 200005,
    1,054 vision tokens from 200080, 10 reasoning tokens from 201134, then
    ``<|reserved_special_token_N|>`` up to 202047.
    """
    names = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|fim_prefix|>",
        "<|fim_middle|>",
        "<|fim_suffix|>",
        "<|header_start|>",
        "<|header_end|>",
        "<|eom|>",
        "<|eot|>",
        "<|step|>",
    ]
    names += [f"<|text_post_train_reserved_special_token_{i}|>" for i in range(6)]
    names += ["<|python_start|>", "<|python_end|>", "<|finetune_right_pad|>"]
    names += [f"<|text_post_train_reserved_special_token_{i}|>" for i in range(8, 69)]
    names += ["<|image_start|>", "<|image_end|>"]
    names += [f"<|vision_reserved_special_token_{i}|>" for i in range(2)]
    names += ["<|tile_x_separator|>", "<|tile_y_separator|>"]
    names += [f"<|vision_reserved_special_token_{i}|>" for i in range(2, 6)]
    names += ["<|image|>", "<|vision_reserved_special_token_6|>", "<|patch|>"]
    names += [f"<|vision_reserved_special_token_{i}|>" for i in range(7, 1048)]
    names += [f"<|reasoning_reserved_special_token_{i}|>" for i in range(8)]
    names += ["<|reasoning_thinking_start|>", "<|reasoning_thinking_end|>"]
    names += [f"<|reserved_special_token_{i}|>" for i in range(LLAMA4_NUM_SPECIAL - len(names))]
    return {name: num_base + i for i, name in enumerate(names)}


def looks_like_json(path: Path) -> bool:
    """True when the file's first non-blank byte opens a JSON object."""
    try:
        with path.open("rb") as f:
            head = f.read(256)
    except OSError as exc:
        raise ValueError(f"tokenizer file {path}: cannot read ({exc.strerror})") from exc
    return head.lstrip().startswith(b"{")


def read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """Parse a tiktoken BPE file; ValueError naming the path on anything malformed."""
    ranks: dict[bytes, int] = {}
    try:
        with path.open("rb") as f:
            for lineno, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2:
                    raise ValueError(f"line {lineno}: expected 'base64-token rank'")
                try:
                    token = base64.b64decode(parts[0], validate=True)
                    rank = int(parts[1])
                except (binascii.Error, ValueError) as exc:
                    raise ValueError(f"line {lineno}: {exc}") from exc
                if token in ranks:
                    raise ValueError(f"line {lineno}: duplicate token")
                ranks[token] = rank
    except OSError as exc:
        raise ValueError(f"tiktoken file {path}: cannot read ({exc.strerror})") from exc
    except ValueError as exc:
        raise ValueError(f"tiktoken file {path}: {exc}") from exc
    if not ranks:
        raise ValueError(f"tiktoken file {path}: no tokens")
    # Special ids are numbered from len(ranks); a gap would make them collide.
    if set(ranks.values()) != set(range(len(ranks))):
        raise ValueError(f"tiktoken file {path}: ranks are not exactly 0..{len(ranks) - 1}")
    return ranks


def read_label(path: Path) -> str | None:
    """The human label that scripts/build-tokenizers.sh recorded next to the file."""
    return _source_field(path, "label")


def read_model(path: Path) -> str | None:
    """The model whose tokenizer the file is, as build-tokenizers.sh recorded it."""
    return _source_field(path, "model")


def _source_field(path: Path, key: str) -> str | None:
    source = path.parent / "SOURCE.json"
    try:
        meta: Any = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(meta, dict) and meta.get("file") == path.name:
        value = meta.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def load_hf_bpe(path: Path) -> tuple[Tokenizer, frozenset[str]]:  # noqa: C901
    """Load a tokenizer.json and compute the adjacent-character pairs it can join.

    Returns the tokenizer (special tokens in the text set to plain text, no
    truncation or padding) and every two-character string that occurs inside
    some token, in raw-text spelling. ``ingestion.tokens.counting`` cuts only between
    characters whose pair is not in that set; the checks below refuse every
    tokenizer feature that would make that rule unsound.
    """
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises plain Exception subclasses
        raise ValueError(f"tokenizer file {path}: not a readable tokenizer.json ({exc})") from exc

    def refuse(why: str) -> ValueError:
        return ValueError(f"tokenizer file {path}: unsupported for exact streaming counts: {why}")

    model = tok.model
    if not isinstance(model, BPE):
        raise refuse(f"model is {type(model).__name__}, only BPE is supported")
    if model.dropout:
        raise refuse("BPE dropout makes counts random")
    # Without byte fallback, unknown characters become <unk>, and fuse_unk joins
    # neighbouring <unk>s across any cut.
    if not model.byte_fallback:
        raise refuse("BPE without byte_fallback")
    if model.continuing_subword_prefix or model.end_of_word_suffix:
        raise refuse("word prefixes/suffixes depend on word boundaries")

    vocab = tok.get_vocab(with_added_tokens=True)
    byte_tokens = {f"<0x{b:02X}>" for b in range(256)}
    if not byte_tokens <= vocab.keys():
        raise refuse("byte_fallback without all 256 <0xNN> tokens")
    # A token spelling two byte tokens would mean merges join byte-fallback
    # pieces, which the character-pair rule cannot see.
    merged_bytes = re.compile(r"<0x[0-9A-F]{2}>")
    for token in vocab:
        if token not in byte_tokens and merged_bytes.search(token):
            raise refuse(f"token {token!r} merges byte-fallback pieces")

    char_map = _normalizer_char_map(tok, refuse)
    _check_no_pre_tokenization(tok, char_map, refuse)

    added: dict[int, AddedToken] = tok.get_added_tokens_decoder()
    for added_token in added.values():
        # Special tokens are matched as plain text below, so their flags are moot;
        # strip/word flags on the others would make matching depend on neighbours.
        if not added_token.special and (
            added_token.lstrip or added_token.rstrip or added_token.single_word
        ):
            raise refuse(f"added token {added_token.content!r} has lstrip/rstrip/single_word")

    pairs = _adjacent_pairs(list(vocab), char_map)
    tok.encode_special_tokens = True
    tok.no_truncation()
    tok.no_padding()
    return tok, pairs


_Refuse = Callable[[str], ValueError]


def _state(component: Any) -> dict[str, Any]:
    # Normalizer/PreTokenizer objects pickle to their JSON config.
    raw: Any = component.__getstate__()
    state: Any = json.loads(raw)
    if not isinstance(state, dict):
        return {}
    return state


def _normalizer_char_map(tok: Tokenizer, refuse: _Refuse) -> dict[str, str]:
    """Raw char -> normalised char, for normalisers that act one character at a time."""
    normalizer = tok.normalizer
    if normalizer is None:
        return {}
    state = _state(normalizer)
    steps = state.get("normalizers") if state.get("type") == "Sequence" else [state]
    if not isinstance(steps, list):
        raise refuse("unreadable normalizer")
    maps: list[tuple[str, str]] = []
    for step in steps:
        pattern = step.get("pattern", {}) if isinstance(step, dict) else {}
        content = step.get("content") if isinstance(step, dict) else None
        source = pattern.get("String") if isinstance(pattern, dict) else None
        if (
            not isinstance(step, dict)
            or step.get("type") != "Replace"
            or not isinstance(source, str)
            or not isinstance(content, str)
            or len(source) != 1
            or len(content) != 1
        ):
            # Lowercasing, NFKC, prepending "▁" etc. are not all character-local.
            raise refuse(f"normalizer step {step!r}: only one-character Replace is supported")
        maps.append((source, content))
    sources = {src for src, _ in maps}
    result: dict[str, str] = {}
    for char in sources:
        out = char
        for src, dst in maps:
            if out == src:
                out = dst
        result[char] = out
    return result


def _check_no_pre_tokenization(tok: Tokenizer, char_map: dict[str, str], refuse: _Refuse) -> None:
    pre = tok.pre_tokenizer
    if pre is None:
        return
    state = _state(pre)
    pattern = state.get("pattern", {})
    literal = pattern.get("String") if isinstance(pattern, dict) else None
    if state.get("type") == "Split" and isinstance(literal, str) and literal:
        # Gemma's case: split on " ", which the normaliser has already turned
        # into "▁", so the split never fires and BPE sees each whole segment.
        produced = set(char_map.values())
        if any(c in char_map and c not in produced for c in literal):
            return
    raise refuse(
        f"pre_tokenizer {state.get('type')!r} splits the text; safe cuts are only "
        "proven for BPE without effective pre-tokenization (Gemma)"
    )


def _adjacent_pairs(tokens: list[str], char_map: dict[str, str]) -> frozenset[str]:
    # One join plus C-level slicing is ~10x faster than a Python loop over
    # 262k tokens; the separator must not occur in any token.
    pairs: set[str] | None = None
    for sep in ("\uffff", "\U0010ffff", "\x00"):
        joined = sep.join(tokens)
        if joined.count(sep) == len(tokens) - 1:  # sep occurs in no token
            pairs = {p for p in set(map(operator.add, joined, joined[1:])) if sep not in p}
            break
    if pairs is None:
        pairs = {t[k : k + 2] for t in tokens for k in range(len(t) - 1)}
    # Tokens are spelled in normalised text; a raw character maps onto each
    # normalised one it turns into (Gemma: raw " " and raw "▁" are both "▁").
    # Keeping the literal spelling too only adds pairs: a superset is safe.
    preimages: dict[str, set[str]] = {}
    for raw, norm in char_map.items():
        preimages.setdefault(norm, {norm}).add(raw)
    if preimages:
        for pair in list(pairs):
            for a in preimages.get(pair[0], {pair[0]}):
                for b in preimages.get(pair[1], {pair[1]}):
                    pairs.add(a + b)
    return frozenset(pairs)
