"""The FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI

from service import body_limit
from service.config import get_settings
from service.routers import backends, documents, health, jobs


def create_app() -> FastAPI:
    app = FastAPI(
        title="Longdoc",
        version="0.1.0",
        summary="Long-context document processing: parse, count tokens per model, route to vLLM.",
        license_info={"name": "AGPL-3.0-or-later", "identifier": "AGPL-3.0-or-later"},
    )
    app.add_middleware(body_limit.BodyLimitMiddleware, limit=get_settings().max_json_body_bytes)
    app.include_router(health.router)
    app.include_router(documents.router)
    app.include_router(jobs.router)
    app.include_router(backends.router)
    return app


app = create_app()
