"""The resume cursor of a batch's results (`GET /v1/batches/{id}/results?after=`).

Requests finish out of line order, so "after line N" would skip a line below N that
becomes final later. The cursor is instead the highest line a call scanned (`m`)
and the lines at or below it that were not final then (`h`, the holes): the next
call sends the holes that have become final, then the final lines above `m`, and
hands on the holes still open. A line is final once and for ever (its status never
changes again), so each line is sent exactly once along a chain of cursors.

On the wire it is base64url (no padding) of compact JSON `{"m": M, "h": [holes]}`.
A call scans at most `limit` lines above `m`, and stops before a line that would be
a hole past `max_holes`, so the cursor (and the page the API holds before its body
streams) stays bounded; `more` says that it stopped so and that calling again at
once will move on. Items are made in line order, committed one by one or (an
archive's, `entries`) a chunk of consecutive lines at a time, each before the next, so
an item made after a scan has a line above every line that scan saw (above `m`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from service.batches import status as rules
from service.db import get_sessionmaker
from service.errors import Invalid
from service.models import BatchItem, Job

FIELD = "query.after"
# `batch_items.line` is a 32-bit integer: a larger number in a cursor could only be
# an error in the database, so it is one here.
MAX_LINE = 2**31 - 1
_LONGEST = len(json.dumps({"m": MAX_LINE, "h": []}, separators=(",", ":")))
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")
# Lines per query: the holes' IN list stays well under SQLite's bound-parameter limit.
CHUNK = 500


@dataclass(frozen=True)
class Cursor:
    top: int = 0  # the highest line scanned so far (0: none)
    holes: tuple[int, ...] = ()  # lines <= top not final when scanned, ascending


@dataclass
class Page:
    """What one call sends (`lines`, final, ascending), and the cursor after it."""

    lines: list[int] = field(default_factory=list)
    next: Cursor = field(default_factory=Cursor)
    more: bool = False


def encode(cursor: Cursor) -> str:
    text = json.dumps({"m": cursor.top, "h": list(cursor.holes)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def max_chars(max_holes: int) -> int:
    """The longest cursor a call can hand out with `max_holes`: longer is not ours."""
    most = _LONGEST + max_holes * (len(str(MAX_LINE)) + 1)
    return -(-most // 3) * 4


def _bad(why: str) -> Invalid:
    why = f"after: {why}; pass on the Longdoc-Next-Cursor header of the call before"
    return Invalid("bad_cursor", why, field=FIELD)


def _line(value: object, low: int) -> int | None:
    # bool is an int to Python, never a line to us.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_LINE:
        return None
    return value


def decode(text: str, max_holes: int) -> Cursor:
    """The cursor `text` names; Invalid (field query.after) for anything that is not
    one this API could have handed out under `max_holes`."""
    if len(text) > max_chars(max_holes):
        raise _bad(f"over {max_chars(max_holes)} characters")
    if not _ALPHABET.fullmatch(text):
        raise _bad("not base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, RecursionError):  # ValueError: not UTF-8 or JSON
        raise _bad("not a cursor (base64url of JSON)") from None
    if not isinstance(value, dict) or set(value) != {"m", "h"}:
        raise _bad('not {"m": line, "h": [lines]}')
    top, holes = _line(value["m"], 0), value["h"]
    if top is None:
        raise _bad(f"m is not a line (0 to {MAX_LINE})")
    if not isinstance(holes, list):
        raise _bad("h is not a list of lines")
    if len(holes) > max_holes:
        raise _bad(f"over {max_holes} holes")
    checked = [_line(h, 1) for h in holes]
    if any(h is None or h > top for h in checked):
        raise _bad("h holds a value that is not a line of 1 to m")
    lines = [h for h in checked if h is not None]
    if any(a >= b for a, b in pairwise(lines)):
        raise _bad("h is not in ascending order without repeats")
    return Cursor(top, tuple(lines))


def _finals(
    session: Session, batch_id: uuid.UUID, where: ColumnElement[bool], limit: int | None = None
) -> list[tuple[int, bool]]:
    """(line, whether it is final) of the batch's items that match, in line order:
    the status columns only, never whole rows."""
    stmt = (
        select(BatchItem.line, BatchItem.status, Job.status, Job.error_code)
        .outerjoin(Job, Job.id == BatchItem.job_id)
        .where(BatchItem.batch_id == batch_id, where)
        .order_by(BatchItem.line)
        .limit(limit)
    )
    return [
        (line, rules.effective(item, job, code) in rules.ITEM_FINAL)
        for line, item, job, code in session.execute(stmt)
    ]


def scan(session: Session, batch_id: uuid.UUID, cursor: Cursor, limit: int, max_holes: int) -> Page:
    """The lines to send after `cursor` and the cursor after them: the holes that are
    final now, then the final lines above its top, at most `limit` lines scanned."""
    page = Page()
    holes: list[int] = []
    for at in range(0, len(cursor.holes), CHUNK):
        chunk = cursor.holes[at : at + CHUNK]
        # A hole with no item (its batch deleted meanwhile) is simply gone.
        for line, final in _finals(session, batch_id, BatchItem.line.in_(chunk)):
            (page.lines if final else holes).append(line)
    top, scanned, blocked = cursor.top, 0, False
    while scanned < limit and not blocked:
        asked = min(CHUNK, limit - scanned)
        rows = _finals(session, batch_id, BatchItem.line > top, asked)
        for line, final in rows:
            if not final and len(holes) >= max_holes:
                blocked = True  # not scanned: the next call starts at this line
                break
            (page.lines if final else holes).append(line)
            top, scanned = line, scanned + 1
        if len(rows) < asked:
            break  # the batch's items end here (for now)
    if blocked:
        # Again at once only if this call moved; otherwise it would answer the same
        # until one of its holes ends, which is a poll, not a page.
        page.more = top > cursor.top or bool(page.lines)
    elif scanned >= limit:
        beyond = select(BatchItem.line).where(BatchItem.batch_id == batch_id, BatchItem.line > top)
        page.more = session.scalar(beyond.limit(1)) is not None
    page.next = Cursor(top, tuple(holes))
    return page


def items_at(
    batch_id: uuid.UUID, lines: Sequence[int]
) -> Iterator[tuple[Session, list[tuple[BatchItem, Job | None, str]]]]:
    """The batch's items at `lines` (final ones, as `scan` found them), `CHUNK` at a
    time in line order, each with its job, its status and the session it was read in:
    one of their own, as a response streams them after the request's session is gone.
    Read again rather than kept from the scan, so a page holds line numbers only."""
    with get_sessionmaker()() as session:
        for at in range(0, len(lines), CHUNK):
            rows = session.execute(
                select(BatchItem, Job)
                .outerjoin(Job, Job.id == BatchItem.job_id)
                .where(BatchItem.batch_id == batch_id, BatchItem.line.in_(lines[at : at + CHUNK]))
                .order_by(BatchItem.line)
            ).all()
            page: list[tuple[BatchItem, Job | None, str]] = []
            for item, job in rows:
                state = rules.effective(
                    item.status, job.status if job else None, job.error_code if job else None
                )
                if state in rules.ITEM_FINAL:  # as it was at the scan: final is for ever
                    page.append((item, job, state))
            yield session, page
            session.rollback()
