"""Run one admitted request: read its text, call vLLM under the KV lease, check the
output, and store the result, release the lease and fan in, in one transaction.

While the request runs a heartbeat renews the lease; when renewal fails (the job was
cancelled, or the lease expired and was reaped) the request is aborted at once, so
a cancelled job stops holding the server, and a lost lease never writes a result.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from ingestion.tasks.output import OutputError, TaskOutput, parse_output
from ingestion.tasks.prompts import response_format
from ingestion.tasks.repetition import Loop
from ingestion.tasks.specs import CHAT_TASK
from service import ledger
from service.backends.client import VllmClient
from service.backends.completion import Cancelled, Completion, VllmError
from service.backends.sampling import after_loop, sampling_for
from service.config import Settings
from service.db import retry_conflicts, write_transaction
from service.jobs import tree
from service.jobs.request_time import est_duration_s
from service.metrics.definitions import record_inference, record_tokens
from service.models import Backend, Job, JobStatus, Result, utcnow
from workers.jobs import reasons as public_reasons
from workers.jobs.admitted import Admitted, LeaseKeeper, load_admitted

log = logging.getLogger(__name__)


def run(
    sessions: sessionmaker[Session],
    settings: Settings,
    job_id: uuid.UUID,
    send: Callable[[list[uuid.UUID]], None],
) -> None:
    """Run the admitted job `job_id` once. Leaves it succeeded, failed, or waiting again
    (the server was unreachable: it is re-admitted when a replica is up)."""
    with sessions() as session:
        a = load_admitted(session, job_id, settings)
    if a is None:
        return
    task, params, req = a.task, a.params, a.request
    fmt = None if task == CHAT_TASK else response_format(task, params, req.stage, req.pages)
    client = VllmClient(
        a.backend_url,
        connect_timeout_s=settings.vllm_connect_timeout_s,
        read_timeout_s=settings.vllm_read_timeout_s,
        prefill_tokens_per_s=settings.vllm_min_prefill_tokens_per_s,
        max_retries=settings.vllm_max_retries,
        backoff_s=settings.vllm_backoff_s,
    )
    try:
        last = _attempts(sessions, settings, a, client, fmt, send)
    except SoftTimeLimitExceeded:
        # Leaving the `with` closed the request's connection, so the server has aborted
        # it. Give the lease back and say why, rather than let the lease expire and the
        # job run again into the same limit.
        limit = settings.job_soft_time_limit_s
        log.warning("job %s: past the job time limit (%d s); failing it", job_id, limit)
        with sessions() as session:
            reason = f"the request ran past the job time limit of {limit} s"
            _end(session, a, JobStatus.failed, utcnow(), "timeout", reason)
        return
    if last is None:
        return
    with sessions() as session:
        _end(
            session,
            a,
            JobStatus.failed,
            utcnow(),
            "bad_output",
            f"the model's output was unusable {settings.max_output_retries + 1} times: "
            f"{last.reason}",
            raw_output=last.raw,
        )


def _attempts(
    sessions: sessionmaker[Session],
    settings: Settings,
    a: Admitted,
    client: VllmClient,
    fmt: dict[str, Any] | None,
    send: Callable[[list[uuid.UUID]], None],
) -> OutputError | None:
    """Ask until the output is usable; the last unusable output if it never was, None
    when the run ended otherwise (succeeded, lost its lease, the server failed)."""
    job_id, task, params, req = a.job_id, a.task, a.params, a.request
    sampling = sampling_for(settings, a.backend_url)
    if task == CHAT_TASK:  # the client's sampling, over the backend's
        sampling = sampling.asked(params)
    looped = False  # the one retry a loop gets, apart from the output retries
    last: OutputError | None = None
    with client, LeaseKeeper(sessions, a, settings) as keeper:
        calls = tries = 0
        while tries <= settings.max_output_retries:
            try:
                done = client.chat(
                    model=a.model,
                    messages=req.messages,
                    max_tokens=req.output_tokens,
                    prompt_tokens=req.input_tokens,
                    request_id=f"{job_id}-{a.attempt}-{calls}",
                    response_format=fmt,
                    sampling=sampling,
                    loop_guard=settings.loop_guard,
                    cancel=keeper.lost,
                    on_progress=lambda t: setattr(keeper, "tokens", t),
                )
            except Cancelled:
                return None
            except VllmError as err:
                _server_failed(sessions, settings, a, err)
                return None
            calls += 1
            record_inference(a.role, done.model, done.elapsed_s, done.first_token_s)
            if done.loop is not None and not looped:
                looped, sampling = True, after_loop(sampling, settings)
                log.warning("job %s: output looped; asking again with %s", job_id, sampling)
                continue
            try:
                out = _output(a, done)
            except OutputError as err:
                tries += 1
                log.warning("job %s: unusable output (%s), try %d", job_id, err.reason, tries)
                last = err
                # Greedy decoding gives the same unusable output again (SmolLM2 in float32
                # closing braces until the budget ran out, three times): retries penalise
                # repetition, so each asks differently.
                sampling = after_loop(sampling, settings)
                continue
            if done.loop is not None:
                out = replace(out, warnings=(*out.warnings, _loop_warning(done.loop)))
            _succeed(sessions, settings, a, done, out, send)
            return None
    return last


def _output(a: Admitted, done: Completion) -> TaskOutput:
    """The task's output checked, or OutputError. A chat request's is the assistant's
    message as it came, with how it ended (for its `chat.completion`)."""
    if a.task == CHAT_TASK:
        return TaskOutput(done.text, {"finish_reason": done.finish_reason}, ())
    return parse_output(a.task, a.params, a.request.stage, done.text, a.request.pages)


def _loop_warning(loop: Loop) -> str:
    return (
        f"output_repetition: the model repeated a {loop.block_words}-word passage "
        f"{loop.repeats} times, also with a repetition penalty; cut after its first copy"
    )


@retry_conflicts
def _end(
    session: Session,
    a: Admitted,
    status: JobStatus,
    now: datetime,
    code: str,
    reason: str,
    **values: object,
) -> bool:
    with write_transaction(session):
        # A failed request takes its map-reduce job and the other requests down too.
        tree.lock_tree(session, a.job_id, whole=status == JobStatus.failed)
        ok = ledger.release(
            session,
            a.job_id,
            now,
            status,
            lease_id=a.lease_id,
            commit=False,
            error_reason=reason,
            error_code=code,
            **values,
        )
        if ok and status == JobStatus.failed:
            tree.fail_parent(session, a.job_id, now, reason)
    return ok


def _server_failed(
    sessions: sessionmaker[Session], settings: Settings, a: Admitted, err: VllmError
) -> None:
    attempts = a.attempt  # admission counted this run
    with sessions() as session:
        # Tenants read the reason: no URL, no raw error text (logged here instead).
        public = public_reasons.server_failure(session, a.job_id, a.backend_url, err)
        if err.server_down:
            # Seen unreachable just now: admission must not send the job straight back
            # before the refresher notices. The refresher marks it up when it answers.
            # Only then: a 5xx, a 429 or a cut stream is this request's failure, and the
            # replica goes on serving every other job.
            stmt = update(Backend).where(Backend.url == a.backend_url)
            error = f"request failed: {err.message}"
            # Down, not merely mismatched (discovery.reachable): no mismatches kept.
            session.execute(stmt.values(healthy=False, mismatches=None, last_error=error))
            session.commit()
        failed = "backend_unreachable" if err.server_down else "backend_error"
        if err.retryable and attempts < settings.max_job_attempts:
            log.warning("job %s: %s; waiting to run again (attempt %d)", a.job_id, err, attempts)
            _end(
                session,
                a,
                JobStatus.waiting_for_capacity,
                utcnow(),
                failed,
                f"attempt {attempts}: {public}",
            )
            return
        code = failed if err.retryable else "backend_refused"
        why = f"after {attempts} attempts, " if err.retryable else ""
        _end(
            session,
            a,
            JobStatus.failed,
            utcnow(),
            code,
            f"{why}{public}",
        )


@retry_conflicts
def _succeed(
    sessions: sessionmaker[Session],
    settings: Settings,
    a: Admitted,
    done: Completion,
    out: TaskOutput,
    send: Callable[[list[uuid.UUID]], None],
) -> None:
    now = utcnow()
    with sessions() as session, write_transaction(session):
        tree.lock_tree(session, a.job_id)  # its map-reduce job first: fan_in writes there
        progress = {"stage": "done", "completion_tokens": done.completion_tokens}
        if not ledger.release(
            session,
            a.job_id,
            now,
            JobStatus.succeeded,
            lease_id=a.lease_id,
            commit=False,
            prefill_s=done.first_token_s,
            progress=progress,
            error_reason=None,
            error_code=None,
        ):
            log.warning("job %s lost its lease before finishing: result dropped", a.job_id)
            return
        session.add(
            Result(
                job_id=a.job_id,
                text=out.text,
                data=out.data,
                warnings=list(out.warnings),
                model=done.model,
                backend_url=a.backend_url,
                request_id=done.request_id,
                prompt_tokens=done.prompt_tokens,
                completion_tokens=done.completion_tokens,
            )
        )
        session.flush()
        job = session.get(Job, a.job_id)
        new: list[uuid.UUID] = []
        if job is not None and job.parent_id is not None:
            session.refresh(job)
            new, _ = tree.fan_in(session, job, now, lambda r: est_duration_s(r, settings))
    # Committed: counted once per stored result (a map-reduce job's own result sums its
    # requests' tokens, so only the requests are counted).
    record_tokens(done.model, done.prompt_tokens, done.completion_tokens)
    if new:
        send(new)
