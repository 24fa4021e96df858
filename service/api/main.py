"""The FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api import body_limit, load_shedding, problems, request_ids
from service.api.routers import (
    backends,
    batches,
    documents,
    files,
    health,
    jobs,
    messages,
    metrics,
    status,
    webhooks,
)
from service.config import get_settings


@asynccontextmanager
async def _lifespan(_app: FastAPI) -> AsyncIterator[None]:
    load_shedding.size_thread_pool(get_settings())
    yield


def create_app() -> FastAPI:
    settings = get_settings()
    app = FastAPI(
        title="Longdoc",
        version="0.1.0",
        summary="Long-context document processing: parse, count tokens per model, route to vLLM.",
        license_info={"name": "AGPL-3.0-or-later", "identifier": "AGPL-3.0-or-later"},
        lifespan=_lifespan,
    )
    problems.install(app)
    app.add_middleware(body_limit.BodyLimitMiddleware, limit=settings.max_json_body_bytes)
    # Added after the body limit, so outside it: a refused request costs no body read.
    load_shedding.install(app, settings)
    # Outermost of ours: a request shed for load has its id too.
    app.add_middleware(request_ids.RequestIdMiddleware)
    app.include_router(health.router)
    app.include_router(documents.router)
    app.include_router(jobs.router)
    app.include_router(backends.router)
    app.include_router(files.router)
    app.include_router(batches.router)
    app.include_router(messages.router)
    app.include_router(webhooks.router)
    app.include_router(metrics.router)
    app.include_router(status.router)
    return app


app = create_app()
