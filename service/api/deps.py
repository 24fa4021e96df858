"""Bearer-key authentication; every route that touches data depends on `TenantDep`.

A key is looked up on every request (no cache), so a revoked key is refused at once.
Routes that show operators' details (backend URLs, errors, load) take `PrincipalDep`
and look at `is_admin`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, TypeVar

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from service import security
from service.config import Settings, get_settings
from service.db import SessionDep, release
from service.models import ApiKey, Document, Job, Tenant, utcnow

# The API's settings, as a dependency: the process's own, or those a test hands the app
# (app.dependency_overrides[get_settings]) without touching the environment.
SettingsDep = Annotated[Settings, Depends(get_settings)]

_bearer = HTTPBearer(auto_error=False, description="An API key from `longdoc keys create`.")
# Writing last_used_at on every request would serialize reads on SQLite; a minute is enough.
_TOUCH_EVERY = timedelta(minutes=1)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


@dataclass(frozen=True)
class Principal:
    """Who a request is: the tenant whose data it reaches, and whether its key is an
    operator's (`longdoc keys create --admin`)."""

    tenant_id: uuid.UUID
    is_admin: bool


def create_key(
    session: Session, tenant_name: str, key_name: str | None = None, *, admin: bool = False
) -> str:
    """Create the tenant if needed and a new key for it; returns the key (shown once)."""
    tenant = session.scalar(select(Tenant).where(Tenant.name == tenant_name))
    if tenant is None:
        tenant = Tenant(name=tenant_name)
        session.add(tenant)
        session.flush()
    key, prefix, digest = security.new_key()
    session.add(
        ApiKey(tenant_id=tenant.id, prefix=prefix, key_hash=digest, name=key_name, admin=admin)
    )
    session.commit()
    return key


def current_principal(
    session: SessionDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if creds is None or creds.scheme.lower() != "bearer":
        raise _unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    key = creds.credentials
    if not security.well_formed(key):
        raise _unauthorized("invalid API key")
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == security.lookup_prefix(key)))
    if row is None or row.revoked_at is not None or not security.key_matches(key, row.key_hash):
        raise _unauthorized("invalid API key")
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > _TOUCH_EVERY:
        row.last_used_at = now
    # Always end the transaction: the handler waits for a thread next, and a connection
    # held through that wait is one that the threads running now may be waiting for.
    principal = Principal(row.tenant_id, row.admin)
    release(session)
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def current_tenant(principal: PrincipalDep) -> uuid.UUID:
    return principal.tenant_id


TenantDep = Annotated[uuid.UUID, Depends(current_tenant)]


_Owned = TypeVar("_Owned", Document, Job)


def owned(session: Session, model: type[_Owned], tenant_id: uuid.UUID, row_id: uuid.UUID) -> _Owned:
    """The tenant's row, or 404 — also for another tenant's, so ids leak nothing."""
    row = session.get(model, row_id)
    if row is None or row.tenant_id != tenant_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{model.__name__.lower()} not found")
    return row
