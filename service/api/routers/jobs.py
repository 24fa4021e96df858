"""/v1/jobs: thin handlers over `service.jobs`."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from service.api import job_views as views
from service.api.deps import PrincipalDep, SessionDep, SettingsDep, TenantDep
from service.api.job_schemas import JobList, JobOut, ResultOut
from service.api.responses import V1, errors, json_body_errors
from service.api.schemas import Offset
from service.jobs import lifecycle
from service.jobs.dispatch import send
from service.jobs.schemas import JobCreate
from service.models import Job, JobStatus
from service.queue import revoke

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=V1)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses={
        200: {"description": "The same request (or idempotency key) was made before"},
        **json_body_errors(
            404,
            409,
            422,
            429,
            e404="No such document for this tenant",
            e409="The document failed to parse, or the key was used otherwise",
            e422="Unknown task, bad params, pages that are no range or past the "
            "document's end, or an impossible budget",
            e429="The tenant has its limit of jobs waiting; see Retry-After",
        ),
    },
)
def create_job(
    body: JobCreate,
    response: Response,
    session: SessionDep,
    tenant: TenantDep,
    who: PrincipalDep,
    settings: SettingsDep,
) -> JobOut:
    """Run a task on a document; the job's routing plan comes back with it once the
    document is parsed (`plan` is null before)."""
    job, created, to_send = lifecycle.create(session, settings, tenant, body)
    if created:
        send(session, to_send)
    else:
        response.status_code = status.HTTP_200_OK
    return views.to_out(session, job, admin=who.is_admin)


@router.get("", response_model=JobList, responses=errors(422))
def list_jobs(
    session: SessionDep,
    tenant: TenantDep,
    who: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Offset = 0,
    state: Annotated[JobStatus | None, Query(alias="status")] = None,
) -> JobList:
    rows, total = lifecycle.list_owned(session, tenant, limit, offset, state)
    items = [views.to_out(session, j, admin=who.is_admin) for j in rows]
    return JobList(items=items, total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobOut, responses=errors(404, 422))
def get_job(job_id: uuid.UUID, session: SessionDep, tenant: TenantDep, who: PrincipalDep) -> JobOut:
    job = lifecycle.get_owned(session, tenant, job_id)
    return views.to_out(session, job, admin=who.is_admin)


@router.get(
    "/{job_id}/result",
    response_model=ResultOut,
    responses=errors(404, 409, 422, e409="The job has not succeeded (yet): its status and reason"),
)
def get_result(
    job_id: uuid.UUID, session: SessionDep, tenant: TenantDep, who: PrincipalDep
) -> ResultOut:
    job = lifecycle.get_owned(session, tenant, job_id)
    return views.result_out(session, job, admin=who.is_admin)


@router.post("/{job_id}/cancel", response_model=JobOut, responses=errors(404, 422))
def cancel_job(
    job_id: uuid.UUID, session: SessionDep, tenant: TenantDep, who: PrincipalDep
) -> JobOut:
    """Cancel: the lease is released now; a running request is aborted on the server
    within a heartbeat. Cancelling a finished job changes nothing."""
    job = lifecycle.get_owned(session, tenant, job_id)
    task_ids = [job.task_id] if job.task_id else []
    for moved in lifecycle.cancel(session, job):
        child = session.get(Job, moved)
        if child is not None and child.task_id and child.task_id not in task_ids:
            task_ids.append(child.task_id)
    revoke(task_ids)
    return views.to_out(session, job, admin=who.is_admin)
