"""FastAPI dependencies: a database session per request, and the caller's key.

Every route that touches data depends on `TenantDep`. Routes that show operators'
details (backend URLs, errors, load) take `PrincipalDep` and look at `is_admin`.
Who a key is (`service.keys.authenticate`) is the core's business; this only reads
the header.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service.config import Settings, get_settings
from service.db import get_db, release
from service.errors import Unauthenticated
from service.keys import authenticate
from service.tenancy import Principal

# Closed when the handler returns, not after the response is sent: its connection goes
# back to the pool at once instead of waiting on a slow client.
SessionDep = Annotated[Session, Depends(get_db, scope="function")]

# The API's settings, as a dependency: the process's own, or those a test hands the app
# (app.dependency_overrides[get_settings]) without touching the environment.
SettingsDep = Annotated[Settings, Depends(get_settings)]

_bearer = HTTPBearer(auto_error=False, description="An API key from `longdoc keys create`.")


def current_principal(
    session: SessionDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if creds is None or creds.scheme.lower() != "bearer":
        raise Unauthenticated("missing_key", "missing API key: send 'Authorization: Bearer <key>'")
    principal = authenticate(session, creds.credentials)
    # Always end the transaction: the handler waits for a thread next, and a connection
    # held through that wait is one that the threads running now may be waiting for.
    release(session)
    if principal is None:
        raise Unauthenticated("invalid_key", "invalid API key")
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def current_tenant(principal: PrincipalDep) -> uuid.UUID:
    return principal.tenant_id


TenantDep = Annotated[uuid.UUID, Depends(current_tenant)]
