"""/v1/backends: the vLLM servers as the workers' refresher last measured them."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.backend_schemas import (
    AnyBackendList,
    BackendList,
    TenantBackendList,
    TenantBackendOut,
)
from service.api.backend_views import describe
from service.api.deps import PrincipalDep, SessionDep
from service.api.responses import V1
from service.models import utcnow

router = APIRouter(prefix="/v1/backends", tags=["backends"], responses=V1)


@router.get("", response_model=AnyBackendList)
def list_backends(session: SessionDep, who: PrincipalDep) -> BackendList | TenantBackendList:
    """Admin key: role, URL, model, context, KV capacity, leased and free bytes, health
    and last error of every backend. Tenant key: role, model, context and health only.

    Read from the database only; probing is the refresher's job (and `longdoc backends`).
    """
    full = describe(session, utcnow())
    if who.is_admin:
        return BackendList(items=full)
    return TenantBackendList(items=[TenantBackendOut.of(b) for b in full])
