"""A tenant's OCR pages per day: granted up front, before a scan's pages are
recognised, so that two of its scans parsed at once cannot both pass the cap.

Granted pages count whether or not Tesseract then finds text on them: the cap is on
the work asked for, which is what costs.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db import retry_conflicts, write_transaction
from service.models import OcrUsage


@retry_conflicts
def grant(session: Session, tenant_id: uuid.UUID, wanted: int, cap: int, now: datetime) -> int:
    """Up to `wanted` OCR pages for the tenant today (UTC) under `cap` a day (0: no
    cap); how many were granted, now counted as used."""
    if cap == 0 or wanted <= 0:
        return max(wanted, 0)
    day = now.date()
    for _ in range(2):  # the second pass when another grant inserted the day's row first
        try:
            with write_transaction(session):
                usage = session.get(OcrUsage, (tenant_id, day), with_for_update=True)
                if usage is None:
                    usage = OcrUsage(tenant_id=tenant_id, day=day, pages=0)
                    session.add(usage)
                    session.flush()
                granted = max(0, min(wanted, cap - usage.pages))
                usage.pages += granted
            return granted
        except IntegrityError:
            continue
    raise RuntimeError("could not record the tenant's OCR pages")  # pragma: no cover


def used(session: Session, tenant_id: uuid.UUID, now: datetime) -> int:
    usage = session.get(OcrUsage, (tenant_id, now.date()))
    return usage.pages if usage else 0
