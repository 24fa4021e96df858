"""/v1/files: OpenAI's Files API (purpose `batch`), thin handlers over `service.files`."""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from service import files
from service.api import file_views as views
from service.api.deps import SessionDep, SettingsDep, TenantDep
from service.api.responses import V1, errors
from service.api.upload import multipart_body, receive_file
from service.blobstore import BlobStore
from service.db import release
from service.errors import Invalid, NotFound
from service.models import FilePurpose

router = APIRouter(prefix="/v1/files", tags=["files"], responses=V1)

_UPLOAD_BODY = multipart_body(purpose={"type": "string", "enum": ["batch"]})
_CONTENT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file's bytes, as uploaded",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post(
    "",
    response_model=views.FileObject,
    openapi_extra=_UPLOAD_BODY,
    responses=errors(
        400,
        413,
        415,
        422,
        e400="A malformed or truncated multipart body; nothing stored",
        e413="Over MAX_BATCH_FILE_BYTES (named in the reason); nothing stored",
        e415="Not a multipart/form-data body",
        e422="No `file`, a `purpose` other than `batch`, or an empty file; nothing stored",
    ),
)
async def create_file(
    request: Request, session: SessionDep, tenant: TenantDep, settings: SettingsDep
) -> views.FileObject:
    """Upload a file (multipart fields `file` and `purpose`, which must be `batch`):
    a JSONL request file for a batch. Its lines are checked when a batch uses it."""
    store = BlobStore(settings.blobs)
    received = await receive_file(
        request, store, settings.max_batch_file_bytes, ("purpose",), files.check_field
    )
    try:
        purpose = files.client_purpose(received.fields.get("purpose"))
    except Invalid:
        received.tmp_path.unlink(missing_ok=True)
        raise
    row = await run_in_threadpool(files.create, session, store, tenant, received, purpose)
    return views.to_out(row)


@router.get("", response_model=views.FileList, responses=errors(422))
def list_files(
    session: SessionDep,
    tenant: TenantDep,
    purpose: FilePurpose | None = None,
    limit: Annotated[int, Query(ge=1, le=files.MAX_LIST)] = files.MAX_LIST,
    after: Annotated[
        str | None, Query(max_length=100, description="The last id of the page before.")
    ] = None,
    order: Literal["asc", "desc"] = "desc",
) -> views.FileList:
    """The tenant's files by creation time, newest first unless `order=asc`."""
    cursor = None
    if after is not None:
        try:
            cursor = views.parse_id(after)
        except NotFound:
            raise Invalid("bad_cursor", "after: not a file id", field="query.after") from None
    page = files.list_owned(
        session, tenant, limit=limit, after=cursor, purpose=purpose, newest_first=order == "desc"
    )
    return views.list_out(page.files, page.has_more)


@router.get("/{file_id}", response_model=views.FileObject, responses=errors(404, 422))
def retrieve_file(file_id: str, session: SessionDep, tenant: TenantDep) -> views.FileObject:
    return views.to_out(files.get_owned(session, tenant, views.parse_id(file_id)))


@router.get(
    "/{file_id}/content",
    response_class=StreamingResponse,
    responses={**_CONTENT, **errors(404, 422)},
)
def file_content(
    file_id: str, session: SessionDep, tenant: TenantDep, settings: SettingsDep
) -> StreamingResponse:
    """The file's bytes, streamed as stored."""
    row = files.get_owned(session, tenant, views.parse_id(file_id))
    release(session)  # the bytes come from the blob store, however slow the client
    f = files.open_content(BlobStore(settings.blobs), row)
    size = min(row.size_bytes, os.fstat(f.fileno()).st_size)
    return StreamingResponse(
        files.chunks(f, size),
        media_type="application/octet-stream",
        headers={"Content-Length": str(size)},
    )


@router.delete("/{file_id}", response_model=views.FileDeleted, responses=errors(404, 422))
def delete_file(
    file_id: str, session: SessionDep, tenant: TenantDep, settings: SettingsDep
) -> views.FileDeleted:
    row = files.get_owned(session, tenant, views.parse_id(file_id))
    files.delete(session, BlobStore(settings.blobs), row)
    return views.FileDeleted(id=views.file_id(row.id), deleted=True)
