"""A STARTED Job watched for 30 simulated days (time-skipping server): its history stays bounded and its
status survives every continue-as-new.

The watcher pushes changes; in between the Job only checks its engine job itself every few hours, so a quiet
day costs a few dozen events, and each run continues as new after a few hundred.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from jobctl.models import JobStatus, RequestAnswer
from jobctl.states import JobState
from tests.history import record
from tests.waiting import final, wait_for
from tests.workflows.scripted_engine import ScriptedEngine, new_job
from tests.workflows.test_job_workflow import Harness, jid, scripted_harness, started
from workflows.job import MAX_RUN_EVENTS

DAYS = 30
EVENTS_PER_DAY_GOAL = 50


async def runs_of(handle: WorkflowHandle, first_run_id: str) -> list[int]:
    """The number of history events of each run of the Job, oldest first."""
    sizes, run_id = [], first_run_id
    while run_id:
        events = [e async for e in handle._client.get_workflow_handle(handle.id, run_id=run_id).fetch_history_events()]
        sizes.append(len(events))
        last = events[-1]
        run_id = None
        if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    return sizes


async def test_a_job_watched_for_thirty_days_keeps_its_history_bounded(
    own_time_skipping_env: WorkflowEnvironment,
) -> None:
    engine = ScriptedEngine()
    # The ledger looks for leaked leases once a day here (every 2 s of 30 days would be 1.3 million looks).
    engine.reclaim_interval_seconds = 86_400
    async with scripted_harness(own_time_skipping_env, engine, "month") as harness:
        await watched_for_a_month(harness, own_time_skipping_env)


async def watched_for_a_month(harness: Harness, time_skipping_env: WorkflowEnvironment) -> tuple[list[int], float]:
    """Watch a STARTED Job for 30 simulated days; the events of each run and the events per day (bench/ too)."""
    job = new_job()
    handle = await started(harness, job)
    first_run = (await handle.describe()).run_id
    before: JobStatus = await handle.query("status", result_type=JobStatus)
    assert before.started is not None
    harness.engine.push(jid(job), "RUNNING", restarts=1)  # one change on day one
    await wait_for(handle, lambda s: s.started.observed_flink_job_restarts == 1, "a restart seen")

    for _ in range(DAYS):
        await time_skipping_env.sleep(timedelta(days=1))
    harness.engine.push(jid(job), "RUNNING", restarts=2)  # and one on day 30
    status = await wait_for(handle, lambda s: s.started.observed_flink_job_restarts == 2, "day 30's restart seen")

    sizes = await runs_of(handle, first_run)
    per_day = sum(sizes) / DAYS
    print(f"30 days watched: {len(sizes)} runs of {sizes} events, {per_day:.1f} events per day")
    assert len(sizes) > 1, "the Job never continued as new"
    assert max(sizes) <= MAX_RUN_EVENTS + 20, "a run grew past its bound"
    assert per_day <= EVENTS_PER_DAY_GOAL
    # The status is the same Job's, carried across every run.
    assert status.state is JobState.STARTED and status.engine_job_id == jid(job)
    assert status.started and status.started.transition_time == before.started.transition_time
    assert [e.kind for e in status.events][:2] == ["CREATED", "RESOURCES_ACQUIRED"]
    assert len(harness.engine.calls["submit"]) == 1, "a continued run must not submit again"
    checks = [c for c in harness.engine.calls["observe"] if c.max_wait_seconds == 0]
    assert len(checks) >= DAYS * 2, "the Job stopped checking its engine job itself"

    answer = await handle.execute_update("drain", {}, result_type=RequestAnswer)
    assert answer.accepted
    result = await final(handle)
    assert result.status and result.status.state is JobState.TERMINATED and result.status.savepoint
    await record(harness.client.get_workflow_handle(job.workflow_id, run_id=first_run), "watched_continue_as_new")
    return sizes, per_day
