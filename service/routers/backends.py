"""/v1/backends: the vLLM servers as the workers' refresher last measured them."""

from __future__ import annotations

from fastapi import APIRouter

from service.auth import TenantDep
from service.backend_schemas import BackendList
from service.db import SessionDep
from service.models import utcnow
from service.responses import V1
from workers.backends import describe

router = APIRouter(prefix="/v1/backends", tags=["backends"], responses=V1)


@router.get("", response_model=BackendList)
def list_backends(session: SessionDep, _tenant: TenantDep) -> BackendList:
    """Role, model, context, KV capacity, leased and free bytes, health of every backend.

    Read from the database only; probing is the refresher's job (and `longdoc backends`).
    """
    return BackendList(items=describe(session, utcnow()))
