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
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
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
# How the `anthropic` SDK sends its key: the same keys, in Anthropic's header.
_x_api_key = APIKeyHeader(
    name="x-api-key", auto_error=False, description="The same key, as Anthropic's clients send it."
)


def presented_key(creds: HTTPAuthorizationCredentials | None, header: str | None) -> str:
    """The one key a request presents. Two different keys are refused rather than one
    picked: which tenant the caller meant would be a guess."""
    bearer = creds.credentials if creds is not None and creds.scheme.lower() == "bearer" else None
    if bearer is not None and header is not None and bearer != header:
        raise Unauthenticated(
            "conflicting_keys", "'Authorization: Bearer' and 'x-api-key' name different keys"
        )
    key = bearer or header
    if not key:
        send = "send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
        raise Unauthenticated("missing_key", f"missing API key: {send}")
    return key


# The key headers as sent, for a route that decides itself whether it needs one.
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
ApiKeyHeaderDep = Annotated[str | None, Depends(_x_api_key)]


def current_principal(session: SessionDep, creds: BearerDep, header: ApiKeyHeaderDep) -> Principal:
    principal = authenticate(session, presented_key(creds, header))
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
