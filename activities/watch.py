"""The Deployment Target watcher: one survey of the whole target per interval, a signal per change.

Instead of every Job polling its own engine job (one request per Job per interval, three history events
per poll), one long-running activity per Deployment Target reads all its engine jobs in one or a few calls
(Flink: GET /jobs/overview; Dataflow: ListJobs of the active jobs) and signals a Job workflow only when what
its engine job reports changed. Engine requests grow with the number of targets, not Jobs; a Job's history
grows with its changes, not with time.

The activity is run by DeploymentTargetWatchWorkflow (workflows/target_watch.py): Temporal keeps exactly one
attempt running per target, on any worker, and restarts it elsewhere when a worker dies (heartbeat timeout).
A restarted watcher knows nothing of what was pushed before, so it re-sends each Job its current observation
once; Jobs ignore what is not news.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from aiolimiter import AsyncLimiter
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from jobctl import engine
from jobctl.engine import Observation
from jobctl.models import workflow_id_for
from jobctl.states import ENDED_PHASES, EnginePhase

# Consecutive failed surveys before the watcher tells its Jobs the engine is UNKNOWN: one lost answer is
# not an outage worth an event in every Job's history.
UNKNOWN_AFTER_FAILURES = 3
# Signals in flight at once, so a watcher restart over thousands of Jobs does not flood Temporal.
PUSH_CONCURRENCY = 50


@dataclass
class Sighting:
    """One engine job of the target as the survey sees it, and the jobctl Job it belongs to."""

    job_id: str
    observation: Observation


class EngineUnreachable(Exception):
    """The survey could not read the target at all (a single job that could not be read is not this)."""


Wanted = Callable[[str], Awaitable[bool]]


class Survey(Protocol):
    async def tick(self, wanted: Wanted) -> list[Sighting]:
        """All engine jobs of the target that belong to Jobs, as of now. `wanted(job_id)` says whether a
        job never seen before may belong to a running Job (so a Job known to have closed costs no engine calls)."""
        ...


# The most requests a survey takes from the budget at once (a look at one Flink job).
LARGEST_ACQUIRE = 3


def limiter(requests_per_second: float) -> AsyncLimiter:
    """A target's budget of engine requests, shared by everything its watcher sends. Its bucket holds at least
    LARGEST_ACQUIRE requests (at the same rate): below that, aiolimiter refused the look at a Flink job with a
    ValueError, and a watcher with a budget of 1 or 2 requests per second failed every tick."""
    rate = max(1.0, requests_per_second)
    burst = max(rate, LARGEST_ACQUIRE)
    return AsyncLimiter(burst, burst / rate)


class Watcher:
    """Pushes changes the survey finds to the Jobs' workflows."""

    def __init__(self, client: Client, survey: Survey, interval_seconds: float) -> None:
        self._client = client
        self._survey = survey
        self._interval = interval_seconds
        self._pushed: dict[str, Observation] = {}  # job id -> the last observation its workflow took
        self._closed: set[str] = set()  # job ids whose workflow a signal found closed
        self._failures = 0
        self._limit = asyncio.Semaphore(PUSH_CONCURRENCY)

    async def run(self) -> None:
        while True:
            began = time.monotonic()
            await self.once()
            activity.heartbeat(f"{len(self._pushed)} jobs watched")
            await asyncio.sleep(max(0.0, self._interval - (time.monotonic() - began)))

    async def once(self) -> None:
        try:
            sightings = await self._survey.tick(self._wanted)
            self._failures = 0
        except EngineUnreachable as err:
            self._failures += 1
            if self._failures < UNKNOWN_AFTER_FAILURES:
                return
            sightings = [
                Sighting(job_id, unknown(obs, str(err)))
                for job_id, obs in self._pushed.items()
                if obs.phase not in ENDED_PHASES
            ]
        news = [s for s in sightings if s.observation.differs_from(self._pushed.get(s.job_id))]
        await asyncio.gather(*(self._push(s) for s in news))
        # Forget Jobs whose engine job is gone from the survey and ended: their workflows closed.
        current = {s.job_id for s in sightings}
        for job_id in [j for j, obs in self._pushed.items() if j not in current and obs.phase in ENDED_PHASES]:
            del self._pushed[job_id]
            self._closed.discard(job_id)

    async def _push(self, sighting: Sighting) -> None:
        async with self._limit:
            activity.heartbeat(f"telling Jobs of changes ({len(self._pushed)} jobs watched)")
            handle = self._client.get_workflow_handle(workflow_id_for(sighting.job_id))
            # True as of this survey (the survey reuses a job's observation while its row is unchanged): a Job
            # orders what it is told by this time.
            # No engine error text: it may quote a Job's secret parameters, and a signal passes no scrubbing
            # (the Job reads the root cause of a failure with its own, scrubbed, observe activity).
            observation = sighting.observation.model_copy(
                update={"observed_at": datetime.now(UTC), "failure_message": None}
            )
            try:
                await handle.signal(engine.OBSERVED, observation)
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:  # the Job's workflow closed: nobody to tell
                    self._closed.add(sighting.job_id)
                    self._pushed[sighting.job_id] = sighting.observation
                    return
                # Anything else: not recorded as pushed, so the next survey sends it again.
                activity.logger.warning("could not tell Job %s about its engine job: %s", sighting.job_id, err)
                return
            self._pushed[sighting.job_id] = sighting.observation

    async def _wanted(self, job_id: str) -> bool:
        # Every Job is taken as running until a signal to it fails with NOT_FOUND (its workflow closed). Asking
        # Temporal about each new job instead cost one call per Job on top of the signal: a thousand at once
        # when a target gains a thousand Jobs, on a server already busy starting them. A closed Job's engine
        # job costs at most one look and one refused signal per watcher start.
        return job_id not in self._closed


async def workflow_running(client: Client, workflow_id: str) -> bool:
    """Whether a workflow is running: False if it closed in any way, or never existed."""
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return description.status == WorkflowExecutionStatus.RUNNING


def unknown(last: Observation, reason: str) -> Observation:
    """What a Job is told while its target cannot be read: UNKNOWN, keeping what it last knew."""
    fields = dict(last.started_fields)
    for key in fields:
        if key.startswith("observed") and key.endswith(("Status", "State")):
            fields[key] = "UNKNOWN"
    return last.model_copy(
        update={
            "phase": EnginePhase.UNKNOWN,
            "engine_status": "UNKNOWN",
            "unreachable_reason": reason,
            "observed_at": datetime.now(UTC),
            "started_fields": fields,
        }
    )
