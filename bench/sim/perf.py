"""Service time of a vLLM step, the work a request costs, and KV blocks held while running.

One step runs what vLLM's scheduler picked: prefill chunks and one token for each
decoding request. Its time is a per-GPU roofline, max(compute, memory):

- compute: the linear layers at `lin_s` seconds per token, plus attention FLOPs for
  every (query, key) pair the step's tokens attend to, per attention kind (full
  layers see the whole context, sliding ones the window, chunked ones back to the
  chunk start). This is the quadratic term that makes a 1M-token prefill cost more
  than 1,000 prefills of 1K tokens; it is mild because only 10 of Gemma 4 31B's 60
  layers and 12 of Scout's 48 attend to everything.
- memory: the weights read once per step (`floor_s`, so one decoding request alone
  makes 1/floor_s tokens/s) plus the KV cache every decoding request reads. Prefill
  attention is compute-bound, so its KV reads hide under the compute term.

`work_s` is the compute part alone, summed over a request's tokens: every step takes
at least the compute of the tokens in it, so total work / replicas bounds the
makespan from below however the requests are batched. The memory part (weights read
per step, the KV a long decode reads) is what batching amortises; it is not work.

The constants are public peak figures times efficiencies that are our assumptions
(listed in `MODEL_PERF` and `H100_SXM`). They are identical for every policy: the
benchmark compares scheduling, not these numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingestion.capacity.kv import KvConfig, KvLayout, kv_layout
from ingestion.capacity.registry import get_model

__all__ = ["H100_SXM", "MODEL_PERF", "Hardware", "ModelPerf", "ServiceModel", "describe"]


@dataclass(frozen=True)
class Hardware:
    name: str
    bf16_flops: float
    fp8_flops: float
    hbm_bytes_per_s: float
    attention_efficiency: float
    """Share of bf16 peak that long-context attention reaches (FlashAttention-3
    reports 0.6-0.75 on H100 forward; 0.5 is our assumption for vLLM's kernels)."""
    hbm_efficiency: float
    """Share of peak HBM bandwidth a decode step streams at (assumption)."""


# NVIDIA H100 SXM5 80GB datasheet: 989.4 TFLOPS bf16 and 1,978.9 TFLOPS fp8 dense
# tensor core, 3.35 TB/s HBM3. The 8xH100 Scout deployment is an HGX board (SXM).
H100_SXM = Hardware("H100 SXM 80GB", 989.4e12, 1978.9e12, 3.35e12, 0.5, 0.8)


@dataclass(frozen=True)
class ModelPerf:
    active_params: float
    """Parameters each token goes through (the MoE's active ones)."""
    weight_bytes_per_gpu: float
    fp8_linear: bool
    """Linear layers run in fp8 (an fp8 checkpoint), else bf16."""
    linear_mfu: float
    """Share of peak the linear layers reach in a prefill chunk (assumption)."""
    step_overhead_s: float
    """Per-step CPU scheduling, kernel launches and, under TP, all-reduce latency."""


MODEL_PERF: dict[str, ModelPerf] = {
    # 30.7B parameters (Gemma 4 model card, via ../shared/models/models.yaml); the FP8
    # checkpoint the paper deployment assumes weighs 33,084,669,952 B (service/config.py).
    # Dense fp8 GEMMs at 40% of peak: ~12.9K prefill tokens/s; decode floor ~14 ms.
    "google/gemma-4-31B-it": ModelPerf(30.7e9, 33_084_669_952, True, 0.40, 0.002),
    # 17B active of 109B (Meta's model card); bf16 weights split over 8 GPUs. MoE
    # expert GEMMs and TP8 all-reduces reach less of peak: 25% gives ~58K prefill
    # tokens/s over the 8 GPUs; decode floor ~13 ms, all experts read once a batch
    # is larger than a few requests.
    "meta-llama/Llama-4-Scout-17B-16E-Instruct": ModelPerf(17e9, 109e9 * 2 / 8, False, 0.25, 0.003),
}


@dataclass(frozen=True)
class _Attention:
    kind: str
    window: int | None
    s_per_pair: float


@dataclass(frozen=True)
class _BlockGroup:
    """KV groups of one kind, window and block size: they hold equal block counts."""

    kind: str
    window: int | None
    block_size: int
    count: int


class ServiceModel:
    """The step-time model and KV occupancy of one model on one replica kind."""

    def __init__(self, model_id: str, kv: KvConfig, hw: Hardware = H100_SXM) -> None:
        spec = get_model(model_id)
        perf = MODEL_PERF[model_id]
        self.model_id = model_id
        self.layout: KvLayout = kv_layout(spec, kv)
        self.bytes_per_block = self.layout.bytes_per_block
        tp = kv.tp
        linear_peak = hw.fp8_flops if perf.fp8_linear else hw.bf16_flops
        self.lin_s = 2 * perf.active_params / tp / (linear_peak * perf.linear_mfu)
        heads = spec.attention_heads / tp
        attn_rate = hw.bf16_flops * hw.attention_efficiency
        attention = []
        for kind in ("full", "sliding", "chunked"):
            layers = [layer for layer in spec.layers() if layer.kind == kind]
            if layers:
                # 4 FLOPs per pair and query head-dim element: Q.K and P.V, each a
                # multiply-add. KV-shared layers still compute their attention.
                flops = sum(4 * heads * layer.head_dim for layer in layers)
                attention.append(_Attention(kind, layers[0].window, flops / attn_rate))
        self._attention = tuple(attention)
        bw = hw.hbm_bytes_per_s * hw.hbm_efficiency
        self.floor_s = perf.weight_bytes_per_gpu / bw + perf.step_overhead_s
        self.kv_read_s_per_byte = 1 / bw
        # Async scheduling keeps two batches in flight (KvConfig.gpu), so the token
        # budget of one step (--max-num-batched-tokens) is half the in-flight tokens.
        self.token_budget = max(1, kv.in_flight_tokens // 2)
        merged: dict[tuple[str, int | None, int], int] = {}
        for g in self.layout.groups:
            key = (g.kind, g.window, g.block_size)
            merged[key] = merged.get(key, 0) + 1
        self._blocks = tuple(_BlockGroup(k, w, b, n) for (k, w, b), n in merged.items())

    # -- compute -------------------------------------------------------------------

    def attention_s(self, tokens: int) -> float:
        """Attention time of a causal pass over `tokens` tokens from an empty context;
        additive, so a chunk from c to c+n costs attention_s(c+n) - attention_s(c)."""
        total = 0.0
        t = tokens
        for a in self._attention:
            if a.kind == "full" or a.window is None:
                pairs = t * (t + 1) / 2
            elif a.kind == "sliding":
                w = a.window
                pairs = t * (t + 1) / 2 if t <= w else w * (w + 1) / 2 + (t - w) * w
            else:  # chunked: each token looks back to the start of its chunk
                q, r = divmod(t, a.window)
                pairs = q * a.window * (a.window + 1) / 2 + r * (r + 1) / 2
            total += a.s_per_pair * pairs
        return total

    def compute_s(self, context: int, tokens: int) -> float:
        """Compute time of `tokens` new tokens after `context` cached ones."""
        return self.lin_s * tokens + self.attention_s(context + tokens) - self.attention_s(context)

    def work_s(self, prompt: int, output: int) -> float:
        """A request's work: the compute of all its tokens, however they are batched."""
        return self.compute_s(0, prompt + output)

    def standalone_s(self, prompt: int, output: int) -> float:
        """Time alone on an idle replica: prefill in budget-sized chunks, then one step
        per output token. Decode is priced at its mid-point context; the step time is
        convex in the context, so this never exceeds the step-by-step sum."""
        t, c = 0.0, 0
        while c < prompt:
            n = min(self.token_budget, prompt - c)
            t += max(self.floor_s, self.compute_s(c, n))
            c += n
        if output > 0:
            mid = prompt + output // 2
            memory = self.floor_s + self.kv_read_s_per_byte * self.occupancy(mid, 1)
            compute = self.compute_s(prompt, output) / output
            t += output * max(memory, compute)
        return t

    # -- KV ------------------------------------------------------------------------

    def occupancy(self, tokens: int, in_flight: int) -> int:
        """Bytes of KV blocks a running request holds with `tokens` tokens allocated,
        `in_flight` of them scheduled in this step: ingestion.capacity.kv's per-group rule
        (KvGroup.blocks) with the step's own in-flight count instead of the server's
        maximum. vLLM frees sliding and chunked blocks that fall out of the window, so
        this is never above the reservation the router computed for the request."""
        if tokens <= 0:
            return 0
        blocks = 0
        for g in self._blocks:
            if g.kind == "sliding":
                assert g.window is not None
                n = -(-min(g.window - 1 + in_flight, tokens) // g.block_size) + 1
            elif g.kind == "chunked":
                assert g.window is not None
                n = -(-min(g.window + in_flight, tokens) // g.block_size)
            else:
                n = -(-tokens // g.block_size)
            blocks += g.count * n
        return blocks * self.bytes_per_block

    def pool_blocks(self, kv_cache_bytes: int) -> int:
        return kv_cache_bytes // self.bytes_per_block

    def usable_bytes(self, kv_cache_bytes: int) -> int:
        """What vLLM can hand out: whole blocks, less the null block it keeps for ever."""
        return max(0, self.pool_blocks(kv_cache_bytes) - 1) * self.bytes_per_block


def describe(model: ServiceModel) -> dict[str, float]:
    """The derived constants, for the report."""
    return {
        "prefill_tokens_per_s_short": 1 / model.lin_s,
        "decode_tokens_per_s_alone": 1 / model.floor_s,
        "prefill_s_at_131072": model.standalone_s(131_072, 0),
        "prefill_s_at_262144": model.standalone_s(262_144, 0),
    }
