"""/v1/documents: thin handlers over `service.documents`."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from service import documents
from service.api import document_views, schemas
from service.api import job_views as views
from service.api.deps import SessionDep, SettingsDep, TenantDep
from service.api.problems import issues
from service.api.responses import V1, errors
from service.api.upload import multipart_body, receive_file
from service.blobstore import BlobStore
from service.db import release
from service.errors import Invalid
from service.jobs import lifecycle, quota
from service.jobs.dispatch import send
from service.jobs.schemas import JobCreate
from service.models import DocumentStatus
from service.queue import dispatch_ingest, revoke

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/documents", tags=["documents"], responses=V1)

_UPLOAD_BODY = multipart_body()


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=schemas.UploadOut,
    openapi_extra=_UPLOAD_BODY,
    responses={
        200: {"description": "The same bytes were uploaded before: that document"},
        **errors(
            400,
            413,
            415,
            422,
            429,
            e400="A malformed or truncated multipart body; nothing stored",
            e413="Over the upload limit; nothing stored",
            e415="Not a supported type; the body lists the supported ones",
            e422="A bad task, params, pages, budget or OCR language, or an empty file; "
            "nothing stored",
            e429="With task: the tenant has its limit of jobs waiting; nothing stored",
        ),
    },
)
async def upload_document(
    request: Request,
    response: Response,
    session: SessionDep,
    tenant: TenantDep,
    settings: SettingsDep,
    task: Annotated[str | None, Query(description="Also run this task on it.")] = None,
    params: Annotated[str | None, Query(description="The task's params, as JSON.")] = None,
    max_output_tokens: Annotated[int, Query(gt=0)] = 1024,
    idempotency_key: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    pages: Annotated[
        str | None, Query(description='With `task`: only these pages ("7", "30-45").')
    ] = None,
    ocr: schemas.OcrModeQuery = None,
    ocr_languages: schemas.OcrLanguagesQuery = None,
) -> schemas.UploadOut:
    """Upload a document (multipart field `file`); parsing and token counting follow.
    With `task`, a job on it is created in the same call (the `job` field). `ocr` and
    `ocr_languages` default to the server's settings and the document's language."""
    ocr_choice = await run_in_threadpool(documents.ocr_request, ocr, ocr_languages)
    job_body = None
    if task is not None:
        # Checked before the upload is read: a bad task costs the client no transfer.
        job_body = _job_body(task, params, max_output_tokens, idempotency_key, pages)
        lifecycle.validated(job_body, settings)
        await run_in_threadpool(
            quota.check_room_before_upload, session, settings, tenant, idempotency_key
        )
    elif params is not None:
        raise Invalid("bad_params", "params without task", field="query.params")
    elif pages is not None:
        raise Invalid("bad_pages", "pages without task", field="query.pages")
    store = BlobStore(settings.blobs)
    received = await receive_file(request, store, settings.max_upload_bytes)
    doc, created = await run_in_threadpool(
        documents.register_upload, session, store, tenant, received, None, ocr_choice
    )
    if created:
        try:
            await run_in_threadpool(dispatch_ingest, str(doc.id))
            await run_in_threadpool(documents.mark_dispatched, session, [doc.id])
        except Exception:
            # The row is safe; the worker's sweeper sends what the API could not.
            log.exception("could not queue document %s; the sweeper will", doc.id)
    else:
        response.status_code = status.HTTP_200_OK
    # In a thread: to_out loads the token counts, which must not block the event loop.
    shown = await run_in_threadpool(document_views.to_out, doc)
    out = schemas.UploadOut(**shown.model_dump())
    if job_body is not None:
        job_body.document_id = doc.id
        job, created, to_send = await run_in_threadpool(
            lifecycle.create, session, settings, tenant, job_body
        )
        if created:
            await run_in_threadpool(send, session, to_send)
        out.job = await run_in_threadpool(views.to_out, session, job)
    return out


def _job_body(
    task: str, params: str | None, max_output_tokens: int, key: str | None, pages: str | None
) -> JobCreate:
    try:
        parsed = json.loads(params) if params is not None else {}
    except json.JSONDecodeError as exc:
        raise Invalid("bad_params", f"params is not JSON: {exc}", field="query.params") from None
    try:
        return JobCreate(
            document_id=uuid.UUID(int=0),  # replaced once the upload has its document
            task=task,
            params=parsed,
            max_output_tokens=max_output_tokens,
            idempotency_key=key,
            pages=pages,
        )
    except ValidationError as exc:
        # Every field here came in the query string, under its own name.
        found = issues(exc.errors(include_url=False, include_context=False), ["query"])
        first = found[0]
        code = "bad_pages" if first["field"] == "query.pages" else "bad_params"
        raise Invalid(code, first["reason"], field=first["field"], errors=found) from None


@router.get("", response_model=schemas.DocumentList, responses=errors(422))
def list_documents(
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: schemas.Offset = 0,
    state: Annotated[DocumentStatus | None, Query(alias="status")] = None,
) -> schemas.DocumentList:
    rows, total = documents.list_owned(session, tenant, limit, offset, state)
    items = [document_views.to_out(d) for d in rows]
    return schemas.DocumentList(items=items, total=total, limit=limit, offset=offset)


@router.get("/{document_id}", response_model=schemas.DocumentOut, responses=errors(404, 422))
def get_document(
    document_id: uuid.UUID, session: SessionDep, tenant: TenantDep
) -> schemas.DocumentOut:
    return document_views.to_out(documents.get_owned(session, tenant, document_id))


@router.get(
    "/{document_id}/text",
    response_model=schemas.DocumentText,
    responses=errors(
        404,
        409,
        422,
        e409="The document is not parsed (yet), or has no pages",
        e422="A bad page range, or more pages than one request may ask for",
    ),
)
def get_text(
    document_id: uuid.UUID,
    session: SessionDep,
    tenant: TenantDep,
    settings: SettingsDep,
    pages: Annotated[str | None, Query(description="e.g. 3-7, 5 or 10-", max_length=40)] = None,
) -> schemas.DocumentText:
    doc = documents.get_owned(session, tenant, document_id)
    release(session)  # the text is read from the blob store, not the database
    store = BlobStore(settings.blobs)
    text = documents.read_text(doc, store, pages, settings.max_text_pages_per_request)
    return document_views.text_out(doc, text)


@router.delete(
    "/{document_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=errors(
        404, 409, 422, e409="`document_in_use`: jobs on it have not finished (`job_ids`)"
    ),
)
def delete_document(
    document_id: uuid.UUID,
    session: SessionDep,
    tenant: TenantDep,
    settings: SettingsDep,
    cancel_jobs: Annotated[
        bool, Query(description="Cancel the document's unfinished jobs, then delete it.")
    ] = False,
) -> None:
    """Delete a document, its text, and its upload unless another document shares the
    bytes. Its jobs and results stay, with `document_id` null."""
    doc = documents.get_owned(session, tenant, document_id)
    revoke(documents.delete(session, BlobStore(settings.blobs), doc, cancel_jobs=cancel_jobs))
