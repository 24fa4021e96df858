"""The `expand_batch` task (ingest queue): an archive batch's entries become documents,
items and jobs; a request file's lines, once validated, items and jobs. Idempotent
(`service.batches.expansion.expand`): a re-delivered or re-sent task goes on from the
entries already made; the unique custom_id per batch keeps any item from being made
twice."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from service.batches.expansion import Expansion, expand
from service.blobstore import BlobStore
from service.config import get_settings
from service.db import get_sessionmaker
from service.jobs.dispatch import send
from service.queue import EXPAND_TASK, app, dispatch_ingest
from workers.task_options import durable_task

log = logging.getLogger(__name__)


@app.task(  # type: ignore[untyped-decorator]
    **durable_task(EXPAND_TASK)
)
def expand_batch(self: Any, batch_id: str) -> dict[str, Any]:
    settings = get_settings()
    store = BlobStore(settings.blobs)
    store.ensure()
    run = Expansion(settings, store, dispatch_ingest, send)
    with get_sessionmaker()() as session:
        ended = expand(run, session, uuid.UUID(batch_id))
    log.info("batch %s: %s", batch_id, ended)
    return {"batch_id": batch_id, "ended": ended}
