"""The planner's inputs as the service has them: the document's stored token counts
and page map, the backends table as measured, a counter per role (the tokenizer file,
else a server's /tokenize); `service.jobs.planner.plan_job` plans on them.

Shared by the API (a job on a parsed document is planned when it is created, so the
client sees its plan and a bad budget is a 422) and the worker (a job created before
its document was parsed is planned once it is).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from ingestion.capacity.kv import DTYPE_BYTES, KvConfig, KvDtype
from ingestion.capacity.route_plan import RouteRefused
from ingestion.capacity.router import Backend
from ingestion.documents.page_range import PageRange
from ingestion.documents.textfile import PageSpan, read_pages, spans_from_json
from ingestion.tokens.counting import TokenCounter, load_counter
from ingestion.types import TokenCount
from service.backends.probe import normalize_url
from service.blobstore import BlobStore
from service.config import Settings
from service.deployment import BackendConfig
from service.errors import Invalid
from service.jobs.planner import DocumentText, Planned, SplitDeferred, plan_chat, plan_job
from service.models import Backend as BackendRow
from service.models import Document, DocumentTokenCount, utcnow

# vLLM's defaults when the server's --max-num-batched-tokens is not configured: a CPU
# server (block size 128) schedules 2,048 tokens ahead, a GPU one two batches of 8,192.
_CPU_BLOCK_SIZE = 128
_CPU_IN_FLIGHT = 2_048
_GPU_IN_FLIGHT = 16_384


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
    jobs wait instead of failing at creation. Rows no longer configured are left out
    (`_backend_rows`): they are history, not alternatives."""
    configs = {normalize_url(c.url): c for c in settings.backends}
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


class TokenizeDeferred(SplitDeferred):
    """A role's server failed to count the prompt (its /tokenize), and the caller asked
    to leave the job for later (the API: it stays queued, and the worker plans it)."""


def _backend_rows(session: Session, settings: Settings) -> list[BackendRow]:
    """The rows of the backends `settings` configure. A row of a server no longer
    configured is kept for the leases and jobs that point at it, but it is not part of
    this deployment: a plan neither uses it nor lists it as rejected (every job would
    otherwise list every server the table ever had), also in the seconds before a
    refresher marks it down."""
    configured = [normalize_url(c.url) for c in settings.backends]
    stmt = (
        select(BackendRow)
        .where(BackendRow.url.in_(configured))
        .order_by(BackendRow.role, BackendRow.url)
    )
    rows = list(session.scalars(stmt))
    known = {r.url for r in rows}
    if any(url not in known for url in configured):
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
    pages: PageRange | None = None,
    max_split_bytes: int | None = None,
    defer_tokenize_errors: bool = False,
) -> Planned:
    """Plan a job on a parsed document, or on `pages` of it. ValueError: the budget is
    absurd (a 422); RouteRefused: the job cannot run on these backends (it fails, with
    the reason; `tokenize_failed` when a server's /tokenize failed every attempt,
    `pages_out_of_range` when `pages` go past the document's end); SplitDeferred:
    it must be split, and its text is over `max_split_bytes`; TokenizeDeferred: a
    /tokenize failed and `defer_tokenize_errors`."""
    with _counting(defer_tokenize_errors):
        return _plan(
            session, settings, doc, task, params, max_output_tokens, pages, max_split_bytes
        )


@contextlib.contextmanager
def _counting(defer: bool) -> Iterator[None]:
    """A server's /tokenize that failed every attempt: TokenizeDeferred with `defer`,
    else the job cannot be planned (RouteRefused `tokenize_failed`)."""
    from service.backends.tokenize import RemoteTokenizeError

    try:
        yield
    except RemoteTokenizeError as exc:
        if defer:
            raise TokenizeDeferred(str(exc)) from exc
        reason = f"counting the prompt's tokens: {exc.public}"
        raise RouteRefused("tokenize_failed", reason) from exc


def chat_backend_rows(session: Session, settings: Settings, model: str) -> list[BackendRow]:
    """The backends a chat request's `model` names: every one for "auto", else those of
    that role or serving that model (the name the server reports). Invalid when none
    does: the request names what this deployment does not serve."""
    rows = _backend_rows(session, settings)
    chosen = rows if model == "auto" else [r for r in rows if model in (r.role, r.model)]
    if chosen:
        return chosen
    served = sorted({r.role for r in rows} | {r.model for r in rows if r.model})
    raise Invalid(
        "unknown_model",
        f"no backend serves model {model!r}; name one of {['auto', *served]}",
        field="body.model",
    )


def served_models(session: Session, settings: Settings) -> frozenset[str] | None:
    """What a chat request's `model` may name on this deployment, as far as it is known
    without asking a server: "auto", each configured role, and each configured server's
    model as last probed (`chat_backend_rows` matches the same names). None when a
    configured server has not told its model yet (never probed, or never answered): a
    name may be that one, so only its job's planning can refuse it."""
    configured = {normalize_url(c.url): c.role for c in settings.backends}
    rows = session.scalars(select(BackendRow).where(BackendRow.url.in_(configured)))
    models = {r.url: (r.role, r.model) for r in rows}
    if any(models.get(url, (None, None))[1] is None for url in configured):
        return None
    names = {name for pair in models.values() for name in pair if name}
    return frozenset({"auto", *configured.values(), *names})


def plan_chat_job(
    settings: Settings, rows: Sequence[BackendRow], texts: Sequence[str], max_output_tokens: int
) -> Planned:
    """Plan a chat request on `rows` (`chat_backend_rows`): ValueError, RouteRefused as
    `plan_document_job` (a chat request too long for every backend: `too_long`)."""
    with _counting(False), role_counters(rows, settings) as counters:
        backends = router_backends(rows, settings)
        return plan_chat(texts, max_output_tokens, backends, counters, settings)


def _plan(
    session: Session,
    settings: Settings,
    doc: Document,
    task: str,
    params: Mapping[str, object],
    max_output_tokens: int,
    pages_wanted: PageRange | None,
    max_split_bytes: int | None,
) -> Planned:
    rows = _backend_rows(session, settings)
    spans = spans_from_json(doc.page_map or [])
    counts = {
        tc.role: TokenCount(tc.count, tc.exact, tc.tokenizer, tc.method, tc.model)
        for tc in session.scalars(
            select(DocumentTokenCount).where(DocumentTokenCount.document_id == doc.id)
        )
    }
    if not counts:
        raise RouteRefused("no_counts", "the document has no token counts")
    text_path = BlobStore(settings.blobs).path(doc.text_key or "")

    def pages(first: int, last: int) -> list[tuple[PageSpan, str]]:
        with text_path.open("rb") as f:
            return list(read_pages(f, spans, first, last))

    text = DocumentText(counts, spans, pages)
    with role_counters(rows, settings) as counters:
        return plan_job(
            text,
            task,
            params,
            max_output_tokens,
            router_backends(rows, settings),
            counters,
            settings,
            pages=pages_wanted,
            max_split_bytes=max_split_bytes,
        )
