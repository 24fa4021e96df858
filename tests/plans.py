"""Plans for tests that write jobs by hand: what `service.jobs.tree.start` would store."""

from __future__ import annotations

from ingestion.capacity.route_plan import DocTokens, Plan, Request


def single_plan(
    role: str,
    input_tokens: int,
    output_tokens: int,
    *,
    kv_bytes: int = 1 << 20,
    kv_blocks: int = 1,
    model: str = "test-model",
) -> Plan:
    """A one-request plan; its document is `input_tokens` less a prompt of 8."""
    request = Request(role, model, input_tokens, output_tokens, kv_bytes, kv_blocks, ())
    document = (DocTokens(role, max(input_tokens - 8, 0), True),)
    return Plan("single", output_tokens, document, ((role, 8),), request)
