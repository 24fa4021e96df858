"""Document logic behind the routers: register an upload, look up, read text, delete."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from ingestion.documents.formats import SUPPORTED_MEDIA_TYPES, detect_media_type_path
from ingestion.documents.textfile import PageSpan, parse_page_range, read_pages, spans_from_json
from ingestion.types import IngestError
from service.blobstore import BlobStore, fsync_file
from service.db import write_transaction
from service.errors import Conflict, DomainError, Invalid, Unsupported
from service.jobs import tree
from service.models import FINAL, Document, DocumentStatus, Job, JobStatus, utcnow
from service.tenancy import owned

log = logging.getLogger(__name__)
# The first key of the advisory locks on originals (`lock_blob`): "blob" in ASCII.
BLOB_LOCKS = 0x626C6F62


@dataclass(frozen=True)
class ReceivedFile:
    """An upload received whole into the blob store's temp area, not yet a document."""

    tmp_path: Path
    sha256: str
    size: int
    filename: str
    head: bytes
    # Other form fields the route asked for (`receive_file(fields=...)`), as text.
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TextRange:
    """Pages `first`..`last` of a parsed document's text, each with its span."""

    page_count: int
    first: int
    last: int
    pages: list[tuple[PageSpan, str]]


def _refuse(err: IngestError) -> DomainError:
    if err.code == "unsupported_type":
        return Unsupported(err.code, err.reason, supported=sorted(SUPPORTED_MEDIA_TYPES))
    return Invalid(err.code, err.reason)


def register_upload(
    session: Session, store: BlobStore, tenant_id: uuid.UUID, received: ReceivedFile
) -> tuple[Document, bool]:
    """Store the upload as a document; the same bytes from the same tenant give the
    existing document back (second value False) and are not parsed again."""
    try:
        try:
            media_type = detect_media_type_path(received.tmp_path, received.filename)
        except IngestError as err:
            raise _refuse(err) from None
        fsync_file(received.tmp_path)  # the slow part of committing it, before the lock
        with write_transaction(session, commit=False):
            lock_blob(session, received.sha256)
            existing = find_by_sha(session, tenant_id, received.sha256)
            if existing is not None:
                session.commit()
                return existing, False
            # Linked and inserted under the lock: a delete of another document with
            # these bytes either ran before (and we put the file back) or waits for
            # our row, and then sees the bytes are still used.
            store.commit_original(received.tmp_path, received.sha256)
            doc = Document(
                tenant_id=tenant_id,
                sha256=received.sha256,
                filename=received.filename,
                media_type=media_type,
                size_bytes=received.size,
                status=DocumentStatus.queued,
            )
            session.add(doc)
            try:
                session.commit()
            except IntegrityError:
                # A writer that did not take the lock inserted the same bytes first.
                session.rollback()
                existing = find_by_sha(session, tenant_id, received.sha256)
                if existing is None:
                    raise
                return existing, False
        return doc, True
    finally:
        received.tmp_path.unlink(missing_ok=True)


def lock_blob(session: Session, sha256: str) -> None:
    """Serialize, until this transaction ends, everything that links or unlinks the
    original with these bytes: an upload's link-then-insert against a delete's
    still-shared-check-then-unlink. Originals are shared across tenants, so without
    it a delete could unlink a file another tenant's new row just took. SQLite needs
    nothing more: `write_transaction` already holds its one write lock."""
    if session.connection().dialect.name == "postgresql":
        # Two-key form, so the lock space is ours; a collision on the low 31 bits of
        # two hashes only makes two uploads take turns.
        session.execute(select(func.pg_advisory_xact_lock(BLOB_LOCKS, int(sha256[:8], 16) >> 1)))


def find_by_sha(session: Session, tenant_id: uuid.UUID, sha256: str) -> Document | None:
    return session.scalar(
        select(Document).where(Document.tenant_id == tenant_id, Document.sha256 == sha256)
    )


def get_owned(session: Session, tenant_id: uuid.UUID, document_id: uuid.UUID) -> Document:
    return owned(session, Document, tenant_id, document_id)


def list_owned(
    session: Session, tenant_id: uuid.UUID, limit: int, offset: int, state: DocumentStatus | None
) -> tuple[list[Document], int]:
    query = select(Document).where(Document.tenant_id == tenant_id)
    if state is not None:
        query = query.where(Document.status == state)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    # The token counts in one query for the page, not one per document as they are shown.
    page = query.order_by(Document.created_at.desc(), Document.id).limit(limit).offset(offset)
    rows = session.scalars(page.options(selectinload(Document.token_counts))).all()
    return list(rows), total


def read_text(doc: Document, store: BlobStore, pages: str | None, max_pages: int) -> TextRange:
    if doc.status != DocumentStatus.parsed or doc.text_key is None or doc.page_map is None:
        raise Conflict(
            "not_parsed", f"document is {doc.status.value}; text exists once it is parsed"
        )
    spans = spans_from_json(doc.page_map)
    if not spans:
        raise Conflict("no_pages", "document has no pages")
    try:
        first, last = parse_page_range(pages or f"1-{len(spans)}", len(spans))
    except ValueError as exc:
        raise Invalid("bad_range", str(exc), field="pages") from None
    if last - first + 1 > max_pages:
        raise Invalid(
            "range_too_long",
            f"at most {max_pages} pages per request; ask for a range with ?pages=A-B",
            field="pages",
        )
    with store.path(doc.text_key).open("rb") as f:
        out = list(read_pages(f, spans, first, last))
    return TextRange(page_count=len(spans), first=first, last=last, pages=out)


def delete(session: Session, store: BlobStore, doc: Document, *, cancel_jobs: bool) -> list[str]:
    """Remove the row, its text, and the original unless another document shares it.

    A document with live jobs is refused (409 `document_in_use`) unless `cancel_jobs`:
    then they are cancelled (leases released) in the same transaction. Jobs outlive
    the document (`document_id` null). Returns the Celery task ids to revoke."""
    sha, text_key = doc.sha256, doc.text_key
    with write_transaction(session, commit=False):
        lock_blob(session, sha)
        # A job created from here on waits for this row, then finds it gone.
        session.execute(select(Document.id).where(Document.id == doc.id).with_for_update())
        live = session.execute(
            select(Job.id, Job.parent_id, Job.task_id).where(
                Job.document_id == doc.id, Job.status.not_in(FINAL)
            )
        ).all()
        if live and not cancel_jobs:
            session.rollback()
            raise _in_use(sorted({str(j.parent_id or j.id) for j in live}))
        tree.end_tree(
            session,
            [j.id for j in live],
            JobStatus.cancelled,
            utcnow(),
            code="cancelled",
            reason="cancelled: its document was deleted",
        )
        task_ids = [j.task_id for j in live if j.task_id]
        session.delete(doc)
        session.flush()
        shared = session.scalar(select(func.count()).where(Document.sha256 == sha))
        # Moved aside, not unlinked, while the lock is held: if the commit fails,
        # the document still has its original.
        aside = None if shared else store.retire(store.original(sha))
        try:
            session.commit()
        except BaseException:
            if aside is not None:
                store.restore(aside, store.original(sha))
            raise
    if aside is not None:
        store.delete(aside)
    if text_key:
        store.delete(store.path(text_key))
    return task_ids


def _in_use(job_ids: list[str]) -> Conflict:
    return Conflict(
        "document_in_use",
        f"{len(job_ids)} job(s) on this document have not finished; cancel "
        "them first, or delete with ?cancel_jobs=true to cancel them with it",
        job_ids=job_ids,
    )


def mark_dispatched(session: Session, doc: Document) -> None:
    doc.dispatched_at = utcnow()
    session.commit()
