"""The Celery configuration each broker gets (`service.queue.celery_config`), and the
worker's tokenizer preload hooked where the pool's children inherit it."""

from __future__ import annotations

from celery.signals import worker_init, worker_process_init

from ingestion.capacity.priority import PRIORITY_STEPS
from service.config import Settings
from service.queue import celery_config
from workers import app as worker_app


def test_redis_takes_one_message_ahead_per_slot_and_keeps_every_priority() -> None:
    conf = celery_config(Settings(broker_url="redis://127.0.0.1:6379/9"))
    assert conf["worker_prefetch_multiplier"] == 1  # a later, better task is not passed
    assert conf["broker_transport_options"]["priority_steps"] == list(PRIORITY_STEPS)
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]


def test_the_sqlite_broker_takes_more_ahead_as_it_has_no_priorities(tmp_path: object) -> None:
    conf = celery_config(Settings(broker_url=f"sqla+sqlite:///{tmp_path}/broker.db"))
    assert conf["worker_prefetch_multiplier"] > 1
    assert "priority_steps" not in conf["broker_transport_options"]


def test_tokenizers_are_loaded_before_the_pool_forks_and_again_in_each_child() -> None:
    def hooked(signal: object) -> bool:
        # Connected with weak=False: the receiver is held as itself, not a weak reference.
        return any(r is worker_app._preload_tokenizers for _, r in signal.receivers)  # type: ignore[attr-defined]

    assert hooked(worker_init) and hooked(worker_process_init)
