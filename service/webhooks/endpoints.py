"""A tenant's webhook endpoints: register, list, remove, rotate the secret.

Rotation follows Standard Webhooks: the new secret is added, and until the tenant
removes the old one (`remove_secret`, or registering anew) deliveries are signed with
both, so receivers switch over at their own pace. A secret is shown once, when made.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.config import Settings
from service.db import NO_SYNC, write_transaction
from service.errors import Invalid, NotFound
from service.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, utcnow
from service.webhooks import outbox
from service.webhooks.destinations import check_destination
from service.webhooks.signing import generate_secret, secret_key

# Enough for a rotation in progress and a spare; more would only be forgotten keys.
MAX_SECRETS = 3
MAX_ENDPOINTS = 20


def create(
    session: Session, settings: Settings, tenant_id: uuid.UUID, url: str, secret: str | None
) -> tuple[WebhookEndpoint, str]:
    """The new endpoint and its secret (the one given, or a new one)."""
    check_destination(url, allow_private=settings.webhook_private_allowed, field="url")
    if secret is not None:
        try:
            secret_key(secret)
        except ValueError as err:
            raise Invalid("bad_secret", str(err), field="secret") from None
    secret = secret or generate_secret()
    with write_transaction(session):
        if len(list_owned(session, tenant_id)) >= MAX_ENDPOINTS:
            raise Invalid("too_many_endpoints", f"a tenant has at most {MAX_ENDPOINTS} endpoints")
        endpoint = WebhookEndpoint(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            url=url,
            secrets=[secret],
            enabled=True,
            created_at=utcnow(),
        )
        session.add(endpoint)
    return endpoint, secret


def list_owned(session: Session, tenant_id: uuid.UUID) -> list[WebhookEndpoint]:
    stmt = select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id)
    return list(session.scalars(stmt.order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)))


def get_owned(session: Session, tenant_id: uuid.UUID, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or endpoint.tenant_id != tenant_id:
        raise NotFound("not_found", "webhook endpoint not found")
    return endpoint


def delete(session: Session, tenant_id: uuid.UUID, endpoint_id: uuid.UUID) -> None:
    """Remove it, and disable what still waits to go there (its rows would otherwise
    lose their endpoint and pass for callbacks)."""
    with write_transaction(session):
        endpoint = get_owned(session, tenant_id, endpoint_id)
        waiting = update(WebhookDelivery).where(
            WebhookDelivery.endpoint_id == endpoint.id,
            WebhookDelivery.status == DeliveryStatus.pending,
        )
        session.execute(
            waiting.values(status=DeliveryStatus.disabled, last_error="its endpoint was removed"),
            execution_options=NO_SYNC,
        )
        session.delete(endpoint)


def rotate(session: Session, tenant_id: uuid.UUID, endpoint_id: uuid.UUID) -> str:
    """Add a new secret, kept with the old ones (the oldest beyond MAX_SECRETS goes)."""
    secret = generate_secret()
    with write_transaction(session):
        endpoint = get_owned(session, tenant_id, endpoint_id)
        session.refresh(endpoint, with_for_update=True)
        endpoint.secrets = [*endpoint.secrets, secret][-MAX_SECRETS:]
    return secret


def remove_old_secrets(session: Session, tenant_id: uuid.UUID, endpoint_id: uuid.UUID) -> None:
    """End a rotation: sign with the newest secret alone from now on."""
    with write_transaction(session):
        endpoint = get_owned(session, tenant_id, endpoint_id)
        session.refresh(endpoint, with_for_update=True)
        endpoint.secrets = endpoint.secrets[-1:]


def check_callback(
    session: Session, settings: Settings, tenant_id: uuid.UUID, url: str, field: str
) -> None:
    """A job's or a batch's callback URL that may be delivered to, and a secret to sign
    it with (the tenant's endpoints'); Invalid naming `field` otherwise."""
    check_destination(url, allow_private=settings.webhook_private_allowed, field=field)
    if not outbox.endpoints(session, tenant_id):
        raise Invalid(
            "no_webhook_secret",
            "a callback is signed with the secret of a webhook endpoint: register one first "
            "(POST /v1/webhooks/endpoints)",
            field=field,
        )
