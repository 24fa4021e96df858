"""The recording functions the workers call, in this (single) process: each moves the
series its labels name, and only that one."""

from __future__ import annotations

import uuid

from prometheus_client import REGISTRY

from service.metrics.definitions import (
    record_admission_wait,
    record_inference,
    record_parse,
    record_tokens,
    record_webhook,
)


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_inference_latency_lands_in_its_role_and_model() -> None:
    model = f"m-{uuid.uuid4().hex[:6]}"
    record_inference("gemma", model, 3.0, 0.4)
    record_inference("gemma", model, 30.0, None)
    labels = {"role": "gemma", "model": model}
    assert value("longdoc_inference_seconds_count", **labels) == 2
    assert value("longdoc_inference_seconds_sum", **labels) == 33.0
    assert value("longdoc_inference_seconds_bucket", le="5.0", **labels) == 1
    assert value("longdoc_inference_first_token_seconds_count", **labels) == 1
    assert value("longdoc_inference_seconds_count", role="scout", model=model) == 0


def test_tokens_parse_admission_and_webhooks_count() -> None:
    model = f"m-{uuid.uuid4().hex[:6]}"
    record_tokens(model, 100, 7)
    record_tokens(model, None, 3)  # a server that gave no usage counts nothing there
    assert value("longdoc_prompt_tokens_total", model=model) == 100
    assert value("longdoc_completion_tokens_total", model=model) == 10

    kind = f"application/x-{uuid.uuid4().hex[:6]}"
    record_parse(kind, "parsed", 1.5, 12)
    record_parse(kind, "corrupt", 0.1, 0)
    assert value("longdoc_parse_pages_total", media_type=kind) == 12
    assert value("longdoc_parse_seconds_count", media_type=kind, outcome="corrupt") == 1

    before = value("longdoc_admission_wait_seconds_count", role="none")
    record_admission_wait(None, -1.0)  # a clock step back is a wait of 0, not negative
    assert value("longdoc_admission_wait_seconds_count", role="none") == before + 1
    assert value("longdoc_admission_wait_seconds_bucket", role="none", le="0.1") >= 1

    sent = value("longdoc_webhook_deliveries_total", outcome="succeeded")
    record_webhook("succeeded")
    assert value("longdoc_webhook_deliveries_total", outcome="succeeded") == sent + 1
