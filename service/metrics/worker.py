"""A Celery worker's metrics: multiprocess mode for its pool, and a small HTTP server
in its main process that sums the pool children's files at every scrape.

Prefork children each count in their own process, so prometheus_client's
multiprocess mode keeps one file per child in a directory (PROMETHEUS_MULTIPROC_DIR)
and the main process, which runs no task, serves their sum. The directory is made
fresh at each start (files left by an earlier run would be counted again) and
removed when the main process exits; a child that exits is marked dead, which drops
its live gauges (counters and histograms keep what it counted).

The port is `worker_metrics_port` (LONGDOC_WORKER_METRICS_PORT; 0, the default, serves
nothing). The compose stack and deploy/prometheus.yml use WORKER_METRICS_PORT.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from typing import Any

from prometheus_client import CollectorRegistry, multiprocess, start_http_server, values

log = logging.getLogger(__name__)

# The port the deployment files give workers (each in a container of its own).
WORKER_METRICS_PORT = 9809
ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess(port: int) -> str | None:
    """Put this process (the worker's main process, before it forks its pool) in
    multiprocess mode over a fresh directory; the directory, or None when the port is
    0. Called when the worker's app module loads, before any task module counts."""
    if port == 0:
        return None
    path = tempfile.mkdtemp(prefix="longdoc-metrics-")
    os.environ[ENV] = path
    # prometheus_client chose its value class when first imported, perhaps before the
    # variable was set (a module reading vLLM's metrics imports it): choose again.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    owner = os.getpid()

    def _remove() -> None:
        if os.getpid() == owner:  # not in a forked child that runs atexit handlers
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(_remove)
    return path


def registry() -> CollectorRegistry:
    """A registry over the pool's files: each scrape reads them afresh."""
    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg, path=os.environ[ENV])  # type: ignore[no-untyped-call]
    return reg


def serve(port: int, addr: str = "0.0.0.0") -> None:  # all interfaces: scraped from outside
    """Serve the pool's metrics on `port` from this (the main) process. A port taken
    is logged, not fatal: the worker's work matters more than its metrics."""
    if port == 0 or ENV not in os.environ:
        return
    try:
        start_http_server(port, addr=addr, registry=registry())
    except OSError as err:
        log.error("worker metrics not served on port %d: %s", port, err)
        return
    log.info("worker metrics on http://%s:%d/metrics", addr, port)


def child_exited(**_: Any) -> None:
    """Celery's worker_process_shutdown, in the child that exits."""
    if ENV in os.environ:
        multiprocess.mark_process_dead(os.getpid(), os.environ[ENV])  # type: ignore[no-untyped-call]
