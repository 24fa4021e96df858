"""/v1/webhooks/endpoints: thin handlers over `service.webhooks.endpoints`."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, Field

from service.api.deps import SessionDep, SettingsDep, TenantDep
from service.api.responses import V1, errors, json_body_errors
from service.models import WebhookEndpoint
from service.webhooks import endpoints

router = APIRouter(prefix="/v1/webhooks/endpoints", tags=["webhooks"], responses=V1)


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048, description="http(s) URL that receives every event")
    secret: str | None = Field(
        default=None, max_length=200, description="whsec_ secret to sign with; omitted: made"
    )


class EndpointOut(BaseModel):
    id: uuid.UUID
    url: str
    enabled: bool
    disabled_reason: str | None
    secrets: int = Field(description="How many secrets sign deliveries (2 during a rotation)")
    created_at: datetime


class EndpointCreated(EndpointOut):
    secret: str = Field(description="The signing secret: shown this once")


class EndpointList(BaseModel):
    items: list[EndpointOut]


class Rotated(BaseModel):
    secret: str = Field(description="The new secret, shown this once; the old ones still sign")
    secrets: int


def _out(e: WebhookEndpoint) -> EndpointOut:
    return EndpointOut(
        id=e.id,
        url=e.url,
        enabled=e.enabled,
        disabled_reason=e.disabled_reason,
        secrets=len(e.secrets),
        created_at=e.created_at,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=EndpointCreated,
    responses=json_body_errors(
        422,
        e422="A bad or private URL, or a bad secret",
    ),
)
def create_endpoint(
    body: EndpointCreate, session: SessionDep, tenant: TenantDep, settings: SettingsDep
) -> EndpointCreated:
    """Register a URL for every event of this tenant (jobs and batches ending)."""
    e, secret = endpoints.create(session, settings, tenant, body.url, body.secret)
    return EndpointCreated(**_out(e).model_dump(), secret=secret)


@router.get("", response_model=EndpointList)
def list_endpoints(session: SessionDep, tenant: TenantDep) -> EndpointList:
    return EndpointList(items=[_out(e) for e in endpoints.list_owned(session, tenant)])


@router.delete("/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(404, 422))
def delete_endpoint(endpoint_id: uuid.UUID, session: SessionDep, tenant: TenantDep) -> Response:
    endpoints.delete(session, tenant, endpoint_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{endpoint_id}/rotate", response_model=Rotated, responses=errors(404, 422))
def rotate_secret(endpoint_id: uuid.UUID, session: SessionDep, tenant: TenantDep) -> Rotated:
    """A new secret; deliveries are signed with it and the old one until
    `DELETE .../secrets/old` ends the rotation."""
    secret = endpoints.rotate(session, tenant, endpoint_id)
    count = len(endpoints.get_owned(session, tenant, endpoint_id).secrets)
    return Rotated(secret=secret, secrets=count)


@router.delete(
    "/{endpoint_id}/secrets/old",
    response_model=EndpointOut,
    responses=errors(404, 422),
)
def remove_old_secrets(
    endpoint_id: uuid.UUID, session: SessionDep, tenant: TenantDep
) -> EndpointOut:
    """End a rotation: only the newest secret signs from now on."""
    endpoints.remove_old_secrets(session, tenant, endpoint_id)
    return _out(endpoints.get_owned(session, tenant, endpoint_id))
