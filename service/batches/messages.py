"""Anthropic Message Batches: one JSON body `{requests: [{custom_id, params}]}` becomes
a batch whose requests run as chat jobs, like the lines of a `/v1/chat/completions`
request file.

The body is streamed to the blob store by the API and checked there request by
request (`ijson`: the API's memory does not grow with the body); a bad request refuses
the whole batch with the request named, as Anthropic does, and so does one whose chat
job would be refused where that is known before counting (a model not served, text
with NUL: `message_params.check_servable`). The stored body is kept as the batch's
input file, and the worker's expansion reads it again, request by request, turning
each request's `params` into an OpenAI chat body (`message_params.to_chat`). The same body
(its bytes) from one tenant is the same batch, unless that one ended badly. A
`callback_url` beside `requests` gets the batch's signed final event, as a request
file's batch's does (`service.webhooks.outbox.batch_ended`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, TYPE_CHECKING, Any

import ijson
from sqlalchemy.orm import Session

from service import files
from service.batches import catalog, items, requests
from service.batches import lifecycle as batches
from service.batches import request_lines as lines
from service.batches.message_params import check_servable, refuse, to_chat
from service.blobstore import BlobStore
from service.config import Settings
from service.documents import ReceivedFile
from service.errors import BadRequest
from service.jobs.planning import served_models
from service.models import (
    BATCH_FINAL,
    Batch,
    BatchItemStatus,
    BatchStatus,
    File,
    FilePurpose,
    utcnow,
)
from service.webhooks.endpoints import check_callback

if TYPE_CHECKING:  # it imports this module, to hand a message batch over
    from service.batches.expansion import Expansion

log = logging.getLogger(__name__)
KIND = "anthropic"
# What every request runs as: Anthropic's params are turned into a chat request.
ENDPOINT = "/v1/chat/completions"
WINDOW = "24h"  # Anthropic's: a message batch expires 24 hours after it is made
# Longdoc's: the receiver of the batch's signed final event, as in POST /v1/batches.
CALLBACK, CALLBACK_FIELD = "callback_url", "body.callback_url"
_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")


@dataclass(frozen=True)
class MessageRequest:
    index: int  # 0-based place in `requests`
    custom_id: str
    params: dict[str, Any]


def read(f: IO[bytes], max_requests: int) -> Iterator[MessageRequest]:
    """The body's requests in order, each checked for shape (not yet for its params);
    BadRequest for a body that is not `{requests: [...]}` or a request that is bad."""
    try:
        top = next(ijson.parse(f, use_float=True), None)
        if top is None or top[1] != "start_map":
            raise BadRequest("invalid_request", "the body must be a JSON object", field="body")
        f.seek(0)
        seen: set[str] = set()
        index = -1
        for index, raw in enumerate(ijson.items(f, "requests.item", use_float=True)):
            if index >= max_requests:
                raise refuse(None, f"more than {max_requests} requests in one batch")
            yield _one(index, raw, seen)
        if index < 0:
            raise refuse(None, "requests must be a non-empty list")
    except (ijson.JSONError, UnicodeDecodeError) as exc:  # bytes that are not UTF-8 text
        why = f"the body is not valid JSON: {exc}"
        raise BadRequest("invalid_json", why, field="body") from None


def _one(index: int, raw: object, seen: set[str]) -> MessageRequest:
    if not isinstance(raw, dict):
        raise refuse(index, "each request must be an object {custom_id, params}")
    extra = sorted(set(raw) - {"custom_id", "params"})
    if extra:
        raise refuse(index, f"unknown fields {extra}")
    cid, params = raw.get("custom_id"), raw.get("params")
    if not isinstance(cid, str) or not _CUSTOM_ID.fullmatch(cid):
        raise refuse(index, "custom_id must be 1 to 64 of a-z A-Z 0-9 _ -", ".custom_id")
    if cid in seen:
        raise refuse(index, f"custom_id {cid!r} is used twice", ".custom_id")
    seen.add(cid)
    if not isinstance(params, dict):
        raise refuse(index, "params must be an object", ".params")
    return MessageRequest(index, cid, params)


def _callback_url(f: IO[bytes]) -> str | None:
    """The body's `callback_url`, Longdoc's own key beside `requests` (the SDKs send it
    in `extra_body`, after the requests), read as they are: only its value is built."""
    f.seek(0)
    found = list(itertools.islice(ijson.items(f, CALLBACK), 2))
    if len(found) > 1:
        raise BadRequest("invalid_request", "callback_url is given twice", field=CALLBACK_FIELD)
    url = found[0] if found else None
    if url is not None and (not isinstance(url, str) or not url):
        why = "callback_url must be an http(s) URL, a non-empty string"
        raise BadRequest("invalid_request", why, field=CALLBACK_FIELD)
    return url


def _top_level(f: IO[bytes]) -> None:
    """Only `requests` and `callback_url` at the top, as Anthropic refuses other keys:
    a misspelt one would otherwise be ignored without a word. One more streaming pass
    over the events, none of the values built."""
    f.seek(0)
    for prefix, event, key in ijson.parse(f, use_float=True):
        if prefix == "" and event == "map_key" and key not in ("requests", CALLBACK):
            shown = key if len(key) <= 64 else key[:64] + "…"
            why = f"unknown field {shown!r}: a body has requests and callback_url only"
            raise BadRequest("invalid_request", why, field=f"body.{shown}")


def check(session: Session, path: Any, settings: Settings) -> tuple[int, str | None]:
    """(how many requests the stored body holds, each of them one Longdoc can serve as
    far as that is known before it is counted (`check_servable`); its callback URL)."""
    served = served_models(session, settings)
    n = 0
    with open(path, "rb") as f:
        for req in read(f, settings.batch_max_requests):
            body = to_chat(req.index, req.params)
            check_servable(req.index, req.params, body, settings, served)
            n += 1
        _top_level(f)
        return n, _callback_url(f)


def _dedup_key(sha256: str) -> str:
    return hashlib.sha256(json.dumps([KIND, sha256]).encode()).hexdigest()


def create(
    session: Session,
    settings: Settings,
    store: BlobStore,
    tenant_id: uuid.UUID,
    received: ReceivedFile,
) -> tuple[Batch, bool]:
    """(batch, created) for a received body, checked whole before anything is kept:
    BadRequest for a bad request, Invalid for a callback URL that cannot be delivered
    to (as `POST /v1/batches` refuses it)."""
    try:
        total, callback = check(session, received.tmp_path, settings)
        if callback is not None:
            check_callback(session, settings, tenant_id, callback, CALLBACK_FIELD)
        key = _dedup_key(received.sha256)
        existing = batches.reusable(session, tenant_id, key)
        session.commit()
        if existing is not None:
            return existing, False
    except BaseException:
        received.tmp_path.unlink(missing_ok=True)
        raise
    source = files.create(session, store, tenant_id, received, FilePurpose.batch)
    now = utcnow()
    batch = Batch(
        tenant_id=tenant_id, kind=KIND, status=BatchStatus.validating, endpoint=ENDPOINT,
        filename=source.filename, input_file_id=source.id, completion_window=WINDOW,
        expires_at=now + timedelta(hours=24), total=total, dedup_key=key, created_at=now,
        callback_url=callback,
    )  # fmt: skip
    made, created = catalog.insert_once(session, batch)
    if not created:  # another request made it meanwhile: its body is stored already
        files.delete(session, store, source)
    return made, created


def expand(run: Expansion, session: Session, batch: Batch) -> str:
    """Make the batch's items and chat jobs request by request; idempotent like a
    request file's expansion (a request made by an earlier run is left alone)."""
    if batch.expanded_at is not None or batch.status in BATCH_FINAL:
        return "nothing to do"
    source = session.get(File, batch.input_file_id) if batch.input_file_id else None
    if source is None:
        gone = {"code": "missing_file", "message": "the stored body is gone", "line": None}
        session.rollback()
        items.end_expansion(session, batch.id, total=0, errors=[gone])
        return "failed: the stored body is gone"
    made = items.start(session, batch, batch.total)
    stop = items.StopCheck(session, batch.id)
    with run.store.path(source.blob_key).open("rb") as f:
        for req in read(f, run.settings.batch_max_requests):
            if made.get(req.custom_id, BatchItemStatus.pending) != BatchItemStatus.pending:
                continue
            if stop():
                items.end_expansion(session, batch.id)
                return "stopped"
            body = to_chat(req.index, req.params)  # checked at creation
            line = lines.Request(req.index + 1, req.custom_id, body)
            requests.run_line(run, session, batch, line)
    items.end_expansion(session, batch.id, total=batch.total)
    return "expanded"
