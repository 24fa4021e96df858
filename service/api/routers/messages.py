"""/v1/messages/batches: Anthropic's Message Batches API, thin handlers over
`service.batches.messages` (the batch itself is Longdoc's one batch model)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from service.api import message_batch_views as views
from service.api.deps import SessionDep, SettingsDep, TenantDep
from service.api.responses import V1, errors
from service.api.upload import receive_body
from service.batches import catalog, messages
from service.batches import lifecycle as batches
from service.blobstore import BlobStore
from service.db import release
from service.errors import NotFound
from service.models import Batch
from service.queue import dispatch_expand, revoke

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/messages/batches", tags=["message batches"], responses=V1)

_PARAMS: dict[str, Any] = {
    "type": "object",
    "required": ["model", "max_tokens", "messages"],
    "properties": {
        "model": {"type": "string", "description": "A role (gemma, scout), a served model or auto"},
        "max_tokens": {"type": "integer", "minimum": 1},
        "messages": {"type": "array", "items": {"type": "object"}, "minItems": 1},
        "system": {"type": ["string", "array"]},
    },
}
_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["requests"],
                    "properties": {
                        "requests": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["custom_id", "params"],
                                "properties": {
                                    "custom_id": {
                                        "type": "string",
                                        "pattern": "^[a-zA-Z0-9_-]{1,64}$",
                                    },
                                    "params": _PARAMS,
                                },
                            },
                        },
                        "callback_url": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 2048,
                            "description": "Longdoc's (the SDK sends it in `extra_body`): gets "
                            "the batch's signed batch.completed, batch.failed, batch.expired or "
                            "batch.cancelled event, signed with the secret of the tenant's "
                            "first webhook endpoint, which must exist",
                        },
                    },
                }
            }
        },
    }
}


def _owned(session: SessionDep, tenant: TenantDep, batch_id: str) -> Batch:
    batch = batches.get_owned(session, tenant, batch_id)
    if batch.kind != messages.KIND:  # an OpenAI or archive batch is not a message batch
        raise NotFound("not_found", "message batch not found")
    return batch


@router.post(
    "",
    response_model=views.MessageBatch,
    openapi_extra=_BODY,
    responses={
        **errors(
            400,
            413,
            422,
            e400="Not JSON, or a request that is bad or not served (named in `field`)",
            e413="A body over MAX_BATCH_FILE_BYTES; nothing stored",
            e422="A callback_url that cannot be delivered to, or no webhook endpoint to sign "
            "for it; nothing stored",
        ),
    },
)
async def create_message_batch(
    request: Request, session: SessionDep, tenant: TenantDep, settings: SettingsDep
) -> views.MessageBatch:
    """A batch of Messages requests, each run as a chat job: counted exactly, routed by
    length and admitted by its KV footprint. The same body again: that batch."""
    store = BlobStore(settings.blobs)
    received = await receive_body(
        request, store, settings.max_batch_file_bytes, "message_batch.json"
    )
    batch, created = await run_in_threadpool(
        messages.create, session, settings, store, tenant, received
    )
    if created:
        try:
            await run_in_threadpool(dispatch_expand, str(batch.id))
        except Exception:
            log.exception("could not queue batch %s; the batch advancer will", batch.id)
    base = str(request.base_url)
    return await run_in_threadpool(views.to_message_batch, session, batch, base)


@router.get("", response_model=views.MessageBatchList, responses=errors(404, 422))
def list_message_batches(
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    after_id: Annotated[str | None, Query(max_length=64)] = None,
    before_id: Annotated[str | None, Query(max_length=64)] = None,
) -> views.MessageBatchList:
    """Newest first; `after_id` (`before_id`) pages to older (newer) batches."""
    rows, more = catalog.list_owned(
        session, tenant, limit, after_id, before=before_id, kind=messages.KIND
    )
    base = str(request.base_url)
    data = [views.to_message_batch(session, b, base) for b in rows]
    return views.MessageBatchList(
        data=data,
        has_more=more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


@router.get("/{batch_id}", response_model=views.MessageBatch, responses=errors(404, 422))
def get_message_batch(
    batch_id: str, request: Request, session: SessionDep, tenant: TenantDep
) -> views.MessageBatch:
    batch = _owned(session, tenant, batch_id)
    return views.to_message_batch(session, batch, str(request.base_url))


@router.post("/{batch_id}/cancel", response_model=views.MessageBatch, responses=errors(404, 422))
def cancel_message_batch(
    batch_id: str, request: Request, session: SessionDep, tenant: TenantDep, settings: SettingsDep
) -> views.MessageBatch:
    """Requests not started end `canceled`; running ones are aborted; finished ones stay."""
    batch = _owned(session, tenant, batch_id)
    revoke(batches.cancel(session, batch, BlobStore(settings.blobs)))
    return views.to_message_batch(session, batch, str(request.base_url))


@router.delete(
    "/{batch_id}",
    response_model=views.DeletedMessageBatch,
    responses=errors(404, 409, 422, e409="The batch has not ended: cancel it first"),
)
def delete_message_batch(
    batch_id: str, session: SessionDep, tenant: TenantDep, settings: SettingsDep
) -> views.DeletedMessageBatch:
    """An ended batch, its requests' records and its files; the jobs stay listed."""
    batch = _owned(session, tenant, batch_id)
    public = batches.public_id(batch.id)
    catalog.delete(session, batch, BlobStore(settings.blobs))
    return views.DeletedMessageBatch(id=public)


@router.get(
    "/{batch_id}/results",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "JSONL: one `{custom_id, result}` per final request, in order",
            "content": {"application/x-jsonl": {"schema": {"type": "string"}}},
        },
        **errors(404, 422),
    },
)
def message_batch_results(
    batch_id: str, session: SessionDep, tenant: TenantDep
) -> StreamingResponse:
    """What is final so far (all of it once the batch has ended); call again for more."""
    batch = _owned(session, tenant, batch_id)
    release(session)
    return StreamingResponse(views.result_lines(batch), media_type="application/x-jsonl")
