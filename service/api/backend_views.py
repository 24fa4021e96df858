"""Backends as the API (and `longdoc backends --json`) shows them: the rows the
refresher wrote, with the ledger's leases beside them."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from ingestion.capacity.kv_config import KvDtype
from service import ledger
from service.api.backend_schemas import BackendOut
from service.backends.discovery import capacity_source, reachable, usable
from service.models import Backend


def describe(session: Session, now: datetime) -> list[BackendOut]:
    # The ledger's own accounting, so the API shows exactly what admission sees.
    leased = {c.backend_id: c.leased_bytes for c in ledger.capacity(session, now)}
    out = []
    for row in session.scalars(select(Backend).order_by(Backend.role, Backend.url)):
        held = leased.get(row.id, 0)
        cap = row.kv_capacity_bytes
        out.append(
            BackendOut(
                id=row.id,
                role=row.role,
                url=row.url,
                model=row.model,
                max_model_len=row.max_model_len,
                block_size=row.block_size,
                kv_capacity_bytes=cap,
                kv_capacity_blocks=row.num_blocks,
                kv_capacity_tokens=row.kv_capacity_tokens,
                # Only discovery writes it, from its own KvDtype; the model checks it again.
                kv_dtype=cast(KvDtype | None, row.kv_dtype),
                capacity_source=capacity_source(row),
                leased_bytes=held,
                # Negative when an override lowered capacity below what is leased.
                free_bytes=None if cap is None else cap - held,
                reachable=reachable(row),
                healthy=row.healthy,
                usable=usable(row),
                last_error=row.last_error,
                last_seen_at=row.last_seen_at,
                checked_at=row.updated_at,
                overrides=row.overrides or {},
                mismatches=row.mismatches or {},
            )
        )
    return out
