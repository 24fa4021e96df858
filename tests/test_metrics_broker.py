"""The broker gauges when the broker does not answer: `longdoc_broker_up` 0 and no
queue sample, and the scrape itself succeeds (a Celery app on a port nothing
listens on: a real refused connection)."""

from __future__ import annotations

import socket

from celery import Celery
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.metrics.broker import BrokerCollector


def test_a_broker_that_does_not_answer_is_down_not_a_failed_scrape() -> None:
    with socket.socket() as s:  # a port just free: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = Celery("dead", broker=f"redis://127.0.0.1:{port}/0")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(dead, timeout_s=0.5))
    text = generate_latest(registry).decode()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    assert [(s.name, s.value) for s in samples] == [("longdoc_broker_up", 0.0)]
