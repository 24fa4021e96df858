"""OCR of a long scan in slices: one row per page that wanted OCR, and each tenant's
OCR pages per day (the daily cap).

A page row is `pending` until a slice task records its result (`done`); pages the
caps refused are written `done` at once with their reason, so the join reads every
result from here. The rows of one slice share their claim (`claimed_by`,
`claimed_at`, refreshed by the slice's heartbeat), `attempts` and `sent_at`.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.models.columns import Base

PENDING = "pending"
DONE = "done"


class OcrPage(Base):
    __tablename__ = "ocr_pages"
    __table_args__ = (Index("ix_ocr_pages_status_claimed", "status", "claimed_at"),)

    document_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    page: Mapped[int] = mapped_column(Integer, primary_key=True)
    # 1.. for pages to recognise; 0 for pages the caps refused (never sent).
    slice: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(8), default=PENDING)
    languages: Mapped[str] = mapped_column(String(64))
    text: Mapped[str | None] = mapped_column(Text)
    warnings: Mapped[list[Any] | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claimed_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]


class OcrUsage(Base):
    """Pages a tenant was granted OCR for on a day (UTC), against
    `ocr_max_pages_per_tenant_day`."""

    __tablename__ = "ocr_usage"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    pages: Mapped[int] = mapped_column(Integer, default=0)
