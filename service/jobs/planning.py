"""Plan a job: its document's token counts, its prompt's and the backends as measured,
through the router (`ingestion.capacity.router.plan_route`).

Shared by the API (a job on a parsed document is planned when it is created, so the
client sees its plan and a bad budget is a 422) and the worker (a job created before
its document was parsed is planned once it is).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from ingestion.capacity.chunking import PageChunker
from ingestion.capacity.kv import DTYPE_BYTES, KvConfig, KvDtype
from ingestion.capacity.route_plan import Chunk, Plan, Request, RouteRefused
from ingestion.capacity.router import Backend, Job, plan_route
from ingestion.documents.textfile import PageSpan, read_pages, spans_from_json
from ingestion.tasks.prompts import page_marker
from ingestion.tasks.specs import TEMPLATE_TOKENS, instruction_text, reduce_instruction_text
from ingestion.tokens.counting import TokenCounter, estimate_tokens, load_counter
from ingestion.types import TokenCount
from service.blobstore import BlobStore
from service.config import BackendConfig, Settings
from service.models import Backend as BackendRow
from service.models import Document, DocumentTokenCount, utcnow

# vLLM's defaults when the server's --max-num-batched-tokens is not configured: a CPU
# server (block size 128) schedules 2,048 tokens ahead, a GPU one two batches of 8,192.
_CPU_BLOCK_SIZE = 128
_CPU_IN_FLIGHT = 2_048
_GPU_IN_FLIGHT = 16_384
# Between two pages the request has a blank line where the counted text has
# PAGE_SEPARATOR; a token per page covers a merge that differs at the seam.
_SEAM_TOKENS_PER_PAGE = 1


@dataclass(frozen=True)
class Planned:
    plan: Plan
    prompt_tokens: dict[str, int]


def _kv_dtype(measured: str | None, cfg: BackendConfig | None) -> KvDtype:
    # Discovery's finding (the reported --kv-cache-dtype, or for "auto" the configured
    # one or the one the server's blocks fit); rows from before it: configured or bf16.
    if measured in DTYPE_BYTES:
        return cast(KvDtype, measured)
    return (cfg.kv_dtype if cfg else None) or "bf16"


def router_backends(rows: Sequence[BackendRow], settings: Settings) -> list[Backend]:
    """The router's view of the backends table, with the configured KV settings.

    A configured replica that is down right now is planned on with its last measured
    figures: admission places nothing on it while it is down, and a job whose role has
    no replica up for `backend_down_timeout_s` fails then, so a short outage makes
    jobs wait instead of failing at creation. A row no longer configured is down for
    good and shows among the rejected alternatives."""
    configs = {str(c.url).rstrip("/"): c for c in settings.backends}
    out = []
    for row in rows:
        cfg = configs.get(row.url)
        model = (cfg.model if cfg else None) or row.model
        if model is None:
            continue
        block = row.block_size or 16
        default_in_flight = _CPU_IN_FLIGHT if block == _CPU_BLOCK_SIZE else _GPU_IN_FLIGHT
        in_flight = (cfg.in_flight_tokens if cfg else None) or default_in_flight
        kv = KvConfig(block, in_flight, _kv_dtype(row.kv_dtype, cfg), cfg.tp if cfg else 1)
        out.append(
            Backend(
                str(row.id),
                row.role,
                model,
                row.max_model_len,
                row.kv_capacity_bytes,
                kv=kv,
                healthy=row.healthy or cfg is not None,
            )
        )
    return out


@contextlib.contextmanager
def role_counters(
    rows: Sequence[BackendRow], settings: Settings
) -> Iterator[dict[str, TokenCounter]]:
    """A counter per role: the local tokenizer file, else a healthy server's /tokenize."""
    from service.backends.tokenize import ServerCounter  # workers import service, not back

    counters: dict[str, TokenCounter] = {}
    remote: list[ServerCounter] = []
    for role in {r.role for r in rows} | set(settings.tokenizers):
        path = settings.tokenizers.get(role)
        if path is not None and Path(path).is_file():
            with contextlib.suppress(ValueError):
                counters[role] = load_counter(path)
                continue
        up = [r for r in rows if r.role == role and r.healthy and r.model]
        if up:
            counter = ServerCounter(
                up[0].url,
                up[0].model or "",
                settings.tokenize_timeout_s,
                settings.tokenize_attempts,
                settings.tokenize_backoff_s,
            )
            remote.append(counter)
            counters[role] = counter
    try:
        yield counters
    finally:
        for counter in remote:
            counter.close()


def _page_overhead(counter: TokenCounter | None, spans: Sequence[PageSpan]) -> int:
    pages = [s.number for s in spans if s.char_end > s.char_start]
    markers = "".join(page_marker(n) for n in pages)
    n = counter.count(markers) if counter is not None else estimate_tokens(len(markers)).count
    return n + _SEAM_TOKENS_PER_PAGE * len(pages)


class SplitDeferred(Exception):
    """The plan needs the document split, and the caller asked not to split one this
    large here (the API: counting the chunks of millions of tokens would hold the
    request for seconds). The worker plans the job instead."""


class TokenizeDeferred(SplitDeferred):
    """A role's server failed to count the prompt (its /tokenize), and the caller asked
    to leave the job for later (the API: it stays queued, and the worker plans it)."""


class _LazyPages:
    """Page texts for the chunker, read from the text file only if a split is needed."""

    def __init__(
        self,
        path: Path,
        spans: list[PageSpan],
        counters: dict[str, TokenCounter],
        max_split_bytes: int | None,
    ) -> None:
        self.path, self.spans, self.counters = path, spans, counters
        self.max_split_bytes = max_split_bytes

    def __call__(self, role: str, budget: int) -> Sequence[Chunk]:
        if not self.spans:
            return []
        size = self.spans[-1].byte_end
        if self.max_split_bytes is not None and size > self.max_split_bytes:
            raise SplitDeferred(f"{size} bytes of text to split")
        with self.path.open("rb") as f:
            pages = list(read_pages(f, self.spans, self.spans[0].number, self.spans[-1].number))
        return PageChunker(pages, self.counters)(role, budget)


def _backend_rows(session: Session, settings: Settings) -> list[BackendRow]:
    stmt = select(BackendRow).order_by(BackendRow.role, BackendRow.url)
    rows = list(session.scalars(stmt))
    known = {r.url for r in rows}
    if any(str(c.url).rstrip("/") not in known for c in settings.backends):
        # Configured but never probed (a fresh start, before a worker's refresher ran).
        # In a session of its own: refresh commits, and the caller's job is not ready.
        from service.backends.discovery import refresh

        with Session(bind=session.get_bind()) as probing:
            refresh(probing, settings, utcnow())
        rows = list(session.scalars(stmt))
    return rows


def plan_document_job(
    session: Session,
    settings: Settings,
    doc: Document,
    task: str,
    params: Mapping[str, object],
    max_output_tokens: int,
    *,
    max_split_bytes: int | None = None,
    defer_tokenize_errors: bool = False,
) -> Planned:
    """Plan a job on a parsed document. ValueError: the budget is absurd (a 422);
    RouteRefused: the job cannot run on these backends (it fails, with the reason;
    `tokenize_failed` when a server's /tokenize failed every attempt); SplitDeferred:
    it must be split, and its text is over `max_split_bytes`; TokenizeDeferred: a
    /tokenize failed and `defer_tokenize_errors`."""
    from service.backends.tokenize import RemoteTokenizeError

    try:
        return _plan(session, settings, doc, task, params, max_output_tokens, max_split_bytes)
    except RemoteTokenizeError as exc:
        if defer_tokenize_errors:
            raise TokenizeDeferred(str(exc)) from exc
        reason = f"counting the prompt's tokens: {exc.public}"
        raise RouteRefused("tokenize_failed", reason) from exc


def _plan(
    session: Session,
    settings: Settings,
    doc: Document,
    task: str,
    params: Mapping[str, object],
    max_output_tokens: int,
    max_split_bytes: int | None,
) -> Planned:
    rows = _backend_rows(session, settings)
    backends = router_backends(rows, settings)
    spans = spans_from_json(doc.page_map or [])
    counts = {
        tc.role: TokenCount(tc.count, tc.exact, tc.tokenizer, tc.method, tc.model)
        for tc in session.scalars(
            select(DocumentTokenCount).where(DocumentTokenCount.document_id == doc.id)
        )
    }
    if not counts:
        raise RouteRefused("no_counts", "the document has no token counts")
    texts = (instruction_text(task, params), reduce_instruction_text(task, params))
    with role_counters(rows, settings) as counters:
        prompts = {}
        for role in counts:
            counter = counters.get(role)
            fixed = max(
                counter.count(t) if counter is not None else estimate_tokens(len(t)).count
                for t in texts
            )
            prompts[role] = fixed + TEMPLATE_TOKENS + _page_overhead(counter, spans)
        text_path = BlobStore(settings.blobs).path(doc.text_key or "")
        job = Job(counts, prompts, max_output_tokens)
        pages = _LazyPages(text_path, spans, counters, max_split_bytes)
        plan = plan_route(job, backends, pages)
    for request in plan.requests():
        check_time_limit(request, settings)
    return Planned(plan, prompts)


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
