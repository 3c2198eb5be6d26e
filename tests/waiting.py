"""Waiting for what a user would see: poll a Job's `status` query until a condition holds, with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from temporalio.client import WorkflowHandle

from jobctl.models import JobStatus
from jobctl.states import JobState


async def wait_for(
    handle: WorkflowHandle, check: Callable[[JobStatus], bool], what: str, timeout: float = 60, every: float = 0.1
) -> JobStatus:
    """Poll the status query until `check` holds; fail after `timeout` seconds showing the last status."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    status: JobStatus | None = None
    while loop.time() < deadline:
        status = await handle.query("status", result_type=JobStatus)
        if check(status):
            return status
        await asyncio.sleep(every)
    shown = status.model_dump_json(indent=1) if status else None
    pytest.fail(f"Job {handle.id} never reached {what} within {timeout}s; last status: {shown}")


async def wait_state(handle: WorkflowHandle, state: JobState, timeout: float = 60, every: float = 0.1) -> JobStatus:
    return await wait_for(handle, lambda s: s.state is state, str(state), timeout, every)
