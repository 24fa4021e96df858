"""What a request counts in tokens beyond the document's stored count, by each role's
counter (an estimate where a role has none): the instructions, chat template, page
markers and page seams a job's requests add to their text; the exact count of a page
range's text (the stored counts are of the whole document); a chat request's messages.
The planner (service.jobs.planner) routes on these."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from ingestion.documents.textfile import PageSpan
from ingestion.tasks.prompts import page_marker
from ingestion.tasks.specs import TEMPLATE_TOKENS, instruction_text, reduce_instruction_text
from ingestion.tokens.counting import TokenCounter, count_stream, estimate_tokens
from ingestion.types import TokenCount

# Between two pages the request has a blank line where the counted text has
# PAGE_SEPARATOR; a token per page covers a merge that differs at the seam.
SEAM_TOKENS_PER_PAGE = 1


def _count(counter: TokenCounter | None, text: str) -> int:
    return counter.count(text) if counter is not None else estimate_tokens(len(text)).count


def page_overhead(counter: TokenCounter | None, spans: Sequence[PageSpan]) -> int:
    """What a request adds to the counted text: a marker line per page with text, and
    the seams between pages."""
    pages = [s.number for s in spans if s.char_end > s.char_start]
    markers = "".join(page_marker(n) for n in pages)
    return _count(counter, markers) + SEAM_TOKENS_PER_PAGE * len(pages)


def prompt_tokens(
    task: str,
    params: Mapping[str, object],
    spans: Sequence[PageSpan],
    counters: Mapping[str, TokenCounter],
    roles: Sequence[str],
) -> dict[str, int]:
    """Per role, the tokens a request adds to its text: the larger of the map and the
    reduce instructions (one budget bounds every request of the plan), the chat
    template, and the page markers. A role with no counter is estimated."""
    texts = (instruction_text(task, params), reduce_instruction_text(task, params))
    out = {}
    for role in roles:
        counter = counters.get(role)
        fixed = max(_count(counter, t) for t in texts)
        out[role] = fixed + TEMPLATE_TOKENS + page_overhead(counter, spans)
    return out


def text_count(counter: TokenCounter | None, text: str) -> TokenCount:
    """`text` counted by `counter`, else estimated (a page range's part of a document)."""
    if counter is None:
        return estimate_tokens(len(text))
    found = count_stream(counter, [text])
    # A server's /tokenize says so, as ingest's count of the whole document does.
    method = getattr(counter, "method", found.method)
    return replace(found, method=method) if method != found.method else found


def chat_counts(
    texts: Sequence[str], counters: Mapping[str, TokenCounter], roles: Sequence[str]
) -> dict[str, TokenCount]:
    """Per role, the tokens of a chat request's messages, each counted on its own (the
    template puts its turn markers between them); an estimate where a role has no
    counter."""
    out = {}
    for role in roles:
        counter = counters.get(role)
        if counter is None:
            out[role] = estimate_tokens(sum(len(t) for t in texts))
            continue
        method = getattr(counter, "method", "tokenizer")  # a server's /tokenize says so
        total = sum(counter.count(t) for t in texts if t)
        out[role] = TokenCount(total, True, counter.name, method, counter.model)
    return out
