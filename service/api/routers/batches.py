"""/v1/batches: thin handlers over `service.batches`: two ways in (a request file,
OpenAI's Batch API; an archive) and one batch object."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from service import documents
from service.api import batch_views as views
from service.api import file_views, schemas
from service.api.deps import PrincipalDep, SessionDep, SettingsDep, TenantDep
from service.api.responses import V1, errors, json_body_errors
from service.api.upload import multipart_body, receive_file
from service.batches import archives, catalog, requests, result_cursor
from service.batches import lifecycle as batches
from service.blobstore import BlobStore
from service.db import release
from service.errors import Invalid
from service.models import BatchStatus
from service.queue import dispatch_expand, revoke
from service.webhooks.endpoints import check_callback

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/batches", tags=["batches"], responses=V1)

_ARCHIVE_BODY = multipart_body()


def _json(text: str | None, field: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Invalid("bad_json", f"{field} is not JSON: {exc}", field=f"query.{field}") from None
    if not isinstance(value, dict):
        raise Invalid("bad_json", f"{field} must be a JSON object", field=f"query.{field}")
    return value


@router.post(
    "/archive",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=views.BatchOut,
    openapi_extra=_ARCHIVE_BODY,
    responses={
        200: {"description": "The same archive, task, params, budget and OCR: that batch"},
        **errors(
            400,
            413,
            415,
            422,
            e413="Over the upload limit, or the archive over one of its limits (`limit`)",
            e422="A bad task, params, budget, window or OCR language, or an empty, damaged "
            "or non-archive file",
        ),
    },
)
async def create_archive_batch(
    request: Request,
    response: Response,
    session: SessionDep,
    tenant: TenantDep,
    settings: SettingsDep,
    task: Annotated[str, Query(description="The task run on every entry.")],
    params: Annotated[str | None, Query(description="The task's params, as JSON.")] = None,
    max_output_tokens: Annotated[int, Query(gt=0)] = 1024,
    completion_window: Annotated[str, Query(max_length=8)] = "24h",
    metadata: Annotated[str | None, Query(description="A JSON object kept with it.")] = None,
    callback_url: Annotated[
        str | None,
        Query(min_length=1, max_length=2048, description="Gets the batch's signed final event."),
    ] = None,
    ocr: schemas.OcrModeQuery = None,
    ocr_languages: schemas.OcrLanguagesQuery = None,
) -> views.BatchOut:
    """An archive (zip, tar, tar.gz/.bz2/.xz; multipart field `file`) as one batch:
    every entry becomes a document and a job, `custom_id` its path in the archive.
    `ocr` and `ocr_languages` are a single upload's, for every new document of it."""
    ocr_choice = await run_in_threadpool(documents.ocr_request, ocr, ocr_languages)
    asked = archives.ArchiveRequest(
        task, _json(params, "params") or {}, max_output_tokens, completion_window,
        _json(metadata, "metadata"), callback_url, ocr_choice,
    )  # fmt: skip
    checked = archives.validated(asked, settings)  # before a byte of the upload is read
    if callback_url is not None:
        await run_in_threadpool(
            check_callback, session, settings, tenant, callback_url, "query.callback_url"
        )
    store = BlobStore(settings.blobs)
    received = await receive_file(request, store, settings.archive_max_upload_bytes)
    batch, created = await run_in_threadpool(
        archives.create, session, settings, store, tenant, received, checked
    )
    if created:
        try:
            await run_in_threadpool(dispatch_expand, str(batch.id))
        except Exception:
            log.exception("could not queue batch %s; the batch advancer will", batch.id)
    else:
        response.status_code = status.HTTP_200_OK
    return await run_in_threadpool(views.to_out, session, batch)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=views.BatchOut,
    responses={
        200: {"description": "The same file (its bytes) for the same endpoint: that batch"},
        **json_body_errors(
            404,
            422,
            e404="No such file of the tenant's",
            e422="A bad body or window, or a file that is not purpose=batch",
        ),
    },
)
def create_batch(
    body: views.BatchCreate,
    response: Response,
    session: SessionDep,
    tenant: TenantDep,
    settings: SettingsDep,
) -> views.BatchOut:
    """A batch of a request file (OpenAI's Batch API): validated by a worker, its
    lines are then run as jobs; a bad line fails it with `errors` naming the line."""
    asked = requests.BatchRequest(
        file_views.parse_id(body.input_file_id),
        body.endpoint,
        body.completion_window,
        dict(body.metadata) if body.metadata is not None else None,
        body.callback_url,
    )
    batch, created = requests.create(session, settings, tenant, asked)
    if created and batch.status == BatchStatus.validating:
        try:
            dispatch_expand(str(batch.id))
        except Exception:
            log.exception("could not queue batch %s; the batch advancer will", batch.id)
    elif not created:
        response.status_code = status.HTTP_200_OK
    return views.to_out(session, batch)


@router.get("", response_model=views.BatchList, responses=errors(404, 422))
def list_batches(
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> views.BatchList:
    rows, more = catalog.list_owned(session, tenant, limit, after)
    data = [views.to_out(session, b) for b in rows]
    return views.BatchList(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=more,
    )


@router.get("/{batch_id}", response_model=views.BatchOut, responses=errors(404, 422))
def get_batch(batch_id: str, session: SessionDep, tenant: TenantDep) -> views.BatchOut:
    return views.to_out(session, batches.get_owned(session, tenant, batch_id))


@router.post("/{batch_id}/cancel", response_model=views.BatchOut, responses=errors(404, 422))
def cancel_batch(
    batch_id: str, session: SessionDep, tenant: TenantDep, settings: SettingsDep
) -> views.BatchOut:
    """Stop what has not finished, keep what has: `cancelling`, then `cancelled`."""
    batch = batches.get_owned(session, tenant, batch_id)
    revoke(batches.cancel(session, batch, BlobStore(settings.blobs)))
    return views.to_out(session, batch)


_RESULTS_HEADERS = {
    views.NEXT_CURSOR: {
        "required": True,
        "description": "The cursor to pass as `after` on the next call: it resumes after "
        "this page, holes included.",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"},
    },
    views.MORE: {
        "required": True,
        "description": "`true`: the scan stopped at `limit` or at the cursor's hole cap, "
        "and calling again at once goes on; `false`: this is all there is for now.",
        "schema": {"type": "string", "enum": ["true", "false"]},
    },
}


@router.get(
    "/{batch_id}/results",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "JSONL: one `{id, custom_id, response, error}` per final request "
            "of this page, in line order",
            "content": {"application/jsonl": {"schema": {"type": "string"}}},
            "headers": _RESULTS_HEADERS,
        },
        **errors(404, 422, e422="A bad `limit`, or an `after` that is not a cursor"),
    },
)
def batch_results(
    batch_id: str,
    session: SessionDep,
    tenant: TenantDep,
    who: PrincipalDep,
    settings: SettingsDep,
    after: Annotated[
        str | None,
        Query(description="The `Longdoc-Next-Cursor` of the previous call; none: the start."),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=10_000, description="The most lines one call scans.")
    ] = 1_000,
) -> StreamingResponse:
    """The requests that are final, a page at a time. Requests finish out of order, so
    the cursor is not a line: it is the highest line scanned and the lines below it
    that were not final yet (at most `BATCH_RESULTS_MAX_HOLES`). A call with it sends
    those of them that are final now, then the final requests past that line, in line
    order, scanning at most `limit` lines; along a chain of cursors each request comes
    exactly once. Without `after` it starts at the first line. The next cursor is in
    the `Longdoc-Next-Cursor` header; `Longdoc-More: true` means call again at once,
    `false` that the rest is not final yet (poll)."""
    holes = settings.batch_results_max_holes
    cursor = result_cursor.Cursor() if after is None else result_cursor.decode(after, holes)
    batch = batches.get_owned(session, tenant, batch_id)
    # The page is found before the body starts, as its headers name the next cursor.
    page = result_cursor.scan(session, batch.id, cursor, limit, holes)
    release(session)
    headers = {
        views.NEXT_CURSOR: result_cursor.encode(page.next),
        views.MORE: "true" if page.more else "false",
    }
    lines = views.result_lines(batch, who.is_admin, page.lines)
    return StreamingResponse(lines, media_type="application/jsonl", headers=headers)
