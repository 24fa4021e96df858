"""`longdoc kv`: the KV cache vLLM reserves for one request, from the registry alone."""

from __future__ import annotations

import json
from typing import Annotated, cast

import typer

from ingestion.capacity.kv import DTYPE_BYTES, KvConfig, KvDtype, KvReservation, kv_layout
from ingestion.capacity.registry import UnknownModelError, get_model

# Beyond any context a model advertises (Scout: 10M) by two orders of magnitude:
# a count this large is a typo, and the arithmetic would only mislead.
MAX_TOKENS = 1 << 30


def _fail(message: str) -> typer.Exit:
    typer.echo(f"longdoc kv: {message}", err=True)
    return typer.Exit(code=2)


def kv(  # noqa: C901
    model: Annotated[str, typer.Argument(help="Hugging Face id, e.g. google/gemma-4-31B-it.")],
    tokens: Annotated[int, typer.Option("--tokens", help="Request length L in tokens.")],
    kv_dtype: Annotated[str, typer.Option("--kv-dtype", help="fp32, bf16 or fp8.")] = "bf16",
    tp: Annotated[int, typer.Option("--tp", help="Tensor-parallel size.")] = 1,
    block_size: Annotated[int, typer.Option("--block-size", help="vLLM --block-size.")] = 16,
    in_flight_tokens: Annotated[
        int,
        typer.Option(
            "--in-flight-tokens",
            help="Batches in flight x max-num-batched-tokens (GPU async: 2 x 8192; CPU: 2048).",
        ),
    ] = 16384,
    no_hybrid: Annotated[
        bool, typer.Option("--no-hybrid", help="As --disable-hybrid-kv-cache-manager.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Bytes and blocks vLLM 0.32 reserves per request of L tokens (per GPU at --tp)."""
    try:
        spec = get_model(model)
    except UnknownModelError as exc:
        known = "\n  ".join(exc.known)
        raise _fail(f"unknown model {model!r}; known models:\n  {known}") from None
    if not 0 < tokens <= MAX_TOKENS:
        raise _fail(f"--tokens must be between 1 and {MAX_TOKENS:,}, not {tokens}")
    if kv_dtype not in DTYPE_BYTES:
        raise _fail(f"--kv-dtype must be one of {', '.join(DTYPE_BYTES)}, not {kv_dtype!r}")
    if in_flight_tokens > MAX_TOKENS:
        raise _fail(f"--in-flight-tokens must be at most {MAX_TOKENS:,}")
    try:
        cfg = KvConfig(
            block_size=block_size,
            in_flight_tokens=in_flight_tokens,
            kv_dtype=cast(KvDtype, kv_dtype),
            tp=tp,
            hybrid=not no_hybrid,
        )
        reservation = kv_layout(spec, cfg).reserve(tokens)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if json_out:
        typer.echo(json.dumps(reservation.as_dict(), indent=2))
        return
    _print_table(spec.hf_id, cfg, reservation)
    if spec.kv_shared_layers:
        typer.echo(f"KV-shared layers (no cache): {spec.kv_shared_layers}")
        if no_hybrid:
            typer.echo(
                "note: vLLM 0.32 fails to start KV-shared Gemma 4 models with "
                "--disable-hybrid-kv-cache-manager (KeyError on the shared layers)"
            )
    if tokens > spec.max_position_embeddings:
        typer.echo(
            f"note: {tokens:,} tokens exceed the model's {spec.max_position_embeddings:,}-token "
            "context; vLLM refuses that unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1"
        )
    if spec.unconfirmed:
        typer.echo(f"unconfirmed registry facts: {', '.join(sorted(spec.unconfirmed))}")


def _print_table(hf_id: str, cfg: KvConfig, r: KvReservation) -> None:
    mode = "hybrid" if cfg.hybrid else "hybrid manager off"
    typer.echo(
        f"{hf_id}: {r.tokens:,} tokens, {cfg.kv_dtype}, TP{cfg.tp}, block {cfg.block_size}, "
        f"{cfg.in_flight_tokens:,} in-flight tokens, {mode}"
    )
    typer.echo(f"{'kind':<8} {'layers':>6} {'block':>6} {'page bytes':>14} {'blocks':>10}")
    for g in r.groups:
        typer.echo(
            f"{g.kind:<8} {g.layers:>6} {g.block_size:>6} {g.page_bytes:>14,} {g.blocks:>10,}"
        )
    typer.echo(f"bytes per block:    {r.bytes_per_block:>20,}")
    typer.echo(f"blocks per request: {r.blocks_per_request:>20,}")
    typer.echo(
        f"bytes per request:  {r.bytes_per_request:>20,}  ({r.bytes_per_request / 2**30:.2f} GiB)"
    )
