"""A Message Batch's `callback_url` (Longdoc's own; the official `anthropic` SDK sends it
in `extra_body`), over HTTP to the real API, with a real worker and a real receiver:
refused before anything is stored when it could not be delivered to or signed, as
`POST /v1/batches` refuses it, and otherwise sent the batch's end, signed, which the
`standardwebhooks` package verifies. No vLLM: the request's chat job fails (no
backend), so the batch ends `completed` with one errored request."""

from __future__ import annotations

import uuid
from typing import Any

import anthropic
import pytest

from tests.api.conftest import base, live_server  # noqa: F401 - fixtures used here
from tests.api.test_message_batches import request, rows_of_tenant
from tests.webhooks.conftest import Client, batch_announced, register_endpoint, verified
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.usefixtures("workers")


def _create(claude: anthropic.Anthropic, asked: list[dict[str, Any]], callback: object) -> Any:
    extra = {"callback_url": callback}
    return claude.messages.batches.create(requests=asked, extra_body=extra)  # type: ignore[arg-type]


def _refusal(info: pytest.ExceptionInfo[anthropic.APIStatusError]) -> tuple[str, str]:
    body = info.value.body
    assert isinstance(body, dict)
    return body["error"]["code"], body["error"]["param"]


def test_a_message_batch_announces_its_end_signed_to_its_callback(
    client: Client,
    base: str,  # noqa: F811 - the fixture imported above
    key: str,
    receiver: Receiver,
) -> None:
    path, cb = f"/mb/{uuid.uuid4().hex}", f"/mb-cb/{uuid.uuid4().hex}"
    asked = [request(f"hello-{uuid.uuid4().hex[:8]}")]
    with anthropic.Anthropic(api_key=key, base_url=base, max_retries=0) as claude:
        # Signed with an endpoint's secret: none yet, so it is refused, nothing kept.
        with pytest.raises(anthropic.UnprocessableEntityError) as refused:
            _create(claude, asked, receiver.url(cb))
        assert _refusal(refused) == ("no_webhook_secret", "body.callback_url")
        with pytest.raises(anthropic.UnprocessableEntityError) as refused:
            _create(claude, asked, "ftp://example.com/hook")
        assert _refusal(refused) == ("bad_callback_url", "body.callback_url")
        with pytest.raises(anthropic.BadRequestError) as bad:
            _create(claude, asked, 5)
        assert _refusal(bad) == ("invalid_request", "body.callback_url")
        assert rows_of_tenant(key) == (0, 0)  # neither a batch nor its body

        secret = register_endpoint(client, key, receiver.url(path))["secret"]
        made = _create(claude, asked, receiver.url(cb))
        assert made.callback_url == receiver.url(cb)  # Longdoc's field, kept by the SDK
        batch = batch_announced(client, key, made.id)
        assert claude.messages.batches.retrieve(made.id).processing_status == "ended"
    assert (batch["kind"], batch["status"]) == ("anthropic", "completed"), batch
    assert batch["request_counts"]["failed"] == 1
    assert len(batch["webhooks"]) == 2  # the endpoint's and the callback's
    for where in (path, cb):
        (got,) = receiver.at(where)
        event = verified(secret, got)
        assert event["type"] == "batch.completed"
        assert event["data"] == {"id": made.id, "object": "batch", "status": "completed"}
