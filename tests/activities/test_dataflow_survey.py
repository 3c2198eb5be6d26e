"""The Dataflow watcher's survey against the Dataflow emulator (real gRPC, official client): what it reports per tick
and what each tick costs in requests.

The emulator runs on a manual clock, so each test decides when a job moves on (QUEUED -> PENDING -> RUNNING ...).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from activities.dataflow import LABEL, DataflowEngine, DataflowSurvey
from activities.watch import Sighting, limiter
from jobctl.dataflow_emulator.model import EmulatorConfig, JobState, ManualClock
from jobctl.dataflow_emulator.server import EmulatorServer
from jobctl.states import EnginePhase
from jobctl.targets import DataflowTarget

PROJECT, REGION = "survey-project", "us-central1"
TARGET = DataflowTarget(name="survey", project=PROJECT, region=REGION)
# Long enough for a job to be RUNNING and a cancel to be over after one step of the clock.
STEP = 60.0


@pytest_asyncio.fixture
async def emulator(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[EmulatorServer, ManualClock]]:
    # An hour ago, not the clock's default of 2023: the survey (on the real clock) looks for jobs that ended in
    # the last 15 minutes, and a test can put jobs on either side of that.
    clock = ManualClock(start=time.time() - 3600)
    config = EmulatorConfig(
        queued_seconds=1, pending_seconds=1, batch_running_seconds=10, cancelling_seconds=1, max_page_size=1000
    )
    server = await EmulatorServer(config, clock=clock).start()
    monkeypatch.setenv("DATAFLOW_EMULATOR_HOST", server.address)
    try:
        yield server, clock
    finally:
        await server.stop()


def launch(server: EmulatorServer, job_id: str, kind: str = "streaming") -> str:
    job = server.model.launch(
        PROJECT, REGION, f"job-{job_id}", parameters={"jobctl-emulator-type": kind}, labels={LABEL: job_id}
    )
    return job.id


async def everyone(job_id: str) -> bool:
    return True


def by_job(sightings: list[Sighting]) -> dict[str, Sighting]:
    return {s.job_id: s for s in sightings}


async def test_each_tick_reads_two_pages_and_reports_a_state_change_of_one_job_among_hundreds(
    emulator: tuple[EmulatorServer, ManualClock],
) -> None:
    server, clock = emulator
    dataflow_ids = {f"j{i}": launch(server, f"j{i}") for i in range(300)}
    clock.advance(STEP)
    survey = DataflowSurvey(DataflowEngine(), TARGET, limiter(1000))

    first = by_job(await survey.tick(everyone))
    assert set(first) == set(dataflow_ids)
    assert {s.observation.engine_status for s in first.values()} == {"JOB_STATE_RUNNING"}
    assert first["j7"].observation.started_fields["dataflowJobId"] == dataflow_ids["j7"]

    server.model.update_job(PROJECT, REGION, dataflow_ids["j7"], JobState.JOB_STATE_CANCELLED)
    before = server.requests.get(PROJECT, 0)
    second = by_job(await survey.tick(everyone))
    # One page of active jobs and one of the newest ended ones, whatever the number of jobs.
    assert server.requests.get(PROJECT, 0) - before == 2
    assert second["j7"].observation.engine_status == "JOB_STATE_CANCELLING"
    assert second["j7"].observation.phase is EnginePhase.STOPPING
    # Unchanged jobs keep the observation of their last change: nothing new to push.
    assert all(second[j].observation is first[j].observation for j in dataflow_ids if j != "j7")


async def test_a_job_that_left_the_active_list_is_reported_once_with_how_it_ended(
    emulator: tuple[EmulatorServer, ManualClock],
) -> None:
    server, clock = emulator
    cancelled, failed, running = (launch(server, j) for j in ("cancelled", "failed", "running"))
    clock.advance(STEP)
    survey = DataflowSurvey(DataflowEngine(), TARGET, limiter(1000))
    await survey.tick(everyone)

    server.model.update_job(PROJECT, REGION, cancelled, JobState.JOB_STATE_CANCELLED)
    server.model.fail_job(PROJECT, REGION, failed, "the pipeline threw")
    clock.advance(STEP)
    ended = by_job(await survey.tick(everyone))
    assert ended["cancelled"].observation.engine_status == "JOB_STATE_CANCELLED"
    assert ended["cancelled"].observation.phase is EnginePhase.STOPPED
    assert ended["failed"].observation.phase is EnginePhase.FAILED
    assert ended["running"].observation.engine_status == "JOB_STATE_RUNNING"

    after = by_job(await survey.tick(everyone))
    assert set(after) == {"running"}, "an ended job is told once, then forgotten"
    assert after["running"].observation.started_fields["dataflowJobId"] == running


async def test_a_new_survey_reports_jobs_that_ended_in_the_last_minutes_but_not_older_ones(
    emulator: tuple[EmulatorServer, ManualClock],
) -> None:
    server, clock = emulator
    launch(server, "long-done", kind="batch")
    clock.advance(STEP)  # done a minute later: 59 minutes ago
    server.model.tick()
    clock.advance(3600 - 2 * STEP)
    launch(server, "just-done", kind="batch")
    clock.advance(STEP)  # done a minute ago
    server.model.tick()
    states = {job.labels[LABEL]: job.state for job in server.model.jobs.values()}
    assert states == {"long-done": JobState.JOB_STATE_DONE, "just-done": JobState.JOB_STATE_DONE}
    # A watcher that starts now (its worker died while the jobs ended) tells the Job whose job just ended.
    survey = DataflowSurvey(DataflowEngine(), TARGET, limiter(1000))
    seen = by_job(await survey.tick(everyone))
    assert set(seen) == {"just-done"}
    assert seen["just-done"].observation.phase is EnginePhase.FINISHED
    assert by_job(await survey.tick(everyone)) == {}
