"""JobWorkflow on the real time-skipping Temporal server, with the engine activities scripted.

Covers every transition, every request (signal and update) in every state, and idempotent submit.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import SearchAttributeKey, TypedSearchAttributes
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from jobctl.models import Job, JobStatus, RequestAnswer
from jobctl.states import EnginePhase, JobState
from tests.history import record
from tests.waiting import asked_for_resources, final, wait_for, wait_state
from tests.workflows.scripted_engine import ScriptedEngine, new_job
from workflows.deployment_target import DeploymentTargetWorkflow
from workflows.job import CANCEL_PUSH_WAIT, JobWorkflow, search_attributes_for


@dataclass
class Harness:
    client: Client
    task_queue: str
    engine: ScriptedEngine

    async def start(self, job: Job) -> WorkflowHandle[JobWorkflow, Job]:
        return await self.client.start_workflow(
            JobWorkflow.run,
            job,
            id=job.workflow_id,
            task_queue=self.task_queue,
            search_attributes=TypedSearchAttributes(search_attributes_for(job, JobState.STARTING)),
        )


@contextlib.asynccontextmanager
async def scripted_harness(env: WorkflowEnvironment, engine: ScriptedEngine, prefix: str) -> AsyncIterator[Harness]:
    """A worker for the Job and ledger workflows on a fresh task queue, its activities the scripted engine's."""
    task_queue = f"{prefix}-{uuid.uuid4()}"
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=[JobWorkflow, DeploymentTargetWorkflow],
        activities=engine.activities(),
    ):
        yield Harness(env.client, task_queue, engine)


@pytest.fixture
async def harness(time_skipping_env: WorkflowEnvironment) -> AsyncIterator[Harness]:
    async with scripted_harness(time_skipping_env, ScriptedEngine(), "jobctl-test") as h:
        yield h


async def status_of(handle: WorkflowHandle) -> JobStatus:
    return await handle.query("status", result_type=JobStatus)


def jid(job: Job) -> str:
    return job.metadata.engine_job_id


async def started(h: Harness, job: Job) -> WorkflowHandle:
    handle = await h.start(job)
    await wait_for(handle, lambda s: s.engine_job_id is not None, "submitted")
    h.engine.push(jid(job), "RUNNING")
    await wait_state(handle, JobState.STARTED)
    return handle


async def test_start_to_started_fills_status_and_search_attributes(harness: Harness) -> None:
    job = new_job()
    handle = await harness.start(job)
    await wait_for(handle, lambda s: s.engine_job_id == jid(job), "submitted")
    harness.engine.push(jid(job), "INITIALIZING")
    status = await wait_for(handle, lambda s: "INITIALIZING" in (s.starting_message or ""), "INITIALIZING seen")
    assert status.state is JobState.STARTING
    harness.engine.push(jid(job), "RUNNING", restarts=0)
    status = await wait_state(handle, JobState.STARTED)
    assert status.started is not None
    assert status.started.flink_job_id == job.metadata.id.replace("-", "")
    assert status.started.observed_flink_job_status == "RUNNING"
    assert status.started.observed_flink_job_restarts == 0
    assert status.started.transition_time is not None and status.started.last_update_time is not None
    description = await handle.describe()
    attrs = description.typed_search_attributes
    assert attrs.get(SearchAttributeKey.for_keyword("JobState")) == "STARTED"
    assert attrs.get(SearchAttributeKey.for_keyword("EngineJobId")) == jid(job)
    assert attrs.get(SearchAttributeKey.for_keyword("DeploymentName")) == "orders-deployment"
    whole = await handle.query("job", result_type=Job)
    assert whole.metadata.id == job.metadata.id and whole.status and whole.status.state is JobState.STARTED
    assert len(harness.engine.calls["submit"]) == 1
    await handle.signal("cancel", {"reason": "test over"})
    await wait_state(handle, JobState.TERMINATED)
    await record(handle, "flink_start_cancel")
    # One version marker for the whole run, and no upsert of the search attributes its start already set:
    # each upsert is a write to the server's visibility store.
    history = await handle.fetch_history()
    markers = [e for e in history.events if e.HasField("marker_recorded_event_attributes")]
    upserted = [
        set(e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields)
        for e in history.events
        if e.HasField("upsert_workflow_search_attributes_event_attributes")
    ]
    assert sum(m.marker_recorded_event_attributes.marker_name == "core_patch" for m in markers) == 1
    assert upserted.count({"TemporalChangeVersion"}) == 1
    assert {"JobEngine", "DeploymentTarget"}.isdisjoint(set().union(*upserted))


async def test_bounded_job_finishes(harness: Harness) -> None:
    job = new_job()
    handle = await started(harness, job)
    harness.engine.push(jid(job), "FINISHED")
    result = await final(handle)
    assert result.status and result.status.state is JobState.FINISHED
    assert result.metadata.terminated_at is not None
    await record(handle, "flink_finished")


async def test_job_that_finishes_before_seen_running_goes_straight_to_finished(harness: Harness) -> None:
    job = new_job()
    handle = await harness.start(job)
    await wait_for(handle, lambda s: s.engine_job_id is not None, "submitted")
    harness.engine.push(jid(job), "FINISHED")
    result = await final(handle)
    assert result.status and result.status.state is JobState.FINISHED
    assert result.status.started and result.status.started.observed_flink_job_status == "FINISHED"


async def test_failing_job_counts_restarts_and_ends_failed_with_root_cause(harness: Harness) -> None:
    job = new_job()
    handle = await started(harness, job)
    harness.engine.push(jid(job), "RESTARTING", restarts=1)
    status = await wait_for(handle, lambda s: s.started and s.started.observed_flink_job_restarts == 1, "1 restart")
    assert status.state is JobState.STARTED
    harness.engine.push(jid(job), "FAILED", restarts=2, failure="java.lang.RuntimeException: boom at record 7")
    result = await final(handle)
    assert result.status and result.status.state is JobState.FAILED
    assert result.status.failure and "boom at record 7" in result.status.failure.message
    assert result.status.failure.reason == "ENGINE_JOB_FAILED"
    assert result.status.started and result.status.started.observed_flink_job_restarts == 2
    await record(handle, "flink_failed")


async def test_engine_outage_shows_unknown_and_never_fails_the_job(harness: Harness) -> None:
    job = new_job()
    handle = await started(harness, job)
    harness.engine.push(jid(job), "UNKNOWN", restarts=0)
    status = await wait_for(
        handle, lambda s: s.started and s.started.observed_flink_job_status == "UNKNOWN", "observed UNKNOWN"
    )
    assert status.state is JobState.STARTED
    assert any(e.kind == "ENGINE_UNREACHABLE" for e in status.events)
    harness.engine.push(jid(job), "RUNNING", restarts=0)
    status = await wait_for(handle, lambda s: s.started and s.started.observed_flink_job_status == "RUNNING", "back")
    assert status.state is JobState.STARTED
    await handle.signal("cancel", {})
    await wait_state(handle, JobState.TERMINATED)


async def test_engine_job_stopped_outside_jobctl_ends_terminated_and_says_so(harness: Harness) -> None:
    job = new_job()
    handle = await started(harness, job)
    harness.engine.push(jid(job), "CANCELED")
    result = await final(handle)
    assert result.status and result.status.state is JobState.TERMINATED
    states = [e.message.split(":")[0] for e in result.status.events if e.kind == "STATE_CHANGED"]
    assert states[-2:] == ["STARTED -> TERMINATING", "TERMINATING -> TERMINATED"]
    stopping = [e for e in result.status.events if e.kind == "ENGINE_JOB_STOPPING"]
    assert stopping and "nobody asked jobctl to stop it" in stopping[0].message
    assert harness.engine.calls["stop"] == []


async def test_cancel_signal_in_started(harness: Harness) -> None:
    job = new_job()
    handle = await started(harness, job)
    await handle.signal("cancel", {"reason": "no longer needed"})
    result = await final(handle)
    assert result.status and result.status.state is JobState.TERMINATED
    assert result.status.terminating and result.status.terminating.request == "CANCEL"
    assert result.status.terminating.reason == "no longer needed"
    assert [s.mode for s in harness.engine.calls["stop"]] == ["CANCEL"]
    assert harness.engine.engine_jobs[jid(job)] == "CANCELED"


async def test_watched_cancel_is_ended_by_the_watchers_push_without_a_stop_activity(harness: Harness) -> None:
    job = new_job()
    handle = await started(harness, job)
    await handle.execute_update("cancel", {"reason": "done"}, result_type=RequestAnswer)
    result = await final(handle)
    assert result.status and result.status.state is JobState.TERMINATED
    assert result.status.started and result.status.started.observed_flink_job_status == "CANCELED"
    assert not result.status.failure
    # One request, not waited for: the watcher's push ended the Job. No stop activity polled the engine job.
    assert [(s.mode, s.wait_for_end) for s in harness.engine.calls["stop"]] == [("CANCEL", False)]
    history = await handle.fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert "stop_job" not in scheduled
    # The Job's check timer ran on across the pushes and the cancel (generation 3): the only timer cancelled is
    # the early check, at the first news. Before, every push and request cancelled one and started another.
    cancelled = [e for e in history.events if e.HasField("timer_canceled_event_attributes")]
    assert len(cancelled) == 1
    await record(handle, "flink_cancel_by_push")


async def cancel_requested(harness: Harness) -> tuple[WorkflowHandle, Job]:
    """A STARTED Job cancelled; the engine job cancelling, and no push of its end on its way."""
    harness.engine.cancel_end_pushed = False
    job = new_job()
    handle = await started(harness, job)
    await handle.execute_update("cancel", {}, result_type=RequestAnswer)
    status = await wait_for(
        handle,
        lambda s: s.started is not None and s.started.observed_flink_job_status == "CANCELLING",
        "the cancel requested",
    )
    assert status.state is JobState.TERMINATING
    return handle, job


async def test_watched_cancel_without_a_push_in_time_falls_back_to_the_stop_activity(
    own_time_skipping_env: WorkflowEnvironment,
) -> None:
    """The watcher is down: the stop activity requests the cancel again and watches the engine job itself."""
    engine = ScriptedEngine()
    engine.reclaim_interval_seconds = 3600  # the ledger's looks for leaked leases, while time skips
    async with scripted_harness(own_time_skipping_env, engine, "no-push") as harness:
        handle, _ = await cancel_requested(harness)
        await own_time_skipping_env.sleep(CANCEL_PUSH_WAIT)
        result = await final(handle)
    assert [s.wait_for_end for s in engine.calls["stop"]] == [False, True]
    assert result.status and result.status.state is JobState.TERMINATED
    assert result.status.started and result.status.started.observed_flink_job_status == "CANCELED"


async def test_watched_cancel_whose_push_says_failed_reads_the_end_from_the_stop_activity(harness: Harness) -> None:
    """Pushes carry no engine error text: the stop activity reads how the engine job failed."""
    handle, job = await cancel_requested(harness)
    harness.engine.push(jid(job), "FAILED")
    result = await final(handle)
    assert [s.wait_for_end for s in harness.engine.calls["stop"]] == [False, True]
    assert result.status and result.status.state is JobState.FAILED
    assert result.status.failure and result.status.failure.reason == "ENGINE_JOB_FAILED_WHILE_STOPPING"
    assert "TaskManager lost" in result.status.failure.message


async def test_drain_update_records_the_savepoint(harness: Harness) -> None:
    job = new_job()
    handle = await started(harness, job)
    answer = await handle.execute_update("drain", {"reason": "maintenance"}, result_type=RequestAnswer)
    assert answer.accepted and "drain accepted" in answer.message
    result = await final(handle)
    assert result.status and result.status.state is JobState.TERMINATED
    assert result.status.savepoint and result.status.savepoint.location.startswith("file:/tmp/savepoints/")
    assert result.status.savepoint.taken_for == "DRAIN"
    assert result.status.started and result.status.started.observed_flink_job_status == "FINISHED"
    await record(handle, "flink_drain")


async def test_drain_whose_savepoint_times_out_cancels_instead_and_says_so(harness: Harness) -> None:
    harness.engine.drain_completes = False
    job = new_job(savepointTimeoutSeconds=30)
    handle = await started(harness, job)
    await handle.signal("drain", {"savepointTimeoutSeconds": 5})
    result = await final(handle)
    assert result.status and result.status.state is JobState.TERMINATED
    assert result.status.savepoint is None
    fallback = [e for e in result.status.events if e.kind == "DRAIN_FELL_BACK_TO_CANCEL"]
    assert fallback and "did not complete within 5s" in fallback[0].message
    assert harness.engine.calls["stop"][0].savepoint_timeout_seconds == 5


async def test_update_starts_a_successor_from_the_savepoint(harness: Harness) -> None:
    job = new_job()
    handle = await started(harness, job)
    new_spec = job.spec.model_dump(by_alias=True) | {"parallelism": 2}
    answer = await handle.execute_update("update", {"spec": new_spec}, result_type=RequestAnswer)
    assert answer.accepted
    result = await final(handle)
    assert result.status and result.status.state is JobState.TERMINATED
    assert result.status.savepoint and result.status.savepoint.taken_for == "UPDATE"
    successor_id = result.status.links.successor_job_id
    assert successor_id
    successor = harness.client.get_workflow_handle(f"job-{successor_id}")
    successor_job = await successor.query("job", result_type=Job)
    assert successor_job.spec.parallelism == 2
    assert successor_job.spec.restore_from_savepoint == result.status.savepoint.location
    assert successor_job.status and successor_job.status.links.predecessor_job_id == job.metadata.id
    assert successor_job.metadata.deployment_name == job.metadata.deployment_name
    await wait_for(successor, lambda s: s.engine_job_id is not None, "successor submitted")
    harness.engine.push(successor_job.metadata.engine_job_id, "RUNNING")
    await wait_state(successor, JobState.STARTED)
    await record(handle, "flink_update")
    await successor.signal("cancel", {})
    await wait_state(successor, JobState.TERMINATED)


async def test_update_whose_savepoint_fails_keeps_the_job_running(harness: Harness) -> None:
    harness.engine.suspend_completes = False
    job = new_job()
    handle = await started(harness, job)
    await handle.signal("update", {"spec": job.spec.model_dump(by_alias=True)})
    status = await wait_for(handle, lambda s: any(e.kind == "UPDATE_NOT_CARRIED_OUT" for e in s.events), "refused")
    assert status.state is JobState.STARTED and status.links.successor_job_id is None
    # The Job still takes requests afterwards.
    await handle.execute_update("cancel", {}, result_type=RequestAnswer)
    await wait_state(handle, JobState.TERMINATED)


async def test_cancel_while_waiting_for_resources_leaves_nothing_behind(harness: Harness) -> None:
    harness.engine.has_capacity = False
    job = new_job()
    handle = await harness.start(job)
    # Its status says it waits: its ask completed (cancelling while the ask activity completes strands the Job
    # on the time-skipping server, sdk-java#2391).
    await wait_for(handle, asked_for_resources, "queued")
    answer = await handle.execute_update("cancel", {"reason": "changed my mind"}, result_type=RequestAnswer)
    assert answer.accepted
    result = await final(handle)
    assert result.status and result.status.state is JobState.TERMINATED
    assert harness.engine.calls["submit"] == []
    assert harness.engine.engine_jobs == {}
    await record(handle, "flink_cancel_starting")


async def test_cancel_while_starting_after_submit_cancels_the_engine_job(harness: Harness) -> None:
    job = new_job()
    handle = await harness.start(job)
    await wait_for(handle, lambda s: s.engine_job_id is not None, "submitted")
    await handle.signal("cancel", {})
    result = await final(handle)
    assert result.status and result.status.state is JobState.TERMINATED
    assert harness.engine.engine_jobs[jid(job)] == "CANCELED"


async def test_retried_submit_adopts_the_engine_job_instead_of_submitting_twice(harness: Harness) -> None:
    harness.engine.submit_fails_after_creating = 1
    job = new_job()
    handle = await harness.start(job)
    status = await wait_for(handle, lambda s: s.engine_job_id is not None, "submitted")
    assert len(harness.engine.calls["submit"]) == 2
    assert list(harness.engine.engine_jobs) == [jid(job)]
    assert any(e.kind == "SUBMITTED" and "adopted" in e.message for e in status.events)
    await handle.signal("cancel", {})
    await wait_state(handle, JobState.TERMINATED)


async def test_unknown_target_fails_starting_with_the_reason(harness: Harness) -> None:
    job = new_job(target="nowhere")
    handle = await harness.start(job)
    result = await final(handle)
    assert result.status and result.status.state is JobState.FAILED
    assert result.status.failure and result.status.failure.reason == "DeploymentTargetNotFound"
    assert "known targets: local" in result.status.failure.message
    assert harness.engine.calls["submit"] == []


@pytest.mark.parametrize("kind", ["drain", "update"])
async def test_savepoint_requests_in_starting_are_rejected_with_the_reason(harness: Harness, kind: str) -> None:
    harness.engine.has_capacity = False
    job = new_job()
    handle = await harness.start(job)
    payload = {"spec": job.spec.model_dump(by_alias=True)} if kind == "update" else {}
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update(kind, payload, result_type=RequestAnswer)
    cause = err.value.cause
    assert isinstance(cause, ApplicationError) and "is STARTING" in cause.message and "cancel" in cause.message
    await handle.signal(kind, payload)
    status = await wait_for(handle, lambda s: any(e.kind == "REQUEST_REJECTED" for e in s.events), "rejection")
    assert status.state is JobState.STARTING
    assert f"{kind} signal rejected" in [e for e in status.events if e.kind == "REQUEST_REJECTED"][0].message
    await handle.signal("cancel", {})
    await wait_state(handle, JobState.TERMINATED)


async def test_requests_while_terminating_drain_reject_all_but_cancel_which_overtakes(harness: Harness) -> None:
    job = new_job()
    handle = await started(harness, job)
    # Hold the drain in TERMINATING: the scripted stop returns only once the gate opens.
    gate = asyncio.Event()
    harness.engine.drain_gate = gate
    await handle.execute_update("drain", {}, result_type=RequestAnswer)
    await wait_state(handle, JobState.TERMINATING)
    for kind, payload in (("drain", {}), ("update", {"spec": job.spec.model_dump(by_alias=True)})):
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await handle.execute_update(kind, payload, result_type=RequestAnswer)
        assert "already carrying out a drain request" in str(err.value.cause)
    answer = await handle.execute_update("cancel", {"reason": "drain takes too long"}, result_type=RequestAnswer)
    assert answer.accepted
    result = await final(handle)
    gate.set()
    assert result.status and result.status.state is JobState.TERMINATED
    assert result.status.terminating and result.status.terminating.request == "CANCEL"
    await record(handle, "flink_drain_overtaken_by_cancel")


async def test_malformed_signal_is_recorded_as_rejected_not_dropped(harness: Harness) -> None:
    job = new_job()
    handle = await started(harness, job)
    await handle.signal("drain", {"savepointTimeoutSeconds": "soon", "bogus": 1})
    await handle.signal("update", {"spec": {"engine": "FLINK"}})
    await handle.signal("cancel", "not an object")
    status = await wait_for(handle, lambda s: sum(e.kind == "REQUEST_REJECTED" for e in s.events) == 3, "3 rejections")
    messages = [e.message for e in status.events if e.kind == "REQUEST_REJECTED"]
    assert "malformed drain payload" in messages[0] and "bogus" in messages[0]
    assert "malformed update payload" in messages[1] and "deploymentTargetName" in messages[1]
    assert "malformed cancel payload" in messages[2]
    assert status.state is JobState.STARTED
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update("drain", {"bogus": 1}, result_type=RequestAnswer)
    assert (await status_of(handle)).state is JobState.STARTED
    await handle.signal("cancel", {})
    await wait_state(handle, JobState.TERMINATED)
    await record(handle, "flink_malformed_signals")


async def test_update_cannot_change_the_engine(harness: Harness) -> None:
    job = new_job()
    handle = await started(harness, job)
    dataflow_spec = {
        "engine": "DATAFLOW",
        "deploymentTargetName": "dataflow-local",
        "artifact": {"kind": "FLEX_TEMPLATE", "jobName": "wc", "containerSpecGcsPath": "gs://b/t.json"},
    }
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update("update", {"spec": dataflow_spec}, result_type=RequestAnswer)
    assert "cannot change the engine" in str(err.value.cause)
    await handle.signal("cancel", {})
    await wait_state(handle, JobState.TERMINATED)


async def test_second_cancel_is_answered_not_repeated(harness: Harness) -> None:
    job = new_job()
    handle = await started(harness, job)
    first = await handle.execute_update("cancel", {}, result_type=RequestAnswer)
    assert first.accepted
    result = await final(handle)
    assert result.status and result.status.state is JobState.TERMINATED
    assert len(harness.engine.calls["stop"]) == 1


async def test_workflow_id_must_match_the_job(harness: Harness, time_skipping_env: WorkflowEnvironment) -> None:
    job = new_job()
    handle = await harness.client.start_workflow(
        JobWorkflow.run, job, id=f"job-{uuid.uuid4()}", task_queue=harness.task_queue
    )
    with pytest.raises(Exception) as err:
        await handle.result()
    assert "does not match the Job" in str(err.value.cause)
    assert harness.engine.calls["submit"] == []


async def test_malformed_job_fails_the_workflow_with_the_validation_error(harness: Harness) -> None:
    job_id = str(uuid.uuid4())
    handle = await harness.client.start_workflow(
        "JobWorkflow",
        {"kind": "Job", "metadata": {"id": job_id}, "spec": {"engine": "FLINK", "parallelism": 0}},
        id=f"job-{job_id}",
        task_queue=harness.task_queue,
    )
    with pytest.raises(Exception) as err:
        await handle.result()
    text = str(err.value.cause)
    assert "deploymentTargetName" in text and "parallelism" in text


async def test_request_the_engine_refuses_is_rejected_with_the_engines_reason(harness: Harness) -> None:
    job = new_job()
    handle = await started(harness, job)
    refuses = {"DRAIN": "a batch job cannot be drained; cancel it instead"}
    harness.engine.push(jid(job), "RUNNING", restarts=1, refuses=refuses)
    await wait_for(handle, lambda s: s.started and s.started.observed_flink_job_restarts == 1, "refusal observed")
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update("drain", {}, result_type=RequestAnswer)
    assert "a batch job cannot be drained" in str(err.value.cause)
    await handle.signal("drain", {})
    status = await wait_for(handle, lambda s: any(e.kind == "REQUEST_REJECTED" for e in s.events), "rejection")
    assert status.state is JobState.STARTED and harness.engine.calls["stop"] == []
    await handle.signal("cancel", {})
    await wait_state(handle, JobState.TERMINATED)


async def test_in_place_update_ends_the_old_job_when_the_engine_reports_it_replaced(harness: Harness) -> None:
    harness.engine.updates_in_place = True
    job = new_job()
    handle = await started(harness, job)
    await handle.execute_update("update", {"spec": job.spec.model_dump(by_alias=True)}, result_type=RequestAnswer)
    status = await wait_for(handle, lambda s: s.links.successor_job_id is not None, "successor linked")
    assert status.state is JobState.STARTED  # until the engine says the old job was replaced
    successor = harness.client.get_workflow_handle(f"job-{status.links.successor_job_id}")
    successor_status = await wait_for(successor, lambda s: s.engine_job_id is not None, "successor submitted")
    assert successor_status.links.replaces_engine_job_id == jid(job)
    assert harness.engine.calls["submit"][-1].replaces_engine_job_id == jid(job)
    harness.engine.push(jid(job), "JOB_STATE_UPDATED", phase=EnginePhase.STOPPED)
    result = await final(handle)
    assert result.status and result.status.state is JobState.TERMINATED
    assert result.status.savepoint is None
    stopping = [e.message for e in result.status.events if e.kind == "ENGINE_JOB_STOPPING"]
    assert stopping and status.links.successor_job_id in stopping[0]
    await successor.signal("cancel", {})
    await wait_state(successor, JobState.TERMINATED)
    await record(handle, "in_place_update")


async def test_in_place_update_whose_successor_fails_keeps_the_old_job(harness: Harness) -> None:
    harness.engine.updates_in_place = True
    harness.engine.refuse_replacement = True
    job = new_job()
    handle = await started(harness, job)
    await handle.signal("update", {"spec": job.spec.model_dump(by_alias=True)})
    status = await wait_for(handle, lambda s: any(e.kind == "UPDATE_NOT_CARRIED_OUT" for e in s.events), "refused")
    assert status.state is JobState.STARTED and status.links.successor_job_id is None
    await handle.execute_update("cancel", {}, result_type=RequestAnswer)
    await wait_state(handle, JobState.TERMINATED)


# Every request, as signal and as update, in every non-terminal state: accepted or rejected, and what follows.
# (A terminal Job's workflow has closed: Temporal itself refuses both, and `jobctl` answers with the state;
# see tests/integration/test_flink_jobs.py.)
MATRIX = [
    # state, request, accepted, state the Job ends in
    ("STARTING", "cancel", True, JobState.TERMINATED),
    ("STARTING", "drain", False, None),
    ("STARTING", "update", False, None),
    ("STARTED", "cancel", True, JobState.TERMINATED),
    ("STARTED", "drain", True, JobState.TERMINATED),
    ("STARTED", "update", True, JobState.TERMINATED),
    ("TERMINATING", "cancel", True, JobState.TERMINATED),
    ("TERMINATING", "drain", False, None),
    ("TERMINATING", "update", False, None),
]


@pytest.mark.parametrize("form", ["signal", "update"])
@pytest.mark.parametrize(("state", "kind", "accepted", "ends"), MATRIX)
async def test_request_matrix(
    harness: Harness, form: str, state: str, kind: str, accepted: bool, ends: JobState | None
) -> None:
    job = new_job()
    if state == "STARTING":
        harness.engine.has_capacity = False
        handle = await harness.start(job)
        # Queued, as its status says: its ask has completed. (Cancelling while the ask activity completes
        # strands the Job on the time-skipping server, sdk-java#2391; the real server has no such bug.)
        await wait_for(handle, asked_for_resources, "queued")
    else:
        handle = await started(harness, job)
    if state == "TERMINATING":
        harness.engine.drain_gate = asyncio.Event()  # hold a drain in TERMINATING
        await handle.execute_update("drain", {}, result_type=RequestAnswer)
        await wait_state(handle, JobState.TERMINATING)
    payload: dict[str, object] = {"spec": job.spec.model_dump(by_alias=True)} if kind == "update" else {}

    if form == "update":
        if accepted:
            answer = await handle.execute_update(kind, payload, result_type=RequestAnswer)
            assert answer.accepted and answer.job_id == job.metadata.id
        else:
            with pytest.raises(WorkflowUpdateFailedError) as err:
                await handle.execute_update(kind, payload, result_type=RequestAnswer)
            assert job.metadata.id in str(err.value.cause)
    else:
        await handle.signal(kind, payload)
        if not accepted:
            rejected = await wait_for(
                handle, lambda s: any(e.kind == "REQUEST_REJECTED" for e in s.events), "rejection recorded"
            )
            assert f"{kind} signal rejected" in [e.message for e in rejected.events if e.kind == "REQUEST_REJECTED"][0]

    if accepted:
        result = await final(handle)
        assert result.status and result.status.state is ends
        if kind == "update":
            assert result.status.links.successor_job_id
            successor = harness.client.get_workflow_handle(f"job-{result.status.links.successor_job_id}")
            await successor.signal("cancel", {})
    else:
        assert (await status_of(handle)).state is JobState[state]
        await handle.signal("cancel", {})
        # Wait without time skipping: skipping ahead would time out the scripted activities' heartbeats.
        await wait_state(handle, JobState.TERMINATED)
    if harness.engine.drain_gate:
        harness.engine.drain_gate.set()
