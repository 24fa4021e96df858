"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import text

from service.api import schemas
from service.api.deps import SessionDep
from service.api.problems import error_response
from service.api.responses import ErrorResponse
from service.db import release
from service.queue import app as celery_app

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=schemas.Health)
def healthz() -> schemas.Health:
    """The process answers; says nothing about its dependencies."""
    return schemas.Health(status="ok")


@router.get(
    "/readyz",
    response_model=schemas.Health,
    responses={503: {"model": ErrorResponse, "description": "Not ready: `checks` says why"}},
)
def readyz(session: SessionDep) -> schemas.Health | Response:
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
    failing = [f"{name}: {state}" for name, state in checks.items() if state != "ok"]
    if failing:
        return error_response(503, "not_ready", "; ".join(failing), checks=checks)
    return schemas.Health(status="ok", checks=checks)
