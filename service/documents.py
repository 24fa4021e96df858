"""Document logic behind the routers: register an upload, look up, read text, delete."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from ingestion.documents import ocr
from ingestion.documents.formats import SUPPORTED_MEDIA_TYPES, detect_media_type_path
from ingestion.documents.ocr_languages import language_problem
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
class OcrRequest:
    """What an upload asked of OCR (`ocr=`, `ocr_languages=`); None: the settings'."""

    mode: str | None = None
    languages: str | None = None


def ocr_request(mode: str | None, languages: str | None) -> OcrRequest:
    """The upload's OCR choice, its languages checked against the packs installed here
    (the API and the workers share an image); where this machine has no Tesseract,
    their form only, and the parse says what it lacks."""
    if languages is not None:
        field = "query.ocr_languages"
        if mode == "off":
            raise Invalid("bad_ocr_languages", "ocr_languages with ocr=off", field=field)
        problem = language_problem(languages, ocr.installed_languages() or None)
        if problem is not None:
            raise Invalid("bad_ocr_languages", problem, field=field)
    return OcrRequest(mode, languages)


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
    session: Session,
    store: BlobStore,
    tenant_id: uuid.UUID,
    received: ReceivedFile,
    batch_id: uuid.UUID | None = None,
    ocr_choice: OcrRequest = OcrRequest(),
) -> tuple[Document, bool]:
    """Store the upload as a document (of the batch `batch_id` expands, if any); the
    same bytes from the same tenant give the existing document back (second value
    False) and are not parsed again, whatever `ocr_choice` says."""
    [got] = register_uploads(session, store, tenant_id, [received], batch_id, ocr_choice)
    if isinstance(got, DomainError):
        raise got
    return got


Registered = tuple[Document, bool] | DomainError


def register_uploads(
    session: Session,
    store: BlobStore,
    tenant_id: uuid.UUID,
    received: list[ReceivedFile],
    batch_id: uuid.UUID | None = None,
    ocr_choice: OcrRequest = OcrRequest(),
) -> list[Registered]:
    """`register_upload` for many files in one transaction (an archive's entries):
    each one's document and whether it is new, or why it was refused. Every temp
    file is gone afterwards."""
    out: list[Registered | None] = [None] * len(received)
    try:
        kept: dict[int, str] = {}
        for i, r in enumerate(received):
            try:
                kept[i] = detect_media_type_path(r.tmp_path, r.filename)
            except IngestError as err:
                out[i] = _refuse(err)
        for i in kept:
            fsync_file(received[i].tmp_path)  # the slow part of committing, before the locks
        for attempt in range(3):
            try:
                _insert(session, store, tenant_id, received, kept, batch_id, ocr_choice, out)
                break
            except IntegrityError:
                # A writer that did not take the locks inserted the same bytes first;
                # the files are not moved yet, so all is done again (and finds its row).
                session.rollback()
                if attempt == 2:
                    raise
    finally:
        for r in received:
            r.tmp_path.unlink(missing_ok=True)
    assert all(x is not None for x in out)
    return [x for x in out if x is not None]


def _insert(
    session: Session,
    store: BlobStore,
    tenant_id: uuid.UUID,
    received: list[ReceivedFile],
    kept: dict[int, str],
    batch_id: uuid.UUID | None,
    ocr_choice: OcrRequest,
    out: list[Registered | None],
) -> None:
    shas = sorted({received[i].sha256 for i in kept})
    with write_transaction(session):
        for sha in shas:  # in one order, so two of these never wait on each other
            lock_blob(session, sha)
        found = {
            d.sha256: d
            for d in session.scalars(
                select(Document).where(Document.tenant_id == tenant_id, Document.sha256.in_(shas))
            )
        }
        new: dict[str, int] = {}
        for i, media_type in kept.items():
            r = received[i]
            if r.sha256 in found:
                out[i] = (found[r.sha256], False)
                continue
            doc = Document(tenant_id=tenant_id, sha256=r.sha256, filename=r.filename,
                           media_type=media_type, size_bytes=r.size,
                           status=DocumentStatus.queued, batch_id=batch_id,
                           ocr_mode=ocr_choice.mode,
                           ocr_languages=ocr_choice.languages)  # fmt: skip
            session.add(doc)
            found[r.sha256], new[r.sha256], out[i] = doc, i, (doc, True)
        session.flush()  # a conflict surfaces here, before any file has moved
        # Linked under the locks, committed with the rows: a delete of another document
        # with these bytes either ran before (and we put the file back) or waits for our
        # rows, and then sees the bytes are still used.
        for sha, i in new.items():
            store.commit_original(received[i].tmp_path, sha)


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


def mark_dispatched(session: Session, doc_ids: list[uuid.UUID]) -> None:
    """Record that these documents' ingest was sent (the sweeper sends it otherwise)."""
    if doc_ids:
        stmt = update(Document).where(Document.id.in_(doc_ids)).values(dispatched_at=utcnow())
        session.execute(stmt, execution_options={"synchronize_session": False})
    session.commit()
