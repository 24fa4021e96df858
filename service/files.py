"""Files of the Files API (OpenAI's shape): a tenant's request files for batches,
and later the output files Longdoc writes for them.

An upload arrives as a `ReceivedFile` (already streamed into the blob store's temp
area, hashed and held to its size limit by the API). Each file gets a blob of its
own, `files/<id>`, committed before its row: a crash in between leaves an orphan
blob no row names, never a row without its bytes. Deleting moves the blob aside
while the row's delete commits, then removes it (as documents do). Lines are not
checked here: a request file is validated when a batch is created from it, as
OpenAI does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from service.blobstore import BlobStore
from service.db import write_transaction
from service.documents import ReceivedFile
from service.errors import Invalid, NotFound
from service.models import File, FilePurpose, FileStatus
from service.tenancy import owned

# Only these may be uploaded; `batch_output` files are Longdoc's own.
CLIENT_PURPOSES = (FilePurpose.batch,)
MAX_LIST = 10_000  # OpenAI's own bound on `limit`
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FilePage:
    files: list[File]
    has_more: bool


def blob_key(file_id: uuid.UUID) -> str:
    return f"files/{file_id}"


def check_field(name: str, value: str) -> None:
    """The check of an upload's form fields as they arrive (only `purpose` is kept)."""
    if name == "purpose":
        client_purpose(value)


def client_purpose(raw: str | None) -> FilePurpose:
    """The purpose a client may give an upload, or Invalid naming the field."""
    if raw is None:
        raise Invalid("missing", "the form field 'purpose' is required", field="body.purpose")
    allowed = [p.value for p in CLIENT_PURPOSES]
    if raw not in allowed:
        raise Invalid(
            "bad_purpose",
            f"purpose {raw[:100]!r} is not accepted; use one of {allowed}",
            field="body.purpose",
            supported=allowed,
        )
    return FilePurpose(raw)


def create(
    session: Session,
    store: BlobStore,
    tenant_id: uuid.UUID,
    received: ReceivedFile,
    purpose: FilePurpose,
) -> File:
    """Store a received upload as the tenant's file. The temp file is gone afterwards
    whatever happens."""
    try:
        if received.size == 0:
            raise Invalid("empty_file", "the file is empty; nothing was stored", field="body.file")
        file_id = uuid.uuid4()
        key = blob_key(file_id)
        store.commit(received.tmp_path, store.path(key))
        row = File(
            id=file_id,
            tenant_id=tenant_id,
            purpose=purpose,
            filename=received.filename,
            size_bytes=received.size,
            sha256=received.sha256,
            blob_key=key,
            status=FileStatus.processed,
        )
        try:
            with write_transaction(session):
                session.add(row)
        except BaseException:
            store.delete(store.path(key))
            raise
        return row
    finally:
        received.tmp_path.unlink(missing_ok=True)


def get_owned(session: Session, tenant_id: uuid.UUID, file_id: uuid.UUID) -> File:
    return owned(session, File, tenant_id, file_id)


def list_owned(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    limit: int,
    after: uuid.UUID | None = None,
    purpose: FilePurpose | None = None,
    newest_first: bool = True,
) -> FilePage:
    """A page of the tenant's files by creation time, after the file `after` (a cursor,
    as OpenAI's lists take it: the last id of the page before)."""
    query = select(File).where(File.tenant_id == tenant_id)
    if purpose is not None:
        query = query.where(File.purpose == purpose)
    if after is not None:
        try:
            cursor = get_owned(session, tenant_id, after)
        except NotFound:
            raise Invalid("bad_cursor", "after: no such file", field="query.after") from None
        query = query.where(_beyond(cursor, newest_first))
    order = (
        (File.created_at.desc(), File.id.desc())
        if newest_first
        else (File.created_at.asc(), File.id.asc())
    )
    rows = list(session.scalars(query.order_by(*order).limit(limit + 1)))
    return FilePage(files=rows[:limit], has_more=len(rows) > limit)


def _beyond(cursor: File, newest_first: bool) -> ColumnElement[bool]:
    # Keyset on (created_at, id): files created in the same instant keep one order.
    if newest_first:
        return or_(
            File.created_at < cursor.created_at,
            and_(File.created_at == cursor.created_at, File.id < cursor.id),
        )
    return or_(
        File.created_at > cursor.created_at,
        and_(File.created_at == cursor.created_at, File.id > cursor.id),
    )


def open_content(store: BlobStore, row: File) -> BinaryIO:
    """The file's bytes, opened: a missing blob fails here, before a response starts."""
    try:
        return store.path(row.blob_key).open("rb")
    except FileNotFoundError:
        raise NotFound("not_found", "the file's content is gone") from None


def chunks(f: BinaryIO, size: int) -> Iterator[bytes]:
    """The open file's first `size` bytes (its row's: an output file being written
    may hold bytes past its last commit) a chunk at a time, then closes it."""
    with f:
        while size > 0 and (block := f.read(min(_CHUNK, size))):
            size -= len(block)
            yield block


def delete(session: Session, store: BlobStore, row: File) -> None:
    path = store.path(row.blob_key)
    with write_transaction(session, commit=False):
        session.delete(row)
        session.flush()
        # Aside, not unlinked, until the delete has committed: if the commit fails
        # the file keeps its bytes.
        aside = store.retire(path)
        try:
            session.commit()
        except BaseException:
            if aside is not None:
                store.restore(aside, path)
            raise
    if aside is not None:
        store.delete(aside)
