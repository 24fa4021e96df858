"""Prefill throughput of a vLLM CPU server in bfloat16 and in float32, same model, same
prompt: the cost of `--dtype float32` (what
service.backends.serving_dtype.cpu_serving_dtype picks on a CPU without
avx512_bf16/amx_bf16) against bf16.

    PYTHONPATH=. python bench/cpu_dtype.py [--model smollm2-135m-instruct] [--tokens 1500]

One server at a time (each ~1-4 min to start on a busy 2-core machine), on one core,
prefix caching off so every repeat prefills the whole prompt; each request asks for one
output token, and the best of `--repeats` is kept. Prints tokens/s for each dtype and
fp32/bf16. On a CPU with bf16 hardware this shows what fp32 costs there; on one without,
the bf16 figure is vLLM's emulated bf16 (the case fp32 is for).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

from service.backends.server import VllmServer
from service.backends.serving_dtype import cpu_has_bf16
from service.config import Settings

CACHE = Settings().cache_dir  # LONGDOC_CACHE_DIR, as the service reads it
CORPUS = Path(os.environ.get("LONGDOC_CORPUS_DIR", CACHE / "corpus"))
PROMPT_FILE = CORPUS / "text" / "debian-policy.txt"


def prompt_text(server: VllmServer, tokens: int) -> str:
    """The corpus text's opening, cut to about `tokens` tokens by the server's own count."""
    text = PROMPT_FILE.read_text(errors="replace")[: tokens * 8]
    counted = httpx.post(f"{server.url}/tokenize", json={"prompt": text}, timeout=60).json()
    ids = counted["tokens"][:tokens]
    body = {"tokens": ids}
    return str(httpx.post(f"{server.url}/detokenize", json=body, timeout=60).json()["prompt"])


def prefill_rate(dtype: str, model_dir: Path, tokens: int, repeats: int, scratch: Path) -> float:
    server = VllmServer(
        python=CACHE / "vllm-venv" / "bin" / "python",
        model_dir=model_dir,
        served_model_name="m",
        max_model_len=max(2048, tokens + 64),
        log_path=scratch / f"vllm-{dtype}.log",
        cpu_cores="1",
        extra_args=["--no-enable-prefix-caching"],
        scratch_parent=scratch,
        dtype=dtype,
    )
    with server:
        started = server.wait_ready(timeout=900)
        text = prompt_text(server, tokens)
        best = 0.0
        with httpx.Client(base_url=server.url, timeout=600) as client:
            for i in range(repeats + 1):  # the first warms the kernels, not counted
                body = {"model": "m", "prompt": text, "max_tokens": 1, "temperature": 0}
                t0 = time.monotonic()
                out = client.post("/v1/completions", json=body).raise_for_status().json()
                seconds = time.monotonic() - t0
                rate = out["usage"]["prompt_tokens"] / seconds
                if i:
                    best = max(best, rate)
        print(f"{dtype}: ready in {started:.0f} s, prefill {best:,.0f} tokens/s", flush=True)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="folder under models/")
    parser.add_argument("--tokens", type=int, default=1500, help="prompt length")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    model_dir = CACHE / "models" / args.model
    bf16_cpu = cpu_has_bf16(Path("/proc/cpuinfo").read_text())
    print(f"CPU has bf16 instructions: {bf16_cpu}; {args.model}, {args.tokens} prompt tokens")
    with tempfile.TemporaryDirectory(prefix="bench-dtype-") as tmp:
        rates = {
            d: prefill_rate(d, model_dir, args.tokens, args.repeats, Path(tmp))
            for d in ("bfloat16", "float32")
        }
    ratio = rates["float32"] / rates["bfloat16"]
    print(f"fp32 / bf16 prefill: {ratio:.2f}")
    if args.json:
        figures = {"cpu_bf16": bf16_cpu, "model": args.model, "tokens": args.tokens, **rates}
        args.json.write_text(json.dumps({**figures, "ratio": ratio}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
