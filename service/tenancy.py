"""Who a request is, and the rows it may reach: every lookup of a tenant's data goes
through `owned`, so another tenant's id reads as missing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.orm import Session

from service.errors import NotFound
from service.models import Document, File, Job


@dataclass(frozen=True)
class Principal:
    """The tenant whose data a key reaches, and whether the key is an operator's
    (`longdoc keys create --admin`)."""

    tenant_id: uuid.UUID
    is_admin: bool


_Owned = TypeVar("_Owned", Document, Job, File)


def owned(session: Session, model: type[_Owned], tenant_id: uuid.UUID, row_id: uuid.UUID) -> _Owned:
    """The tenant's row, or NotFound — also for another tenant's, so ids leak nothing."""
    row = session.get(model, row_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFound("not_found", f"{model.__name__.lower()} not found")
    return row
