"""DataflowEngine against the real Dataflow emulator (gRPC, the official async clients), outside Temporal:
each method runs in a `temporalio.testing.ActivityEnvironment` so heartbeats and activity info work.

Emulator timings are fractions of a second; tests poll with a deadline, never assert after a sleep.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.dataflow import DataflowEngine, state_name
from jobctl.dataflow_emulator import EmulatorConfig, EmulatorServer, emulator_clients, serve
from jobctl.engine import Observation, ObserveInput, StopInput, StopMode, StopResult, Submission, SubmitInput
from jobctl.models import JobMetadata, JobSpec
from jobctl.states import EnginePhase, dataflow_phase
from jobctl.targets import DataflowTarget, DeploymentTargets, TargetsError

PROJECT, REGION = "demo-project", "us-central1"
STREAMING = {"jobctl-emulator-type": "streaming"}
BATCH = {"jobctl-emulator-type": "batch"}
DEADLINE = 15.0


@pytest_asyncio.fixture
async def emulator(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[EmulatorServer]:
    server = await serve(
        "127.0.0.1",
        0,
        EmulatorConfig(
            queued_seconds=0.2,
            pending_seconds=0.2,
            batch_running_seconds=0.5,
            draining_seconds=0.3,
            cancelling_seconds=0.2,
        ),
    )
    monkeypatch.setenv("DATAFLOW_EMULATOR_HOST", server.address)
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def engine(emulator: EmulatorServer) -> AsyncIterator[DataflowEngine]:
    eng = DataflowEngine(timeout=5.0, poll_interval=0.05)
    try:
        yield eng
    finally:
        await eng.close()


@pytest.fixture
def target() -> DataflowTarget:
    return DataflowTarget(name="dataflow-local", project=PROJECT, region=REGION, max_concurrent_jobs=25)


def spec(name: str = "wordcount", params: dict[str, str] | None = None, **extra: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "engine": "DATAFLOW",
            "deploymentTargetName": "dataflow-local",
            "artifact": {
                "kind": "FLEX_TEMPLATE",
                "jobName": name,
                "containerSpecGcsPath": "gs://bucket/templates/wordcount.json",
                "parameters": params if params is not None else dict(STREAMING),
            },
            **extra,
        }
    )


def metadata() -> JobMetadata:
    return JobMetadata(id=str(uuid.uuid4()), name="it")


async def run(fn: Any, *args: Any, heartbeat_details: list[Any] | None = None) -> Any:
    env = ActivityEnvironment()
    if heartbeat_details is not None:
        env.info = dataclasses.replace(env.info, heartbeat_details=heartbeat_details)
    return await env.run(fn, *args)


async def submit(engine: DataflowEngine, target: DataflowTarget, md: JobMetadata, sp: JobSpec, **kw: Any) -> Submission:
    return await run(engine.submit, SubmitInput(metadata=md, spec=sp, **kw), target)


async def observe(
    engine: DataflowEngine, target: DataflowTarget, md: JobMetadata, sp: JobSpec, jid: str, last: Observation | None
) -> Observation:
    request = ObserveInput(metadata=md, spec=sp, engine_job_id=jid, last=last, max_wait_seconds=5)
    return await run(engine.observe, request, target)


async def observe_until(
    engine: DataflowEngine, target: DataflowTarget, md: JobMetadata, sp: JobSpec, jid: str, status: str
) -> tuple[Observation, list[str]]:
    """Long-poll observe until engine_status is `status`; also returns the statuses seen on the way."""
    seen: list[str] = []
    last: Observation | None = None
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        last = await observe(engine, target, md, sp, jid, last)
        if not seen or seen[-1] != last.engine_status:
            seen.append(last.engine_status)
        if last.engine_status == status:
            return last, seen
    pytest.fail(f"Dataflow job {jid} never reached {status}; saw {seen}")


async def stop(
    engine: DataflowEngine,
    target: DataflowTarget,
    md: JobMetadata,
    sp: JobSpec,
    jid: str | None,
    mode: StopMode,
    timeout: int = 60,
    heartbeat_details: list[Any] | None = None,
) -> StopResult:
    request = StopInput(metadata=md, spec=sp, engine_job_id=jid, mode=mode, savepoint_timeout_seconds=timeout)
    return await run(engine.stop, request, target, heartbeat_details=heartbeat_details)


async def test_launch_is_labelled_and_observed_queued_pending_running(
    engine: DataflowEngine, emulator: EmulatorServer, target: DataflowTarget
) -> None:
    md, sp = metadata(), spec()
    grant = await run(engine.acquire, md.id, sp, target)
    assert grant.target == "dataflow-local" and "0 active" in grant.message
    sub = await submit(engine, target, md, sp)
    assert not sub.adopted
    assert sub.engine_ui_url == (
        f"https://console.cloud.google.com/dataflow/jobs/{REGION}/{sub.engine_job_id}?project={PROJECT}"
    )
    job = emulator.model.jobs[sub.engine_job_id]
    assert job.labels == {"jobctl-job-id": md.id} and (job.project_id, job.location) == (PROJECT, REGION)

    first = await observe(engine, target, md, sp, sub.engine_job_id, None)
    assert first.engine_status == "JOB_STATE_QUEUED" and first.phase is EnginePhase.PENDING
    # Right after a flex launch the type is not known yet: nothing is refused on a guess.
    assert first.started_fields["observedDataflowJobType"] == "JOB_TYPE_UNKNOWN" and first.refuses == {}
    running, seen = await observe_until(engine, target, md, sp, sub.engine_job_id, "JOB_STATE_RUNNING")
    assert seen[-2:] in (["JOB_STATE_PENDING", "JOB_STATE_RUNNING"], ["JOB_STATE_QUEUED", "JOB_STATE_RUNNING"])
    assert "JOB_STATE_PENDING" in seen or len(seen) == 2  # a poll may miss the short PENDING
    assert running.phase is EnginePhase.RUNNING and running.refuses == {}
    fields = running.started_fields
    assert fields["dataflowJobId"] == sub.engine_job_id
    assert fields["observedDataflowJobState"] == "JOB_STATE_RUNNING"
    assert fields["observedDataflowJobType"] == "JOB_TYPE_STREAMING"
    assert isinstance(fields["observedDataflowCurrentStateTime"], str)
    assert fields["replaceJobId"] is None and fields["replacedByJobId"] is None

    # Nothing new: the long-poll waits out max_wait_seconds and returns the same observation.
    request = ObserveInput(metadata=md, spec=sp, engine_job_id=sub.engine_job_id, last=running, max_wait_seconds=0.3)
    started = time.monotonic()
    again = await run(engine.observe, request, target)
    assert time.monotonic() - started >= 0.3 and not again.differs_from(running)


async def test_retried_submit_adopts_instead_of_launching_twice(
    engine: DataflowEngine, emulator: EmulatorServer, target: DataflowTarget
) -> None:
    md, sp = metadata(), spec("etl")
    first = await submit(engine, target, md, sp)
    second = await submit(engine, target, md, sp)
    assert second.adopted and second.engine_job_id == first.engine_job_id
    assert [j.id for j in emulator.model.jobs.values() if j.name == "etl"] == [first.engine_job_id]
    # Still adopted once the job has ended (any state): the next observation says how it ended.
    await stop(engine, target, md, sp, first.engine_job_id, StopMode.CANCEL)
    third = await submit(engine, target, md, sp)
    assert third.adopted and third.engine_job_id == first.engine_job_id
    assert len(emulator.model.jobs) == 1


async def test_a_foreign_active_job_with_the_name_is_a_non_retryable_rejection(
    engine: DataflowEngine, emulator: EmulatorServer, target: DataflowTarget
) -> None:
    async with emulator_clients(emulator.address) as clients:
        foreign = await clients.flex_templates.launch_flex_template(
            request={
                "project_id": PROJECT,
                "location": REGION,
                "launch_parameter": {"job_name": "shared", "container_spec_gcs_path": "gs://b/t.json"},
            },
            timeout=5,
        )
    md = metadata()
    with pytest.raises(ApplicationError) as err:
        await submit(engine, target, md, spec("shared"))
    assert err.value.non_retryable and err.value.type == "SubmitRejected"
    assert f"a Dataflow job named shared is already active in {PROJECT}/{REGION}" in str(err.value)
    assert f"was not started by Job {md.id}" in str(err.value)
    assert [j.id for j in emulator.model.jobs.values()] == [foreign.job.id]


async def test_drain_streaming_job_ends_drained(engine: DataflowEngine, target: DataflowTarget) -> None:
    md, sp = metadata(), spec("stream")
    sub = await submit(engine, target, md, sp)
    await observe_until(engine, target, md, sp, sub.engine_job_id, "JOB_STATE_RUNNING")
    result = await stop(engine, target, md, sp, sub.engine_job_id, StopMode.DRAIN)
    assert result.engine_status == "JOB_STATE_DRAINED" and not result.cancelled_instead
    assert result.phase is EnginePhase.STOPPED
    assert result.started_fields["observedDataflowJobState"] == "JOB_STATE_DRAINED"
    # Stopping a job that already ended is nothing to do.
    again = await stop(engine, target, md, sp, sub.engine_job_id, StopMode.CANCEL)
    assert again.engine_status == "JOB_STATE_DRAINED" and "nothing to cancel" in again.message


async def test_drain_that_never_completes_falls_back_to_cancel(
    engine: DataflowEngine, emulator: EmulatorServer, target: DataflowTarget
) -> None:
    md, sp = metadata(), spec("stuck", {**STREAMING, "jobctl-emulator-drain-never-completes": "true"})
    sub = await submit(engine, target, md, sp)
    await observe_until(engine, target, md, sp, sub.engine_job_id, "JOB_STATE_RUNNING")
    result = await stop(engine, target, md, sp, sub.engine_job_id, StopMode.DRAIN, timeout=1)
    assert result.cancelled_instead and result.engine_status == "JOB_STATE_CANCELLED"
    assert result.phase is EnginePhase.STOPPED
    assert "fell back to cancel" in result.message and "within 1s" in result.message
    states = [t.dst.name for t in emulator.model.transitions if t.job_id == sub.engine_job_id]
    assert states[-2:] == ["JOB_STATE_DRAINING", "JOB_STATE_CANCELLED"]


async def test_a_retried_drain_keeps_the_first_attempts_deadline(
    engine: DataflowEngine, emulator: EmulatorServer, target: DataflowTarget
) -> None:
    md, sp = metadata(), spec("late", {**STREAMING, "jobctl-emulator-drain-never-completes": "true"})
    sub = await submit(engine, target, md, sp)
    await observe_until(engine, target, md, sp, sub.engine_job_id, "JOB_STATE_RUNNING")
    # The first attempt started 10 minutes ago: the retry cancels at once instead of draining again.
    details = [{"since": time.time() - 600}]
    result = await stop(engine, target, md, sp, sub.engine_job_id, StopMode.DRAIN, 300, details)
    assert result.cancelled_instead and result.engine_status == "JOB_STATE_CANCELLED"
    assert "JOB_STATE_DRAINING" not in [t.dst.name for t in emulator.model.transitions if t.job_id == sub.engine_job_id]


async def test_cancel_while_queued_ends_cancelled(engine: DataflowEngine, target: DataflowTarget) -> None:
    md, sp = metadata(), spec("flexrs", {**STREAMING, "jobctl-emulator-queued-seconds": "3600"})
    sub = await submit(engine, target, md, sp)
    obs = await observe(engine, target, md, sp, sub.engine_job_id, None)
    assert obs.engine_status == "JOB_STATE_QUEUED"
    result = await stop(engine, target, md, sp, sub.engine_job_id, StopMode.CANCEL)
    assert result.engine_status == "JOB_STATE_CANCELLED" and not result.cancelled_instead
    assert result.phase is EnginePhase.STOPPED


async def test_cancel_before_the_submit_answered_finds_the_job_by_its_label(
    engine: DataflowEngine, target: DataflowTarget
) -> None:
    md, sp = metadata(), spec("lost-answer")
    nothing = await stop(engine, target, md, sp, None, StopMode.CANCEL)
    assert nothing.engine_status == "NOT_FOUND" and "nothing to stop" in nothing.message
    sub = await submit(engine, target, md, sp)
    result = await stop(engine, target, md, sp, None, StopMode.CANCEL)
    assert result.engine_status == "JOB_STATE_CANCELLED"
    assert result.started_fields["dataflowJobId"] == sub.engine_job_id


async def test_batch_job_finishes_and_refuses_drain_and_update(engine: DataflowEngine, target: DataflowTarget) -> None:
    md, sp = metadata(), spec("batch", {**BATCH, "jobctl-emulator-run-seconds": "1"})
    sub = await submit(engine, target, md, sp)
    running, _ = await observe_until(engine, target, md, sp, sub.engine_job_id, "JOB_STATE_RUNNING")
    assert running.refuses["DRAIN"] == (
        f"Dataflow job {sub.engine_job_id} is a batch job: batch jobs cannot be drained; cancel it instead"
    )
    assert "batch jobs cannot be updated" in running.refuses["UPDATE"]
    # Double-checked in the engine: a drain of a batch job is never sent.
    with pytest.raises(ApplicationError) as err:
        await stop(engine, target, md, sp, sub.engine_job_id, StopMode.DRAIN)
    assert err.value.non_retryable and err.value.type == "RequestRejected"
    with pytest.raises(ApplicationError) as err:
        await stop(engine, target, md, sp, sub.engine_job_id, StopMode.SUSPEND)
    assert err.value.non_retryable and err.value.type == "RequestRejected"
    done, _ = await observe_until(engine, target, md, sp, sub.engine_job_id, "JOB_STATE_DONE")
    assert done.phase is EnginePhase.FINISHED and done.failure_message is None


async def test_failing_job_reports_the_services_error_message(engine: DataflowEngine, target: DataflowTarget) -> None:
    message = "Workflow failed. Causes: S01: ZeroDivisionError in step Count"
    md = metadata()
    sp = spec(
        "failing", {**STREAMING, "jobctl-emulator-fail-after-seconds": "0.5", "jobctl-emulator-fail-message": message}
    )
    sub = await submit(engine, target, md, sp)
    failed, _ = await observe_until(engine, target, md, sp, sub.engine_job_id, "JOB_STATE_FAILED")
    assert failed.phase is EnginePhase.FAILED
    assert failed.failure_message and message in failed.failure_message


async def test_api_outage_is_unknown_never_failed_and_recovers(
    engine: DataflowEngine, emulator: EmulatorServer, target: DataflowTarget
) -> None:
    md, sp = metadata(), spec("outage")
    sub = await submit(engine, target, md, sp)
    running, _ = await observe_until(engine, target, md, sp, sub.engine_job_id, "JOB_STATE_RUNNING")
    emulator.set_unavailable()
    unknown = await observe(engine, target, md, sp, sub.engine_job_id, running)
    assert unknown.phase is EnginePhase.UNKNOWN and unknown.engine_status == "UNKNOWN"
    assert unknown.started_fields["observedDataflowJobState"] == "UNKNOWN"
    assert unknown.started_fields["observedDataflowJobType"] == "JOB_TYPE_STREAMING"  # kept from before
    assert unknown.unreachable_reason and "ServiceUnavailable" in unknown.unreachable_reason
    # A submit during the outage is retryable (Temporal retries it).
    with pytest.raises(ApplicationError) as err:
        await submit(engine, target, metadata(), spec("other"))
    assert not err.value.non_retryable and err.value.type == "EngineUnreachable"
    emulator.clear_unavailable()
    back = await observe(engine, target, md, sp, sub.engine_job_id, unknown)
    assert back.engine_status == "JOB_STATE_RUNNING" and back.phase is EnginePhase.RUNNING


async def test_update_launches_the_successor_in_place(
    engine: DataflowEngine, emulator: EmulatorServer, target: DataflowTarget
) -> None:
    md, sp = metadata(), spec("pipeline")
    old = await submit(engine, target, md, sp)
    await observe_until(engine, target, md, sp, old.engine_job_id, "JOB_STATE_RUNNING")
    suspended = await stop(engine, target, md, sp, old.engine_job_id, StopMode.SUSPEND)
    assert suspended.replaced_in_place and suspended.engine_status == "JOB_STATE_RUNNING"
    assert old.engine_job_id in suspended.message

    successor_md = metadata()
    new_spec = spec("pipeline", {**STREAMING, "window": "60s"})
    new = await submit(engine, target, successor_md, new_spec, replaces_engine_job_id=old.engine_job_id)
    assert new.engine_job_id != old.engine_job_id and not new.adopted
    running, _ = await observe_until(engine, target, successor_md, new_spec, new.engine_job_id, "JOB_STATE_RUNNING")
    assert running.started_fields["replaceJobId"] == old.engine_job_id
    replaced = await observe(engine, target, md, sp, old.engine_job_id, None)
    assert replaced.engine_status == "JOB_STATE_UPDATED" and replaced.phase is EnginePhase.STOPPED
    assert replaced.started_fields["replacedByJobId"] == new.engine_job_id
    assert emulator.model.jobs[new.engine_job_id].labels == {"jobctl-job-id": successor_md.id}
    # A retried update-submit adopts the new job instead of replacing it again.
    again = await submit(engine, target, successor_md, new_spec, replaces_engine_job_id=old.engine_job_id)
    assert again.adopted and again.engine_job_id == new.engine_job_id
    # An update must keep the job name (Dataflow replaces by name).
    with pytest.raises(ApplicationError) as err:
        await submit(engine, target, metadata(), spec("renamed"), replaces_engine_job_id=new.engine_job_id)
    assert err.value.non_retryable and err.value.type == "InvalidSpec" and "same job name" in str(err.value)


async def test_acquire_waits_for_a_free_job_slot(engine: DataflowEngine, target: DataflowTarget) -> None:
    small = target.model_copy(update={"max_concurrent_jobs": 1})
    md, sp = metadata(), spec("first")
    await submit(engine, small, md, sp)
    # The Job's own (adopted) job does not count against it.
    await run(engine.acquire, md.id, sp, small)
    with pytest.raises(ApplicationError) as err:
        await run(engine.acquire, str(uuid.uuid4()), spec("second"), small)
    assert err.value.type == "NoCapacity" and not err.value.non_retryable
    assert "1 of 1 concurrent jobs launched by jobctl are active" in str(err.value)


async def test_spec_project_and_region_override_the_targets(
    engine: DataflowEngine, emulator: EmulatorServer, target: DataflowTarget
) -> None:
    md, sp = metadata(), spec("elsewhere", project="other-project", region="europe-west1")
    sub = await submit(engine, target, md, sp)
    job = emulator.model.jobs[sub.engine_job_id]
    assert (job.project_id, job.location) == ("other-project", "europe-west1")
    assert sub.engine_ui_url and "/europe-west1/" in sub.engine_ui_url and "project=other-project" in sub.engine_ui_url


def test_a_dataflow_target_without_project_or_region_is_a_clear_error() -> None:
    for missing in ("project", "region"):
        raw = {"name": "df", "kind": "dataflow", "project": "p", "region": "r"}
        del raw[missing]
        with pytest.raises(TargetsError, match=rf"targets\.0\.dataflow\.{missing}: Field required"):
            DeploymentTargets.parse({"targets": [raw]}, "targets.yaml")


async def test_invalid_job_name_is_an_invalid_spec(engine: DataflowEngine, target: DataflowTarget) -> None:
    with pytest.raises(ApplicationError) as err:
        await submit(engine, target, metadata(), spec("Word_Count"))
    assert err.value.non_retryable and err.value.type == "InvalidSpec" and "Word_Count" in str(err.value)


def test_an_unknown_future_job_state_is_shown_and_reads_as_unknown() -> None:
    assert state_name(2) == "JOB_STATE_RUNNING"
    assert state_name(99) == "JOB_STATE_UNKNOWN_99"
    assert dataflow_phase(state_name(99)) is EnginePhase.UNKNOWN


async def test_a_job_that_fails_while_draining_reports_failed(engine: DataflowEngine, target: DataflowTarget) -> None:
    params = {**STREAMING, "jobctl-emulator-drain-never-completes": "true", "jobctl-emulator-fail-after-seconds": "1.5"}
    md, sp = metadata(), spec("drainfail", params)
    sub = await submit(engine, target, md, sp)
    await observe_until(engine, target, md, sp, sub.engine_job_id, "JOB_STATE_RUNNING")
    result = await stop(engine, target, md, sp, sub.engine_job_id, StopMode.DRAIN)
    assert result.engine_status == "JOB_STATE_FAILED" and result.phase is EnginePhase.FAILED
    assert not result.cancelled_instead and "while draining" in result.message
