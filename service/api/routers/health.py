"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy import text

from service.api import schemas
from service.db import SessionDep, release
from service.queue import app as celery_app

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=schemas.Health)
def healthz() -> schemas.Health:
    """The process answers; says nothing about its dependencies."""
    return schemas.Health(status="ok")


@router.get("/readyz", response_model=schemas.Health, responses={503: {"model": schemas.Health}})
def readyz(session: SessionDep, response: Response) -> schemas.Health:
    """Ready when the database and the broker both answer."""
    checks: dict[str, str] = {}
    try:
        session.execute(text("SELECT 1"))
        release(session)  # not held through the broker's round trip
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    if not ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return schemas.Health(status="ok" if ok else "unavailable", checks=checks)
