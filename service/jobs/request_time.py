"""How long a planned request holds its KV: what admission assumes, and the worst case
at the slowest speeds Longdoc serves, which a plan must fit in the job time limit."""

from __future__ import annotations

from ingestion.capacity.route_plan import Request
from service.config import Settings


def est_duration_s(request: Request, settings: Settings) -> float:
    """What the admission policy assumes the request holds its KV for."""
    return (
        request.input_tokens / settings.est_prefill_tokens_per_s
        + request.output_tokens / settings.est_decode_tokens_per_s
    )


def worst_case_s(request: Request, settings: Settings) -> float:
    """How long the request may take at the slowest speeds Longdoc serves: prefill at
    `vllm_min_prefill_tokens_per_s` (what the first-token timeout allows for), decode
    at `vllm_min_decode_tokens_per_s`."""
    return (
        request.input_tokens / settings.vllm_min_prefill_tokens_per_s
        + request.output_tokens / settings.vllm_min_decode_tokens_per_s
    )


def check_time_limit(request: Request, settings: Settings) -> None:
    """ValueError (a bad budget) when the request could not finish within the job's
    soft time limit, after its task polled for admission as long as it may: the limit
    would cut it, and a cut request is a `timeout`, never a result."""
    limit = settings.job_soft_time_limit_s - settings.admission_wait_s
    worst = worst_case_s(request, settings)
    if worst <= limit:
        return
    raise ValueError(
        f"a request of {request.input_tokens:,} prompt and {request.output_tokens:,} output "
        f"tokens may take {worst:,.0f} s at the slowest speeds served "
        f"(LONGDOC_VLLM_MIN_PREFILL_TOKENS_PER_S={settings.vllm_min_prefill_tokens_per_s:g}, "
        f"LONGDOC_VLLM_MIN_DECODE_TOKENS_PER_S={settings.vllm_min_decode_tokens_per_s:g}), "
        f"over the job time limit of {limit:,.0f} s (LONGDOC_JOB_SOFT_TIME_LIMIT_S="
        f"{settings.job_soft_time_limit_s} less LONGDOC_ADMISSION_WAIT_S="
        f"{settings.admission_wait_s:g}); ask for fewer output tokens"
    )
