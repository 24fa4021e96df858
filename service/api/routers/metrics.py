"""`GET /metrics`: the state gauges for Prometheus (`service.metrics.scrape`).

Open without a key only when `metrics_public` says so: the operators put the API on
a network their Prometheus shares, as they would for any exporter. Otherwise an admin
key (Prometheus sends one with `authorization: {credentials: ...}` in its scrape
config); a tenant's key is refused, since the metrics describe every tenant's work
(counted together, never by tenant). Not in the OpenAPI document: it is not a
client's route.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.deps import ApiKeyHeaderDep, BearerDep, SessionDep, SettingsDep, current_principal
from service.api.problems import error_response
from service.metrics.scrape import render

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
def metrics(
    session: SessionDep, settings: SettingsDep, creds: BearerDep, header: ApiKeyHeaderDep
) -> Response:
    if not settings.metrics_public:
        principal = current_principal(session, creds, header)  # 401 without a valid key
        if not principal.is_admin:
            reason = "metrics need an admin key (or LONGDOC_METRICS_PUBLIC=true)"
            return error_response(403, "forbidden", reason)
    return Response(render(session), media_type=CONTENT_TYPE_LATEST)
