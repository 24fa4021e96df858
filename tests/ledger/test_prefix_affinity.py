"""Chat jobs' prefix-cache affinity on real databases, Postgres and SQLite: chat jobs
sharing a prefix key go to one replica within a decision, a later one follows the
replica that last ran its key (the newest, on its own role), and a document job's
affinity stays its document."""

from __future__ import annotations

import uuid

from sqlalchemy import update

from ingestion.capacity.admission import Policy
from service import ledger
from service.ledger.candidates import candidates, waiting_job
from service.models import Job
from tests.ledger.conftest import World, at

TTL = 30.0
K, OTHER = "a" * 64, "b" * 64


def chat(w: World, prefix: str | None, **values: object) -> uuid.UUID:
    """A waiting chat job of 10 KV bytes (no document), with this prefix key."""
    return w.job(10, 5.0, task="chat", prefix_key=prefix, **values)


def admit(w: World, now: float) -> dict[uuid.UUID, uuid.UUID]:
    with w.sessions() as s:
        return {a.job_id: a.backend_id for a in ledger.try_admit(s, w.role, at(now), TTL).admitted}


def release(w: World, now: float, *jobs: uuid.UUID) -> None:
    with w.sessions() as s:
        for job in jobs:
            assert ledger.release(s, job, at(now))


def test_one_prefix_shares_a_replica_within_a_decision_and_across_them(world: World) -> None:
    w = world
    lo, hi = sorted([w.backend(100), w.backend(100)])
    # Without affinity the second would go to the replica with the most free (hi).
    first, second, other, plain = chat(w, K), chat(w, K), chat(w, OTHER), chat(w, None)
    assert admit(w, 0) == {first: lo, second: lo, other: hi, plain: hi}
    # The next decision: K's jobs still run on lo, so hi has more free; a new job of K
    # follows lo, the replica that last ran K; one without a key takes the most free.
    release(w, 1, other, plain)
    later, keyless = chat(w, K), chat(w, None)
    assert admit(w, 2) == {later: lo, keyless: hi}
    release(w, 3, first, second, later, keyless)
    # K runs on hi now (named for it): hi is where K ran last, though lo ran it more.
    pinned = chat(w, K, preferred_backend_id=hi)
    assert admit(w, 4) == {pinned: hi}
    release(w, 5, pinned)
    # A job of K on another role, admitted later, does not count on this one.
    elsewhere = World(w.sessions)
    mirror = elsewhere.backend(100)
    theirs = chat(elsewhere, K)
    assert admit(elsewhere, 6) == {theirs: mirror}
    follower = chat(w, K)
    assert admit(w, 7) == {follower: hi}  # both free alike: without affinity, lo


def test_a_waiting_job_affinity_is_its_document_else_its_prefix(world: World) -> None:
    w = world
    doc_job = w.job(10, 5.0)
    with w.sessions() as s:  # a key on a document job changes nothing: the document wins
        s.execute(update(Job).where(Job.id == doc_job).values(prefix_key=K))
        s.commit()
    keyed, keyless = chat(w, K), chat(w, None)
    with w.sessions() as s:
        rows = candidates(s, w.role, at(0), Policy(), None, 100, 100)
        got = {row.id: waiting_job(row, {}).affinity for row in rows}
    assert got == {doc_job: str(w.doc), keyed: f"prefix:{K}", keyless: None}
