"""The broker's queues at scrape time: messages waiting in each of Longdoc's Celery
queues (ingest, jobs, ocr), as the transport counts them (kombu's Redis transport sums a
queue's priority lists), and whether the broker answered at all.

A broker that does not answer is a 0 in `longdoc_broker_up` and no queue sample,
never a failed scrape: the database's gauges still matter most when the broker is down.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from service.queue import QUEUES, app

log = logging.getLogger(__name__)
GAUGES = ("longdoc_broker_queue_messages", "longdoc_broker_up")


class BrokerCollector(Collector):
    """`celery`: the app whose broker is read (default: Longdoc's queue app)."""

    def __init__(self, celery: Any = None, timeout_s: float = 2.0) -> None:
        self.celery, self.timeout_s = celery or app, timeout_s

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "longdoc_broker_queue_messages",
            "Celery messages waiting in the broker per queue (tasks not yet taken).",
            labels=["queue"],
        )
        up = GaugeMetricFamily("longdoc_broker_up", "1 when the broker answered this scrape.")
        try:
            counts = self._counts()
        except Exception as err:  # any transport's failure: reported as the gauge
            log.warning("metrics: broker queues not read: %s", err)
            up.add_metric([], 0.0)
        else:
            up.add_metric([], 1.0)
            for queue, n in counts.items():
                depth.add_metric([queue], n)
        yield from (depth, up)

    def _counts(self) -> dict[str, int]:
        return queue_counts(self.celery, self.timeout_s)


def queue_counts(celery: Any = None, timeout_s: float = 2.0) -> dict[str, int]:
    """Messages waiting per queue; raises when the broker does not answer in time."""
    with (celery or app).connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout_s)
        channel = conn.default_channel
        # Not passive: an empty Redis queue has no key, and a passive declare of it
        # fails; declaring a queue the workers declare anyway changes nothing.
        return {q: int(channel.queue_declare(q).message_count) for q in QUEUES}
