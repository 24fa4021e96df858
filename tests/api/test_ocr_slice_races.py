"""OCR slices on real Postgres, in this process: who may claim a slice, who sends the
join when two slices end at once, what a slice past its attempts leaves, what the
OCR sweep sends, the tenant's daily cap under concurrent grants, and the plan's caps.

Real pages of a real scan (ocrmypdf-multipage.pdf) are recognised where a test needs
results; the broker is left out (the tasks' dispatchers are given lists), so no
worker of another test module takes these documents' messages.
"""

from __future__ import annotations

import shutil
import signal
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pymupdf
import pytest
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select, update

from ingestion.documents import ocr
from ingestion.documents.ocr import OcrOptions, OcrResult
from ingestion.documents.ocr_slice import slices
from ingestion.documents.pagetext import OCR_FAILED
from ingestion.documents.parse import open_document
from service.blobstore import BlobStore
from service.config import Settings, get_settings
from service.db import get_sessionmaker
from service.models import Document, DocumentStatus, OcrPage, OcrUsage, Tenant, utcnow
from service.models.ocr import DONE, PENDING
from service.ocr_options import render_options
from tests.conftest import corpus_file
from workers.ingest import ocr_phase
from workers.ingest.tasks import run_ingest
from workers.ocr import quota, store
from workers.ocr.recovery import REQUEUE_AFTER, sweep_ocr
from workers.ocr.tasks import run_slice
from workers.sweeper import sweep

pytestmark = pytest.mark.usefixtures("database", "tesseract")
SCAN = "pdf-scanned/ocrmypdf-multipage.pdf"


@pytest.fixture
def tenant() -> Iterator[uuid.UUID]:
    with get_sessionmaker()() as s:
        t = Tenant(name=f"ocr-races-{uuid.uuid4().hex[:8]}")
        s.add(t)
        s.commit()
        yield t.id


def _scan_document(tenant: uuid.UUID, parts: list[tuple[int, ...]]) -> uuid.UUID:
    """The real scan, stored, in its slice phase with `slices` planned in English."""
    path = corpus_file(SCAN)
    blobs = BlobStore(get_settings().blobs)
    blobs.ensure()
    sha = uuid.uuid4().hex * 2  # the tenant's own copy of the bytes
    original = blobs.original(sha)
    original.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, original)
    with get_sessionmaker()() as s:
        doc = Document(
            tenant_id=tenant,
            sha256=sha,
            filename=path.name,
            media_type="application/pdf",
            size_bytes=path.stat().st_size,
            status=DocumentStatus.parsing,
            attempts=1,
            ocr_pages_total=sum(len(p) for p in parts),
        )
        s.add(doc)
        s.flush()
        store.write_plan(s, doc.id, parts, {}, "eng")
        s.commit()
        return doc.id


def _rows(doc_id: uuid.UUID) -> dict[int, OcrPage]:
    with get_sessionmaker()() as s:
        rows = s.scalars(select(OcrPage).where(OcrPage.document_id == doc_id)).all()
        return {r.page: r for r in rows}


def _doc(doc_id: uuid.UUID) -> Document:
    with get_sessionmaker()() as s:
        doc = s.get(Document, doc_id)
        assert doc is not None
        return doc


def _claim(doc_id: uuid.UUID, slice_no: int, worker: str) -> store.SliceClaim | None:
    stale = utcnow() - timedelta(seconds=60)
    with get_sessionmaker()() as s:
        return store.claim_slice(s, doc_id, slice_no, worker, stale)


def _done(text: str) -> OcrResult:
    return OcrResult(text, ("ocr: eng 300dpi",))


def test_when_two_slices_end_together_the_last_to_commit_sends_the_one_join(
    tenant: uuid.UUID,
) -> None:
    doc_id = _scan_document(tenant, [(1,), (3,)])
    a, b = _claim(doc_id, 1, "a"), _claim(doc_id, 2, "b")
    assert a is not None and b is not None
    sessions = get_sessionmaker()
    with sessions() as sa:
        # A has written its page and not committed when B ends: B sees A's page pending.
        sa.execute(
            update(OcrPage)
            .where(OcrPage.document_id == doc_id, OcrPage.page == 1)
            .values(status=DONE, text="one", warnings=["ocr: eng 300dpi"])
        )
        with sessions() as sb:
            assert store.record(sb, b, 3, _done("three"))
            assert not store.take_join(sb, doc_id)
        sa.commit()
        assert store.take_join(sa, doc_id)
        assert not store.take_join(sa, doc_id)  # sent once
    doc = _doc(doc_id)
    assert doc.ocr_join_sent_at is not None and doc.heartbeat_at is None
    with sessions() as s:
        results = store.results(s, doc_id)
    assert results is not None and {n: r.text for n, r in results.items()} == {1: "one", 3: "three"}


def test_concurrent_joins_of_a_finished_scan_send_one(tenant: uuid.UUID) -> None:
    doc_id = _scan_document(tenant, [(1,), (3,)])
    with get_sessionmaker()() as s:
        s.execute(update(OcrPage).where(OcrPage.document_id == doc_id).values(status=DONE))
        s.commit()
    barrier = threading.Barrier(4)
    won: list[bool] = []

    def join() -> None:
        with get_sessionmaker()() as s:
            barrier.wait()
            won.append(store.take_join(s, doc_id))

    threads = [threading.Thread(target=join) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(won) == [False, False, False, True]


def test_a_live_claim_holds_and_a_silent_one_is_taken_over(tenant: uuid.UUID) -> None:
    doc_id = _scan_document(tenant, [(1, 3)])
    first = _claim(doc_id, 1, "first")
    assert first is not None and first.pages == (1, 3) and first.attempt == 1
    assert _claim(doc_id, 1, "duplicate") is None  # a second message while it works
    with get_sessionmaker()() as s:
        old = utcnow() - timedelta(seconds=600)
        s.execute(update(OcrPage).where(OcrPage.document_id == doc_id).values(claimed_at=old))
        s.commit()
    second = _claim(doc_id, 1, "second")
    assert second is not None and second.attempt == 2
    with get_sessionmaker()() as s:
        # The first worker comes back: its page is not written, its count not taken.
        assert not store.record(s, first, 1, _done("stale"))
        assert store.record(s, second, 1, _done("fresh"))
    rows = _rows(doc_id)
    assert rows[1].text == "fresh" and rows[1].status == DONE and rows[3].status == PENDING
    assert _doc(doc_id).ocr_pages_done == 1


def test_a_slice_recognises_real_pages_and_the_last_sends_the_join(tenant: uuid.UUID) -> None:
    doc_id = _scan_document(tenant, [(1,), (3,)])
    settings = get_settings()
    joins: list[str] = []
    before = _ocr_pages_counted("recognised")
    out = run_slice(doc_id, 1, "w1", settings, joins.append)
    assert out["pages"] == 1 and joins == []
    assert run_slice(doc_id, 1, "w1", settings, joins.append)["skipped"]  # a duplicate
    run_slice(doc_id, 2, "w2", settings, joins.append)
    assert joins == [str(doc_id)]
    rows = _rows(doc_id)
    with pymupdf.open(corpus_file(SCAN)) as pdf:
        for number in (1, 3):
            assert rows[number].status == DONE
            assert rows[number].warnings and rows[number].warnings[0].startswith("ocr: eng ")
            alone = ocr.ocr_page(pdf[number - 1], "eng", render_options(settings))
            assert rows[number].text == alone.text and alone.text.strip()
    assert _doc(doc_id).ocr_pages_done == 2
    assert _ocr_pages_counted("recognised") == before + 2


def _ocr_pages_counted(outcome: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("longdoc_ocr_pages_total", {"outcome": outcome}) or 0.0


def test_a_slice_past_its_attempts_fails_its_pages_and_the_scan_goes_on(
    tenant: uuid.UUID,
) -> None:
    doc_id = _scan_document(tenant, [(1, 3)])
    settings = get_settings()
    with get_sessionmaker()() as s:
        tries = settings.ocr_slice_max_attempts
        s.execute(update(OcrPage).where(OcrPage.document_id == doc_id).values(attempts=tries))
        s.commit()
    joins: list[str] = []
    assert run_slice(doc_id, 1, "w", settings, joins.append)["status"] == "failed"
    rows = _rows(doc_id)
    for number in (1, 3):
        (warning,) = rows[number].warnings or []
        assert warning.startswith(f"{OCR_FAILED}: gave up after {tries} attempts"), warning
    assert joins == [str(doc_id)]


def test_the_ocr_sweep_sends_silent_lost_and_unjoined_work_once(tenant: uuid.UUID) -> None:
    silent = _scan_document(tenant, [(1,)])
    lost = _scan_document(tenant, [(3,)])
    unjoined = _scan_document(tenant, [(5,)])
    now = utcnow()
    with get_sessionmaker()() as s:
        s.execute(
            update(OcrPage)
            .where(OcrPage.document_id == silent)
            .values(claimed_by="gone", claimed_at=now - timedelta(seconds=600),
                    sent_at=now - timedelta(seconds=700))
        )  # fmt: skip
        s.execute(
            update(OcrPage)
            .where(OcrPage.document_id == lost)
            .values(sent_at=now - REQUEUE_AFTER - timedelta(minutes=1))
        )
        s.execute(update(OcrPage).where(OcrPage.document_id == unjoined).values(status=DONE))
        s.commit()
    sent_slices: list[tuple[str, int]] = []
    joins: list[str] = []

    def sweep_once() -> int:
        with get_sessionmaker()() as s:
            return sweep_ocr(
                s, get_settings(), lambda d, n: sent_slices.append((d, n)), joins.append,
                tenant_id=tenant,
            )  # fmt: skip

    assert sweep_once() == 3
    assert sorted(sent_slices) == sorted([(str(silent), 1), (str(lost), 1)])
    assert joins == [str(unjoined)]
    assert sweep_once() == 0  # each sent once, until it is silent or lost again


def test_the_document_sweeper_leaves_a_scan_in_its_slices_alone(tenant: uuid.UUID) -> None:
    doc_id = _scan_document(tenant, [(1,)])
    old = utcnow() - timedelta(seconds=600)
    with get_sessionmaker()() as s:
        s.execute(
            update(Document)
            .where(Document.id == doc_id)
            .values(heartbeat_at=old, dispatched_at=old)
        )
        s.commit()
    sent: list[str] = []
    with get_sessionmaker()() as s:
        sweep(s, get_settings(), sent.append, tenant_id=tenant)
    assert sent == []
    with get_sessionmaker()() as s:  # its join sent, and lost: the join is sent again
        s.execute(
            update(Document)
            .where(Document.id == doc_id)
            .values(ocr_join_sent_at=old, heartbeat_at=None, dispatched_at=old)
        )
        s.commit()
        sweep(s, get_settings(), sent.append, tenant_id=tenant)
    assert sent == [str(doc_id)]


def test_a_join_while_a_page_is_out_hands_the_scan_back(tenant: uuid.UUID) -> None:
    doc_id = _scan_document(tenant, [(1,)])
    with get_sessionmaker()() as s:
        s.execute(update(Document).where(Document.id == doc_id).values(ocr_join_sent_at=utcnow()))
        s.commit()
    out = run_ingest(doc_id, "early", get_settings())
    assert out["skipped"] and out["status"] == "parsing"
    doc = _doc(doc_id)
    assert doc.status == DocumentStatus.parsing and doc.ocr_join_sent_at is None
    assert _rows(doc_id)[1].status == PENDING


def test_daily_grants_never_pass_the_cap_when_they_race(tenant: uuid.UUID) -> None:
    now = utcnow()
    sessions = get_sessionmaker()
    with sessions() as s:
        assert quota.grant(s, tenant, 3, 5, now) == 3
    got: list[int] = []
    with sessions() as holder:
        # One grant holds the day's row; another must wait for it, then see its pages.
        holder.get(OcrUsage, (tenant, now.date()), with_for_update=True)

        def other() -> None:
            with sessions() as s:
                got.append(quota.grant(s, tenant, 4, 5, now))

        t = threading.Thread(target=other)
        t.start()
        t.join(timeout=1)
        assert t.is_alive() and got == []  # blocked on the row
        usage = holder.get(OcrUsage, (tenant, now.date()))
        assert usage is not None
        usage.pages += 1
        holder.commit()
        t.join(timeout=30)
    assert got == [1]  # 3 + 1 held + 1 = the cap
    with sessions() as s:
        assert quota.grant(s, tenant, 2, 5, now) == 0
        assert quota.grant(s, tenant, 2, 5, now + timedelta(days=1)) == 2  # a new day
        assert quota.used(s, tenant, now) == 5


def test_the_plan_applies_the_document_and_daily_caps_with_reasons(tenant: uuid.UUID) -> None:
    settings = Settings(ocr_max_pages_per_document=3, ocr_max_pages_per_tenant_day=2)
    with get_sessionmaker()() as s:
        planned = ocr_phase.plan(s, settings, tenant, [1, 2, 3, 5, 6], "eng", OcrOptions())
        assert planned.recognise == (1, 2)
        reasons = {n: r.warnings for n, r in planned.skipped.items()}
        assert reasons[3] == ("ocr_skipped: daily OCR cap of 2 pages for this tenant reached",)
        assert reasons[5] == reasons[6] == ("ocr_skipped: page cap 3 reached",)
        nothing = ocr_phase.plan(s, settings, tenant, [1], "xyz", OcrOptions())
        assert nothing.recognise == () and "xyz" in nothing.skipped[1].warnings[0]
        assert quota.used(s, tenant, utcnow()) == 2  # a language that is not there costs none


def test_a_first_read_of_a_2000_page_scan_finds_its_pages_and_plans_its_cap(
    tmp_path: Any, tenant: uuid.UUID
) -> None:
    """Bounded: the first read recognises nothing; 500 pages go out in 125 slices."""
    big = tmp_path / "scan-2000.pdf"
    with pymupdf.open(corpus_file(SCAN)) as src, pymupdf.open() as out:
        for _ in range(400):
            out.insert_pdf(src, from_page=0, to_page=4)  # pages 1-5, page 4 with text
        out.save(big, garbage=3, deflate=True)
    with open_document(
        big, "application/pdf", max_pages=2000, ocr_options=OcrOptions(), ocr_results={}
    ) as parsed:
        texts = [p.text for p in parsed.pages()]
        wanted = parsed.pages_wanting_ocr()
    assert len(texts) == 2000 and len(wanted) == 1600
    settings = get_settings()
    with get_sessionmaker()() as s:
        planned = ocr_phase.plan(s, settings, tenant, wanted, "eng", OcrOptions())
    cap = settings.ocr_max_pages_per_document
    assert len(planned.recognise) == cap and len(planned.skipped) == 1600 - cap
    assert {r.warnings for r in planned.skipped.values()} == {
        (f"ocr_skipped: page cap {cap} reached",)
    }
    assert len(slices(planned.recognise, settings.ocr_slice_pages)) == cap // 4


def test_a_scan_deleted_while_its_slices_are_out_ends_them_quietly(tenant: uuid.UUID) -> None:
    doc_id = _scan_document(tenant, [(1,)])
    with get_sessionmaker()() as s:
        doc = s.get(Document, doc_id)
        s.delete(doc)
        s.commit()
    assert _rows(doc_id) == {}  # its pages went with it
    joins: list[str] = []
    assert run_slice(doc_id, 1, "w", get_settings(), joins.append)["skipped"]
    assert joins == []


@contextmanager
def _time_limit_in(seconds: float) -> Iterator[None]:
    """Celery's soft time limit as a worker delivers it: a signal whose handler raises
    SoftTimeLimitExceeded wherever the task is (here after `seconds`)."""

    def expire(signum: int, frame: object) -> None:
        raise SoftTimeLimitExceeded()

    before = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


def test_a_time_limit_mid_page_ends_the_read_not_just_the_page() -> None:
    """With the engine a worker reads with (the tesseract command, which `make test`
    installs): MuPDF's own Tesseract runs Python callbacks that turn any exception in
    them into a MuPDF error, so under it a limit landing mid-page fails that page, and
    Celery's hard limit ends the task."""
    import workers.task_options  # noqa: F401 - registers Celery's limit (ingestion.types)

    options = replace(render_options(get_settings()), dpi=300)
    assert options.engine == "tesseract"
    with (
        pytest.raises(SoftTimeLimitExceeded),
        open_document(
            corpus_file(SCAN), "application/pdf", max_pages=10, ocr_options=options
        ) as parsed,
        _time_limit_in(0.5),
    ):
        list(parsed.pages())  # five pages of OCR: seconds, well past the limit


def test_a_slice_at_its_time_limit_fails_the_page_in_hand_and_requeues_the_rest(
    tenant: uuid.UUID,
) -> None:
    doc_id = _scan_document(tenant, [(1, 3)])
    settings = get_settings()
    again: list[tuple[str, int]] = []
    with _time_limit_in(0.5):
        run_slice(doc_id, 1, "w", settings, [].append, lambda d, n: again.append((d, n)))
    rows = _rows(doc_id)
    limit = settings.ocr_slice_soft_time_limit_s
    assert rows[1].warnings == [
        f"{OCR_FAILED}: the slice passed its time limit of {limit} s on this page"
    ]
    assert rows[3].status == PENDING and rows[3].claimed_by is None
    assert again == [(str(doc_id), 1)]
