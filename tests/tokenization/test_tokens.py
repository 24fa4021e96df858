"""Exact token counting: safe cuts, streaming, loaders, known values.

Runs on the real Gemma 3 and Llama 4 tokenizer files and real corpus documents;
nothing is mocked. Whole file: ~12 s of CPU.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from ingestion.tokens.counting import (
    HFBPECounter,
    TiktokenCounter,
    TokenCounter,
    TokenizerLimitError,
    count_stream,
    estimate_tokens,
    load_counter,
)
from ingestion.types import TokenCount
from tests.examples import examples
from tests.tokenization.conftest import GEMMA_PATH, Recording

# Pieces chosen to sit on every branch of the Llama 4 split pattern and on
# Gemma's added tokens: newline/CR runs, "\n/", contractions, digit runs,
# combining marks, CJK, emoji with modifiers, exotic whitespace (NBSP, U+3000,
# U+2028, U+001C which isspace() but not \s), special-token spellings, "▁"
# (Gemma's space), byte-token spellings and a lone surrogate.
FRAGMENTS = [
    "\n", "\n\n", "\n\n\n", "\r\n", "\r", " ", "  ", "\t", " \n", "\n ", "/", "//", "\n/",
    ";\n//", "'", "'s", "'S", "'ll", "'VE", "don't", "1", "12", "123", "1234", "3.14",
    "a", "A", "Ab", "aB", "hello", "World", "é", "e\u0301", "一", "中文", "ひらがな", "한국어",
    "Привет", "мир", "مرحبا", "😀", "👍🏽", "\u00a0", "\u3000", "\u2028", "\x1c", "\x85",
    ".", "...", "?!", "(", ")", "{", "}", "<", ">", "|", "<|begin_of_text|>", "<|eot|>",
    "<start_of_turn>", "<end_of_turn>", "<bos>", "<table>", "</td>", "▁", "▁▁", "<0x0A>",
    "\ufffd", "\ud800",
]  # fmt: skip
adversarial = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=3)), max_size=24).map(
    "".join
)

SLOW = settings(
    max_examples=examples(120, 300), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _pieces(text: str) -> Iterator[str]:
    """Irregular pieces, from 1 char to more than a whole slice."""
    sizes = [1, 7, 100, 5_000, 70_000, 3]
    pos, k = 0, 0
    while pos < len(text):
        yield text[pos : pos + sizes[k % len(sizes)]]
        pos += sizes[k % len(sizes)]
        k += 1


# --- safe cuts ------------------------------------------------------------------


@SLOW
@given(text=adversarial, tail=adversarial)
def test_every_safe_cut_keeps_the_count_for_any_continuation(
    counter: TokenCounter, text: str, tail: str
) -> None:
    full = text + tail
    whole = counter.count(full)
    cuts = set()
    for limit in range(len(text) + 2):
        cut = counter.safe_cut(text, limit)
        assert 0 <= cut <= limit
        cuts.add(cut)
    for cut in sorted(cuts - {0}):
        assert cut < len(text)
        assert counter.count(full[:cut]) + counter.count(full[cut:]) == whole, (cut, full)


@pytest.mark.parametrize(
    ("text", "cut"),
    [
        ("a\n\nb", 2),  # inside a newline run: "\n\n" is one piece
        ("x;\n//y", 3),  # after "\n" but before "/": D's tail takes ";\n//"
        ("a\r\nb", 2),  # between "\r" and "\n"
        ("don't", 3),  # before a contraction
        ("hello", 3),  # inside a word
    ],
)
def test_scout_refuses_cuts_that_really_change_the_count(
    scout: TokenCounter, text: str, cut: int
) -> None:
    assert scout.count(text[:cut]) + scout.count(text[cut:]) != scout.count(text)
    assert scout.safe_cut(text, cut) < cut


def test_scout_cut_rules_on_examples(scout: TokenCounter) -> None:
    assert scout.safe_cut("ab\ncd", 10) == 3  # rule 1: after "\n" before a letter
    assert scout.safe_cut("one two\n", 8) == 3  # rule 2; "\n" at the end: next char unknown
    assert scout.safe_cut("x\n/y z", 3) == 0  # neither rule applies before index 3
    assert scout.safe_cut("aaaa", 4) == 0


def test_gemma_cut_rules_on_examples(gemma: TokenCounter) -> None:
    assert isinstance(gemma, HFBPECounter)
    # The vocabulary fact the newline cuts rest on.
    assert sorted(p for p in gemma.pairs if p[0] == "\n") == ["\n\n"]
    assert gemma.safe_cut("ab\ncd", 10) == 3
    assert gemma.safe_cut("hello", 5) == 0
    assert gemma.count("hel") + gemma.count("lo") != gemma.count("hello")


def test_isspace_covers_regex_whitespace() -> None:
    # TiktokenCounter tests "not whitespace" with str.isspace(); that is only
    # conservative if every Unicode White_Space character (regex \s) is isspace().
    white_space = [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B)]
    white_space += [0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
    assert all(chr(c).isspace() for c in white_space)


# --- streaming ------------------------------------------------------------------


def test_stream_equals_whole_text_on_real_documents(
    counter: TokenCounter, real_text: tuple[str, str]
) -> None:
    name, text = real_text
    assert len(text) > 20_000, f"{name}: extraction produced too little text"
    rec = Recording(counter)
    result = count_stream(rec, _pieces(text), slice_chars=4096)
    expected = TokenCount(counter.count(text), True, counter.name, "tokenizer", counter.model)
    assert result == expected, name
    # Many real cuts happened, and no chunk grew past the normal bound.
    assert len(rec.chunks) >= len(text) // (4 * 4096), name
    assert max(rec.chunks) <= 3 * 4096, name


@SLOW
@given(
    parts=st.lists(adversarial, max_size=40),
    slice_chars=st.integers(1, 64),
)
def test_stream_property_tiny_slices(
    counter: TokenCounter, parts: list[str], slice_chars: int
) -> None:
    text = "".join(parts)
    result = count_stream(counter, parts, slice_chars=slice_chars)
    assert result.exact
    assert result.count == counter.count(text)


@SLOW
@given(parts=st.lists(adversarial, max_size=40), max_buffer=st.integers(2, 32))
def test_stream_with_forced_cuts_is_honest(
    counter: TokenCounter, parts: list[str], max_buffer: int
) -> None:
    rec = Recording(counter)
    result = count_stream(rec, parts, slice_chars=2, max_buffer_chars=max_buffer)
    if result.exact:
        assert result.count == counter.count("".join(parts))
    assert all(n <= max_buffer + 2 for n in rec.chunks)


def test_pathological_word_is_cut_anyway_and_flagged(counter: TokenCounter) -> None:
    text = "a" * 50_000
    assert counter.safe_cut(text, len(text)) == 0
    rec = Recording(counter)
    pieces = [text[i : i + 100] for i in range(0, len(text), 100)]
    result = count_stream(rec, pieces, slice_chars=1024, max_buffer_chars=8192)
    assert not result.exact
    assert max(rec.chunks) <= 8192 + 1024
    # The threshold doubles after a failed scan instead of rescanning per piece.
    assert rec.scans <= 4 * len(text) // 8192 + 4
    assert abs(result.count - counter.count(text)) <= 2 * len(rec.chunks)


def test_huge_whitespace_run(scout: TokenCounter, gemma: TokenCounter) -> None:
    text = "x" + " " * 600_000 + "y"
    # tiktoken's regex engine panics on ~1M whitespace; the counter refuses first.
    with pytest.raises(TokenizerLimitError):
        scout.count(text)
    result = count_stream(scout, [text])
    assert not result.exact
    assert 600_000 // 64 <= result.count <= 600_000 // 16
    # Gemma has no such limit and no cut inside the run: exact, one chunk.
    assert count_stream(gemma, [text]) == TokenCount(
        gemma.count(text), True, gemma.name, "tokenizer", gemma.model
    )


def test_stream_of_nothing(counter: TokenCounter) -> None:
    assert count_stream(counter, []) == TokenCount(
        0, True, counter.name, "tokenizer", counter.model
    )
    assert count_stream(counter, ["", ""]).count == 0
    with pytest.raises(ValueError):
        count_stream(counter, ["x"], slice_chars=10, max_buffer_chars=5)


# --- known values ---------------------------------------------------------------

# Counts cross-checked against llama-models 0.3.0's own llama4 Tokenizer class
# (encode with bos/eos off) and against tokenizers' default encode.
KNOWN = [
    ("The quick brown fox jumps over the lazy dog.", 10, 10),
    ("Привет, мир! 你好\uff0c世界。 😀\n\n\n  x", 13, 15),
    ("<|begin_of_text|>", 8, 6),
    ("<start_of_turn>user\nhi<end_of_turn>", 17, 13),
]


@pytest.mark.parametrize(("text", "gemma_n", "scout_n"), KNOWN)
def test_known_counts(
    gemma: TokenCounter, scout: TokenCounter, text: str, gemma_n: int, scout_n: int
) -> None:
    assert (gemma.count(text), scout.count(text)) == (gemma_n, scout_n)


def test_scout_vocabulary_and_specials(scout: TokenCounter) -> None:
    assert isinstance(scout, TiktokenCounter)
    enc = scout.encoding
    assert scout.vocab_size == enc.n_vocab == 202_048
    specials = {
        "<|begin_of_text|>": 200_000,
        "<|header_start|>": 200_005,
        "<|image_start|>": 200_080,
        "<|reasoning_thinking_end|>": 201_143,
        "<|reserved_special_token_903|>": 202_047,
    }
    for token, token_id in specials.items():
        assert enc.encode(token, allowed_special="all") == [token_id]
    # As document text, a special-token spelling is plain text.
    plain = enc.encode("<|begin_of_text|>", disallowed_special=())
    assert 200_000 not in plain
    assert scout.count("<|begin_of_text|>") == len(plain) > 1
    assert scout.name.startswith("llama-models 0.3.0")


def test_gemma_vocabulary_and_raw_library(gemma: TokenCounter) -> None:
    assert isinstance(gemma, HFBPECounter)
    assert gemma.vocab_size == 262_144
    assert gemma.tokenizer.token_to_id("<bos>") == 2
    assert gemma.tokenizer.token_to_id("<end_of_turn>") == 106
    raw = Tokenizer.from_file(str(GEMMA_PATH))  # library defaults, nothing of ours
    sentence = KNOWN[0][0]
    assert gemma.count(sentence) == len(raw.encode(sentence, add_special_tokens=False).ids)
    # The library's default matches "<start_of_turn>" as one special token; we
    # count what the document spells.
    turn = "<start_of_turn>"
    assert len(raw.encode(turn, add_special_tokens=False).ids) == 1
    raw.encode_special_tokens = True
    assert gemma.count(turn) == len(raw.encode(turn, add_special_tokens=False).ids) > 1
    assert gemma.name == "gemma3-270m tokenizer.json (Gemma 3 vocab, 262144)"


def test_lone_surrogates_count_as_replacement_chars(counter: TokenCounter) -> None:
    assert counter.count("a\ud800b\udfff") == counter.count("a\ufffdb\ufffd")


def test_estimate() -> None:
    assert estimate_tokens(10) == TokenCount(4, False, "estimate (3 chars/token)", "estimate")
    assert estimate_tokens(0).count == 0
    with pytest.raises(ValueError):
        estimate_tokens(-1)


# --- loading --------------------------------------------------------------------


def _write_tiktoken(path: Path, tokens: list[bytes]) -> None:
    lines = [f"{base64.b64encode(t).decode()} {rank}" for rank, t in enumerate(tokens)]
    path.write_text("\n".join(lines) + "\n")


def _tiny_bpe(path: Path, pre_tokenizer: pre_tokenizers.PreTokenizer | None) -> None:
    vocab = {f"<0x{b:02X}>": b for b in range(256)}
    vocab.update({"<unk>": 256, "a": 257, "b": 258, "ab": 259, "▁": 260})
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=[("a", "b")], byte_fallback=True, unk_token="<unk>")
    )
    tok.normalizer = normalizers.Replace(" ", "▁")
    if pre_tokenizer is not None:
        tok.pre_tokenizer = pre_tokenizer
    tok.save(str(path))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "No such file"),
        (b"", "no tokens"),
        (bytes(range(256)) * 8, "tiktoken file"),
        (b"!!!notbase64 0\n", "line 1"),
        (b"YQ== 0\nYg== 2\n", "ranks are not exactly"),
        (b'{"version": "1.0"}', "not a readable tokenizer.json"),
    ],
)
def test_loader_errors_name_the_path(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "tok.model"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        load_counter(path)
    assert str(path) in str(info.value)


def test_loader_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a regular file"):
        load_counter(tmp_path)


def test_loader_refuses_real_pre_tokenizers(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    _tiny_bpe(path, pre_tokenizers.ByteLevel())
    with pytest.raises(ValueError, match="pre_tokenizer 'ByteLevel'") as info:
        load_counter(path)
    assert str(path) in str(info.value)


def test_loader_accepts_gemma_shaped_tokenizer(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    _tiny_bpe(path, pre_tokenizers.Split(" ", "merged_with_previous"))
    tiny = load_counter(path)
    assert isinstance(tiny, HFBPECounter)
    assert tiny.count("abab") == 2
    assert tiny.safe_cut("abab", 3) == 2  # "ba" is in no token
    assert tiny.safe_cut("abab", 1) == 0  # "ab" is
    assert "tokenizer.json" in tiny.name


def test_loader_reads_any_tiktoken_file_with_the_llama4_layout(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.model"
    _write_tiktoken(path, [bytes([b]) for b in range(256)])
    tiny = load_counter(path)
    assert isinstance(tiny, TiktokenCounter)
    assert tiny.vocab_size == 256 + 2048
    assert tiny.count("hello") == 5
    assert tiny.encoding.encode("<|begin_of_text|>", allowed_special="all") == [256]


def test_counters_are_cached_per_path_until_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.model"
    _write_tiktoken(path, [bytes([b]) for b in range(256)])
    first = load_counter(path)
    assert load_counter(path) is first
    assert load_counter(tmp_path / "." / "tokenizer.model") is first
    _write_tiktoken(path, [bytes([b]) for b in range(256)] + [b"he"])
    os.utime(path, ns=(1, 1))
    second = load_counter(path)
    assert second is not first
    assert second.count("hello") == 4


def test_label_comes_from_source_json(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.model"
    _write_tiktoken(path, [bytes([b]) for b in range(256)])
    (tmp_path / "SOURCE.json").write_text(json.dumps({"file": path.name, "label": "tiny test"}))
    assert load_counter(path).name == "tiny test"
