"""The one planner: what a job on a parsed document runs as, from the document's token
counts and page map, the task and its parameters, the backends and the settings.

The API (a job on a parsed document is planned when it is created), the worker (a job
created before its document was parsed is planned once it is) and `longdoc route` (a
dry run, with no server and no database) all call `plan_job`, so the dry run shows
the plan the service makes. Where the inputs come from is the callers' business:
`service.jobs.planning` reads them from the database and the servers, the CLI from
the file and the deployment in settings. Nothing here does I/O but `DocumentText.pages`,
which the caller supplies and which is called only when the document must be split
or cut to a job's page range. The tokens a request adds to its text are counted in
`service.jobs.request_tokens`, how long it may take in `service.jobs.request_time`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ingestion.capacity.chunking import PageChunker
from ingestion.capacity.kv import KvConfig
from ingestion.capacity.route_plan import Chunk, Plan, RouteRefused
from ingestion.capacity.router import ROLE_ORDER, Backend, Job, plan_route
from ingestion.documents.page_range import PageRange, PageRangeError
from ingestion.documents.textfile import PAGE_SEPARATOR, PageSpan
from ingestion.tasks.specs import CHAT_MESSAGE_TOKENS, TEMPLATE_TOKENS
from ingestion.tokens.counting import TokenCounter
from ingestion.types import TokenCount
from service.config import Settings
from service.deployment import DeploymentReplica
from service.jobs.request_time import check_time_limit
from service.jobs.request_tokens import chat_counts, prompt_tokens, text_count


@dataclass(frozen=True)
class Planned:
    plan: Plan
    prompt_tokens: dict[str, int]


# Pages `first`..`last` of a document, each with its text, as `textfile.read_pages` reads them.
PageReader = Callable[[int, int], Sequence[tuple[PageSpan, str]]]


@dataclass(frozen=True)
class DocumentText:
    """What the planner needs of a parsed document: its token count per role (as
    ingest stored them), its page map, and its pages' text on demand (a split or a
    page range reads them; most plans need none)."""

    counts: Mapping[str, TokenCount]
    spans: Sequence[PageSpan]
    pages: PageReader

    @property
    def text_bytes(self) -> int:
        # The spans' run of the text file: the whole file, or a page range's part of it.
        return self.spans[-1].byte_end - self.spans[0].byte_start if self.spans else 0


class SplitDeferred(Exception):
    """The plan needs the document split, and the caller asked not to split one this
    large here (the API: counting the chunks of millions of tokens would hold the
    request for seconds). The worker plans the job instead."""


class _Splitter:
    """The document's chunker, reading its pages only if the router asks for a split."""

    def __init__(
        self, doc: DocumentText, counters: Mapping[str, TokenCounter], max_bytes: int | None
    ) -> None:
        self.doc, self.counters, self.max_bytes = doc, counters, max_bytes

    def __call__(self, role: str, budget: int) -> Sequence[Chunk]:
        if not self.doc.spans:
            return []
        size = self.doc.text_bytes
        if self.max_bytes is not None and size > self.max_bytes:
            raise SplitDeferred(f"{size} bytes of text to split")
        first, last = self.doc.spans[0].number, self.doc.spans[-1].number
        return PageChunker(self.doc.pages(first, last), self.counters)(role, budget)


def page_range(
    doc: DocumentText,
    pages: PageRange,
    counters: Mapping[str, TokenCounter],
    *,
    max_bytes: int | None = None,
) -> DocumentText:
    """The document cut to `pages`: their spans, and per role the count of exactly their
    text as the worker sends it (the run of the text file from the first page to the
    last, separators included), by the role's counter, else an estimate. The stored
    counts are of the whole document and say nothing about a part: BPE merges across
    page seams, so the part is counted itself. RouteRefused `pages_out_of_range` when
    the document is shorter; SplitDeferred when the part is over `max_bytes`."""
    try:
        pages.check_within(len(doc.spans))
    except PageRangeError as exc:
        raise RouteRefused("pages_out_of_range", str(exc)) from None
    spans = [s for s in doc.spans if s.number in pages]
    part = DocumentText(doc.counts, spans, doc.pages)
    if max_bytes is not None and part.text_bytes > max_bytes:
        raise SplitDeferred(f"{part.text_bytes} bytes of text in pages {pages} to count")
    read = list(doc.pages(pages.first, pages.last))
    text = PAGE_SEPARATOR.join(t for _, t in read if t)
    counts = {role: text_count(counters.get(role), text) for role in doc.counts}

    def reread(first: int, last: int) -> list[tuple[PageSpan, str]]:
        return [(s, t) for s, t in read if first <= s.number <= last]

    return DocumentText(counts, spans, reread)


def plan_job(
    doc: DocumentText,
    task: str,
    params: Mapping[str, object],
    max_output_tokens: int,
    backends: Sequence[Backend],
    counters: Mapping[str, TokenCounter],
    settings: Settings,
    *,
    pages: PageRange | None = None,
    max_split_bytes: int | None = None,
) -> Planned:
    """Plan a job, on `pages` of the document only when given (`page_range`).
    ValueError: the budget is absurd or over the service's limit, or a request could
    not finish within the job time limit; RouteRefused: the job cannot run on these
    backends, or the pages are past the document's end; SplitDeferred: it must be
    split (or its page range counted) and its text is over `max_split_bytes`. A counter
    may raise what it raises (a server's /tokenize)."""
    _check_budget(max_output_tokens, settings)
    if pages is not None:
        doc = page_range(doc, pages, counters, max_bytes=max_split_bytes)
    prompts = prompt_tokens(task, params, doc.spans, counters, list(doc.counts))
    job = Job(doc.counts, prompts, max_output_tokens)
    plan = plan_route(job, backends, _Splitter(doc, counters, max_split_bytes))
    return _timed(plan, prompts, settings)


def _check_budget(max_output_tokens: int, settings: Settings) -> None:
    if max_output_tokens > settings.max_output_tokens:
        raise ValueError(
            f"max_output_tokens {max_output_tokens:,} is above this service's limit of "
            f"{settings.max_output_tokens:,}"
        )


def _timed(plan: Plan, prompts: dict[str, int], settings: Settings) -> Planned:
    for request in plan.requests():
        check_time_limit(request, settings)
    return Planned(plan, prompts)


def plan_chat(
    texts: Sequence[str],
    max_output_tokens: int,
    backends: Sequence[Backend],
    counters: Mapping[str, TokenCounter],
    settings: Settings,
) -> Planned:
    """Plan a chat request (its messages' texts): one request, routed like a job whose
    document is the messages, never split. ValueError and RouteRefused as `plan_job`."""
    _check_budget(max_output_tokens, settings)
    roles = [r for r in ROLE_ORDER if any(b.role == r for b in backends)]
    roles += sorted({b.role for b in backends} - set(roles))
    counts = chat_counts(texts, counters, roles)
    overhead = TEMPLATE_TOKENS + CHAT_MESSAGE_TOKENS * len(texts)
    prompts = dict.fromkeys(roles, overhead)
    try:
        plan = plan_route(Job(counts, prompts, max_output_tokens), backends)
    except RouteRefused as exc:
        if exc.code != "unsplittable":
            raise
        sizes = ", ".join(f"{counts[r].count + overhead:,} by {r}'s count" for r in roles)
        why = (
            f"the chat request's prompt ({sizes}) and {max_output_tokens:,} output tokens fit "
            "no backend, and a chat request is one request: it is never split"
        )
        raise RouteRefused("too_long", why, exc.rejected) from None
    return _timed(plan, prompts, settings)


def deployment_backends(deployment: Sequence[DeploymentReplica]) -> list[Backend]:
    """Router backends for a deployment described in settings: one per replica, named
    `role-n`. What a dry run plans on in place of the measured backends table."""
    out: list[Backend] = []
    for entry in deployment:
        cfg = KvConfig(entry.block_size, entry.in_flight_tokens, entry.kv_dtype, entry.tp)
        for _ in range(entry.replicas):
            n = sum(b.role == entry.role for b in out)
            out.append(
                Backend(
                    f"{entry.role}-{n}",
                    entry.role,
                    entry.model,
                    entry.max_model_len,
                    entry.kv_cache_bytes,
                    kv=cfg,
                )
            )
    return out
