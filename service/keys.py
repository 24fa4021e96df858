"""API keys: create, authenticate, list and revoke.

A key is named by its id or its prefix, the characters after `ld_` that `keys list`
shows; the secret itself is never stored, so never shown.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from service import security
from service.models import ApiKey, Tenant, utcnow
from service.tenancy import Principal

# Writing last_used_at on every request would serialize reads on SQLite; a minute is enough.
_TOUCH_EVERY = timedelta(minutes=1)


class KeyNotFound(LookupError):
    pass


@dataclass(frozen=True)
class KeyInfo:
    id: uuid.UUID
    tenant: str
    prefix: str  # as the key starts: "ld_" + the lookup prefix
    name: str | None
    admin: bool
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


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


def authenticate(session: Session, key: str) -> Principal | None:
    """Whom `key` names, or None for a malformed, unknown or revoked key. Read on every
    request (no cache), so a revoked key is refused at once. Leaves the transaction
    open (it may have touched `last_used_at`): the caller ends it."""
    if not security.well_formed(key):
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == security.lookup_prefix(key)))
    if row is None or row.revoked_at is not None or not security.key_matches(key, row.key_hash):
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > _TOUCH_EVERY:
        row.last_used_at = now
    return Principal(row.tenant_id, row.admin)


def list_keys(session: Session, tenant: str | None = None) -> list[KeyInfo]:
    stmt = select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id)
    if tenant is not None:
        stmt = stmt.where(Tenant.name == tenant)
    rows = session.execute(stmt.order_by(Tenant.name, ApiKey.created_at, ApiKey.id)).all()
    return [
        KeyInfo(
            key.id,
            tenant_name,
            security.KEY_PREFIX + key.prefix,
            key.name,
            key.admin,
            key.created_at,
            key.last_used_at,
            key.revoked_at,
        )
        for key, tenant_name in rows
    ]


def _find(session: Session, ref: str) -> ApiKey:
    ref = ref.strip()
    try:
        by_id = uuid.UUID(ref)
    except ValueError:
        by_id = None
    # The prefix as listed ("ld_..."), bare, or the whole key: each names one row.
    prefixes = {ref, ref.removeprefix(security.KEY_PREFIX)}
    if security.well_formed(ref):
        prefixes.add(security.lookup_prefix(ref))
    match: list[ColumnElement[bool]] = [ApiKey.prefix.in_(prefixes)]
    if by_id is not None:
        match.append(ApiKey.id == by_id)
    rows = session.scalars(select(ApiKey).where(or_(*match))).all()
    if len(rows) != 1:
        what = "no key" if not rows else f"{len(rows)} keys"
        raise KeyNotFound(f"{what} named {ref!r}: give an id or prefix from `longdoc keys list`")
    return rows[0]


def revoke_key(session: Session, ref: str) -> tuple[KeyInfo, bool]:
    """Revoke the key `ref` names; True when this call revoked it (False: it already was).

    Authentication reads the row on every request, so the key is refused from the
    next request on."""
    key = _find(session, ref)
    newly = key.revoked_at is None
    if newly:
        key.revoked_at = utcnow()
        session.commit()
    (info,) = [k for k in list_keys(session, key.tenant.name) if k.id == key.id]
    return info, newly
