"""The vLLM servers Longdoc is told of: each configured backend (`Settings.backends`),
and the deployment plans are made against when no server is asked
(`Settings.deployment`; by default the paper's, figured out below)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, HttpUrl, field_validator

MODEL_ROLES = ("gemma", "scout")


class BackendConfig(BaseModel):
    """One vLLM server. Measured values come from the server; overrides are logged."""

    role: str
    url: HttpUrl
    max_model_len: int | None = Field(default=None, gt=0)
    kv_cache_bytes: int | None = Field(default=None, gt=0)
    model: str | None = Field(
        default=None,
        description="Registry id (ingestion/capacity/models.toml) of the served model, where the "
        "served name is not one; used to derive KV capacity from the server's blocks.",
    )
    tp: int = Field(default=1, gt=0, description="The server's tensor-parallel size.")
    in_flight_tokens: int | None = Field(
        default=None,
        gt=0,
        description="Tokens the server schedules ahead per request (its "
        "--max-num-batched-tokens, x2 with async scheduling); bounds what sliding-window "
        "layers hold. Default: vLLM's, 16,384 on a GPU and 2,048 on the CPU (block size 128).",
    )
    kv_dtype: Literal["fp32", "bf16", "fp8"] | None = Field(
        default=None,
        description="The server's KV dtype, when it cannot tell: its --kv-cache-dtype is "
        "reported, but 'auto' (the model's dtype) is not; then it is found from the "
        "server's blocks, or bf16.",
    )
    # Sampling sent with every request to this server (C1 of issue 9): greedy decoding
    # makes a small model loop; a repetition penalty gives it real sentences.
    temperature: float = Field(default=0.0, ge=0, le=2)
    repetition_penalty: float | None = Field(
        default=None, gt=0, le=2, description="vLLM's: 1 = none, above 1 discourages repeats."
    )
    frequency_penalty: float | None = Field(
        default=None, ge=-2, le=2, description="OpenAI's: grows with a token's count so far."
    )

    @field_validator("model")
    @classmethod
    def _registered(cls, model: str | None) -> str | None:
        from ingestion.capacity.registry import known_models  # here: only BackendConfig needs it

        if model is not None and model not in known_models():
            raise ValueError(f"unknown model {model!r}; known models: {', '.join(known_models())}")
        return model


class DeploymentReplica(BaseModel):
    """A kind of vLLM server, described so that plans need no server (`longdoc route`,
    the scheduling benchmark). KV figures are per GPU: under tensor parallelism every
    rank holds the same share of every request, and vLLM reports its pool that way.
    `kv_cache_bytes` None = unknown: such replicas are never planned on."""

    role: str
    model: str = Field(description="Registry id (ingestion/capacity/models.toml).")
    max_model_len: int = Field(gt=0)
    kv_cache_bytes: int | None = Field(default=None, gt=0)
    replicas: int = Field(default=1, gt=0)
    tp: int = Field(default=1, gt=0)
    kv_dtype: Literal["fp32", "bf16", "fp8"] = "bf16"
    block_size: int = Field(default=16, gt=0)
    in_flight_tokens: int = Field(default=16_384, gt=0)

    @field_validator("role")
    @classmethod
    def _known_role(cls, role: str) -> str:
        if role not in MODEL_ROLES:
            raise ValueError(f"role must be one of {MODEL_ROLES}, got {role!r}")
        return role


# The paper deployment. Pool = what vLLM leaves per GPU: 80 GiB x 0.9
# (--gpu-memory-utilization; vLLM 0.32 defaults to 0.92) minus the weights on that GPU.
# vLLM also subtracts its profiled activation peak and non-torch memory (a few GiB), so a
# real server reports somewhat less; its /metrics figure replaces this one.
_GPU_KV_BUDGET = 80 * 2**30 * 9 // 10  # 77,309,411,328 B
# Gemma 4 31B in bf16 loads 59.0 GiB (vLLM-measured, ../shared/models/models.yaml),
# leaving 13.0 GiB: its 50 sliding layers alone reserve 14.3 GB per request at 16,384
# in-flight tokens, so the pool holds 15,456 tokens, not 256K (with
# --max-num-batched-tokens 2048, 118,976). The fix vLLM's recipe uses is FP8 weights
# (RedHatAI/gemma-4-31B-it-FP8-dynamic; same KV geometry): linear layers halve, the
# 262,144 x 5,376 embedding stays bf16 -> 33,084,669,952 B of weights, a
# 44,224,741,376 B (41.19 GiB) pool that holds 262,144 tokens (35.75 GB) with bf16 KV.
_GEMMA_EMBEDDING_BYTES = 262_144 * 5_376 * 2
GEMMA_31B_BF16_WEIGHT_BYTES = int(59.0 * 2**30)
GEMMA_31B_FP8_WEIGHT_BYTES = (
    GEMMA_31B_BF16_WEIGHT_BYTES - _GEMMA_EMBEDDING_BYTES
) // 2 + _GEMMA_EMBEDDING_BYTES
# Scout: 109B parameters in bf16 (models.yaml) split over 8 GPUs -> 27.25e9 B each,
# a 50,059,411,328 B (46.62 GiB) pool per GPU. max_model_len 1,000,000 is what vLLM
# published for 8xH100 (blog 2025-04-05, PR 16104); the pool alone would hold ~8.07M.
SCOUT_PARAMS = 109_000_000_000
_SCOUT_BF16_WEIGHT_BYTES_PER_GPU = SCOUT_PARAMS * 2 // 8


def paper_deployment() -> list[DeploymentReplica]:
    return [
        DeploymentReplica(
            role="gemma",
            model="google/gemma-4-31B-it",
            max_model_len=262_144,
            kv_cache_bytes=_GPU_KV_BUDGET - GEMMA_31B_FP8_WEIGHT_BYTES,
        ),
        DeploymentReplica(
            role="scout",
            model="meta-llama/Llama-4-Scout-17B-16E-Instruct",
            max_model_len=1_000_000,
            kv_cache_bytes=_GPU_KV_BUDGET - _SCOUT_BF16_WEIGHT_BYTES_PER_GPU,
            tp=8,
        ),
    ]
