"""Waiting for what a user would see: poll a Job's `status` query until a condition holds, with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pydantic
import pytest
from temporalio.client import Client, WorkflowHandle

from jobctl.ledger import Ledger
from jobctl.models import Job, JobStatus
from jobctl.states import TERMINAL, JobState

T = TypeVar("T")


async def poll(
    read: Callable[[], Awaitable[T]],
    check: Callable[[T], bool],
    failure: Callable[[T | None], str],
    timeout: float = 60,
    every: float = 0.1,
) -> T:
    """Read until `check` holds; fail after `timeout` seconds with `failure(the last value read)`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    value: T | None = None
    while loop.time() < deadline:
        value = await read()
        if check(value):
            return value
        await asyncio.sleep(every)
    pytest.fail(failure(value))


def _json(model: pydantic.BaseModel | None) -> str | None:
    return model.model_dump_json(indent=1) if model else None


async def wait_for(
    handle: WorkflowHandle, check: Callable[[JobStatus], bool], what: str, timeout: float = 60, every: float = 0.1
) -> JobStatus:
    """Poll the status query until `check` holds; fail after `timeout` seconds showing the last status."""
    return await poll(
        lambda: handle.query("status", result_type=JobStatus),
        check,
        lambda last: f"Job {handle.id} never reached {what} within {timeout}s; last status: {_json(last)}",
        timeout,
        every,
    )


async def wait_state(handle: WorkflowHandle, state: JobState, timeout: float = 60, every: float = 0.1) -> JobStatus:
    return await wait_for(handle, lambda s: s.state is state, str(state), timeout, every)


def asked_for_resources(status: JobStatus) -> bool:
    """The Job got past asking its Deployment Target: it is queued or already submitted."""
    return status.engine_job_id is not None or "waiting" in (status.starting_message or "")


async def final(handle: WorkflowHandle, timeout: float = 60) -> Job:
    """The Job's workflow result, once its status says it ended.

    Waiting on the status query first matters on the time-skipping server: awaiting a result unlocks time
    skipping, which then races ahead of timers and heartbeats that the tests drive in real time.
    """
    await wait_for(handle, lambda s: s.state in TERMINAL, "a terminal state", timeout)
    result = await handle.result()
    return result if isinstance(result, Job) else Job.model_validate(result)


async def wait_ledger(
    client: Client, ledger_id: str, check: Callable[[Ledger], bool], what: str, timeout: float = 60
) -> Ledger:
    """Poll a Deployment Target's `ledger` query until `check` holds.

    A Job's status says TERMINATED before its release signal reaches the ledger, so a check right
    after a Job ends must wait for the ledger to catch up.
    """
    return await poll(
        lambda: client.get_workflow_handle(ledger_id).query("ledger", result_type=Ledger),
        check,
        lambda last: f"ledger {ledger_id} never reached {what} within {timeout}s; last: {_json(last)}",
        timeout,
    )


def all_released(ledger: Ledger) -> bool:
    return ledger.leases == {} and ledger.queue == []
