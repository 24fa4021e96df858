"""A short database outage in the middle of a parse: the worker's background threads
(ingest heartbeat, sweeper, backend refresh) log it and go on, so the heartbeat
resumes, no sweeper takes the parse away, and the document is parsed once.

The worker reaches Postgres through a real TCP relay (tests/netrelay.py) that the
test cuts (every connection dropped, new ones refused) and restores; the API and
the test talk to Postgres directly.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from service.config import get_settings
from service.db import get_sessionmaker
from service.models import Document, utcnow
from tests.api.test_documents import settled, upload
from tests.conftest import start_worker, stop_worker, wait_for
from tests.netrelay import Forwarder

_LINE = "Line {} of a long plain text: enough words to keep the tokenizers busy a while.\n"


def _heartbeat(doc_id: uuid.UUID) -> tuple[str, datetime | None, int]:
    with get_sessionmaker()() as s:
        doc = s.get(Document, doc_id)
        assert doc is not None
        return doc.status.value, doc.heartbeat_at, doc.pages_done


def test_heartbeat_survives_a_database_outage(client: Any, api_key: str, tmp_path: Path) -> None:
    url = make_url(get_settings().database_url)
    relay = Forwarder(url.port or 5432)
    relay.start()
    via_relay = url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    log = tmp_path / "worker.log"
    # Only the Llama 4 tokenizer (tiktoken): it lets other threads run while it counts,
    # where the Gemma one holds the GIL for seconds and would starve the heartbeat
    # through the whole outage, so it would never meet the error this test is about.
    scout = get_settings().tokenizers["scout"]
    env = {
        "LONGDOC_DATABASE_URL": via_relay,
        "LONGDOC_TOKENIZERS": f'{{"scout": "{scout}"}}',
        "LONGDOC_MAX_PAGES": "20000",
        # The outage below (3 failed beats) must be shorter than this, as the README promises:
        # at the suite's 3 s the worker's own sweeper could rightly take the parse as
        # soon as the database came back, before the heartbeat's next beat.
        "LONGDOC_STALE_AFTER_S": "30",
        # Three failed beats sooner: the outage stays short next to the parse.
        "LONGDOC_HEARTBEAT_INTERVAL_S": "0.2",
    }
    worker = start_worker(log, env=env)
    try:
        # ~63 MB of text (under the suite's 64 MiB upload limit): counting it takes many
        # heartbeats, also on a fast machine, and outlasts the outage.
        text = tmp_path / "long.txt"
        with text.open("w") as f:
            f.writelines(_LINE.format(n) for n in range(750_000))
        doc_id = uuid.UUID(upload(client, api_key, text).json()["id"])
        # Into the parse: the heartbeat has written progress, so the task itself holds
        # no connection now (it is between its claim and its finish).
        wait_for(lambda: _heartbeat(doc_id)[2] > 0, timeout=120, interval=0.05)

        relay.stop()  # the database is away for the worker until 3 beats have failed
        wait_for(
            lambda: "ingest heartbeat failed (3 in a row)" in log.read_text(errors="replace"),
            timeout=20,  # the outage must stay under LONGDOC_STALE_AFTER_S
            what="three ingest heartbeats to fail while the database is away",
        )
        status, before, _ = _heartbeat(doc_id)
        assert status == "parsing", "the parse ended before the outage did: make it longer"
        restored_at = utcnow()
        relay.start()

        # The same thread beats again (before the fix it had died on the first error).
        def beats_again() -> bool:
            # A parse that ended inside the outage could not write its end (the task is
            # retried): no beat will come, and that is no test of the heartbeat.
            ended = "retry:" in log.read_text(errors="replace")
            assert not ended, "the parse ended during the outage: make the text longer"
            return (_heartbeat(doc_id)[1] or restored_at) > restored_at

        wait_for(beats_again, timeout=30, interval=0.1)
        doc = settled(client, api_key, str(doc_id), timeout=300)
    finally:
        stop_worker(worker)
        relay.stop()
    assert before is not None and before < restored_at
    assert doc["status"] == "parsed", doc
    assert doc["attempts"] == 1
    with get_sessionmaker()() as s:
        row = s.get(Document, doc_id)
        assert row is not None and row.parse_count == 1
    out = log.read_text()
    # A parse that ended inside the outage could not write its end, and is no test of
    # the heartbeat: the task would have been retried.
    assert "retry:" not in out, "the parse ended during the outage: make the text longer"
    assert "ingest heartbeat failed (1 in a row)" in out
    assert "ingest heartbeat recovered after" in out
