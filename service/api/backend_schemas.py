"""Bodies of /v1/backends (and `longdoc backends --json`).

An admin key gets `BackendList` (view "admin"): every figure the ledger and refresher
keep, URLs and errors included. A tenant's key gets `TenantBackendList` (view
"tenant"): which models are served and whether they are up, nothing about where the
servers are, what failed on them, or how much of them other tenants hold.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from ingestion.capacity.kv_config import KvDtype


class OverrideOut(BaseModel):
    configured: int
    measured: int | None = Field(description="What the server said; null when it said nothing.")


class MismatchOut(BaseModel):
    expected: int | str = Field(description="What the configuration says.")
    reported: int | str = Field(description="What the server reports instead.")


class BackendOut(BaseModel):
    id: uuid.UUID
    role: str
    url: str
    model: str | None
    max_model_len: int | None = Field(description="As served (or as overridden).")
    block_size: int | None
    kv_capacity_bytes: int | None = Field(description="Null when unknown: never admitted on.")
    kv_capacity_blocks: int | None
    kv_capacity_tokens: int | None
    kv_dtype: KvDtype | None = Field(
        description="What the server stores its KV cache in, which the KV arithmetic counts"
        " by; null when it is one Longdoc does not account for, or not known yet."
    )
    capacity_source: Literal["measured", "configured", "derived", "unknown"]
    leased_bytes: int = Field(description="Sum of unexpired KV leases on this backend.")
    free_bytes: int | None = Field(description="Capacity minus leased; null when unknown.")
    reachable: bool = Field(
        description="Answered at the last refresh, even if with what its configuration "
        "cannot use (then not healthy: see `mismatches`)."
    )
    healthy: bool = Field(
        description="Answered /v1/models at the last refresh, serving what it is configured to."
    )
    usable: bool = Field(description="Healthy with known context and KV capacity.")
    last_error: str | None = Field(description="Why it is down, mismatched or not measured.")
    last_seen_at: datetime | None = Field(description="Last time the server answered.")
    checked_at: datetime = Field(description="Last time a refresher wrote this row.")
    overrides: dict[str, OverrideOut] = Field(
        description="Configured values that replaced a different (or missing) measured one."
    )
    mismatches: dict[str, MismatchOut] = Field(
        description="What the server reports that its configuration cannot use, by field "
        "(model, max_model_len, kv_cache_bytes, kv_dtype): such a server is routed around.",
    )


class BackendList(BaseModel):
    view: Literal["admin"] = "admin"
    items: list[BackendOut]


class TenantBackendOut(BaseModel):
    id: uuid.UUID = Field(description="The `backend.id` that job views show.")
    role: str
    model: str | None
    max_model_len: int | None = Field(description="The longest request it takes, in tokens.")
    healthy: bool = Field(description="Answered at the last refresh, as configured.")
    usable: bool = Field(description="Up and taking jobs.")

    @classmethod
    def of(cls, full: BackendOut) -> TenantBackendOut:
        return cls(
            id=full.id,
            role=full.role,
            model=full.model,
            max_model_len=full.max_model_len,
            healthy=full.healthy,
            usable=full.usable,
        )


class TenantBackendList(BaseModel):
    view: Literal["tenant"] = "tenant"
    items: list[TenantBackendOut]


AnyBackendList = Annotated[BackendList | TenantBackendList, Field(discriminator="view")]
