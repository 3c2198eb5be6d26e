"""Deployment Target leases on the real time-skipping server: FIFO waiting, visible queue, release on every
exit, reclaim of a holder closed without releasing, and a retried ask that grants nothing twice."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.ledger import tell_ledger
from jobctl import engine as engine_names
from jobctl.engine import LedgerMessage
from jobctl.ledger import Ask, Ledger
from jobctl.models import Job, JobStatus, RequestAnswer
from jobctl.states import EnginePhase, JobState
from tests.history import record
from tests.waiting import all_released, final, wait_ledger
from tests.workflows.scripted_engine import ScriptedEngine, new_job
from tests.workflows.test_job_workflow import Harness, harness, started, wait_for, wait_state  # noqa: F401
from workflows.deployment_target import DeploymentTargetWorkflow
from workflows.job import JobWorkflow

__all__ = ["harness"]


async def ledger_of(h: Harness, handle: WorkflowHandle | None = None) -> tuple[str, Ledger]:
    """The test's ledger (one per test task queue, see ScriptedEngine.ask) and what it holds."""
    ledger_id = f"deployment-target-local-{h.task_queue}"
    return ledger_id, await h.client.get_workflow_handle(ledger_id).query("ledger", result_type=Ledger)


async def queued(h: Harness, job: Job) -> WorkflowHandle:
    """Start a Job and wait until it is in the ledger's queue, so queue order is start order."""
    handle = await h.start(job)
    await wait_for(
        handle,
        lambda s: "jobs ahead" in (s.starting_message or "") or "job ahead" in (s.starting_message or ""),
        "queued",
    )
    return handle


async def test_jobs_beyond_capacity_wait_in_fifo_order_and_start_as_others_end(harness: Harness) -> None:
    first = new_job(parallelism=2)
    second = new_job(parallelism=2)
    a = await started(harness, first)
    b = await started(harness, second)
    waiting = [new_job(parallelism=2), new_job(parallelism=1)]
    c = await queued(harness, waiting[0])
    d = await queued(harness, waiting[1])
    status_c = await wait_for(c, lambda s: "0 jobs ahead" in (s.starting_message or ""), "c waiting first")
    assert "waiting for 2 slots on Deployment Target local" in status_c.starting_message
    # The 1-slot Job waits behind the 2-slot one although 0 slots are free for either: FIFO, no overtaking.
    await wait_for(d, lambda s: "1 job ahead" in (s.starting_message or ""), "d waiting second")
    _, ledger = await ledger_of(harness, a)
    assert sorted(ledger.leases) == sorted([first.metadata.id, second.metadata.id])
    assert [ask.job_id for ask in ledger.queue] == [waiting[0].metadata.id, waiting[1].metadata.id]

    await a.signal("cancel", {})
    await wait_state(a, JobState.TERMINATED)
    status_c = await wait_for(c, lambda s: s.engine_job_id is not None, "c submitted after a released")
    assert status_c.lease and status_c.lease.resources == {"slots": 2}
    d_status = await wait_for(d, lambda s: "0 jobs ahead" in (s.starting_message or ""), "d now first")
    assert d_status.state is JobState.STARTING and d_status.engine_job_id is None

    await b.signal("cancel", {})
    await wait_for(d, lambda s: s.engine_job_id is not None, "d submitted after b released")
    for handle in (c, d):
        await handle.signal("cancel", {})
        await wait_state(handle, JobState.TERMINATED)
    ledger_id, _ = await ledger_of(harness, a)
    await wait_ledger(harness.client, ledger_id, all_released, "every lease released")
    await record(harness.client.get_workflow_handle(ledger_id), "ledger_fifo")


async def test_cancel_while_queued_withdraws_only_its_own_ask(harness: Harness) -> None:
    holders = [await started(harness, new_job(parallelism=2)) for _ in range(2)]
    waiting = [new_job(), new_job(), new_job()]
    handles = [await queued(harness, job) for job in waiting]
    await wait_for(handles[2], lambda s: "2 jobs ahead" in (s.starting_message or ""), "third in line")
    await handles[1].signal("cancel", {"reason": "not needed"})
    await wait_state(handles[1], JobState.TERMINATED)
    ledger_id, _ = await ledger_of(harness, holders[0])
    expected = [waiting[0].metadata.id, waiting[2].metadata.id]
    ledger = await wait_ledger(
        harness.client, ledger_id, lambda ledger: [a.job_id for a in ledger.queue] == expected, "the ask withdrawn"
    )
    assert len(ledger.leases) == 2
    await wait_for(handles[2], lambda s: "1 job ahead" in (s.starting_message or ""), "third moved up")
    for handle in holders + [handles[0], handles[2]]:
        await handle.signal("cancel", {})
        await wait_state(handle, JobState.TERMINATED)
    await wait_ledger(harness.client, ledger_id, all_released, "every lease released")


async def test_lease_of_a_terminated_job_is_reclaimed(harness: Harness) -> None:
    holder_job = new_job(parallelism=4)
    holder = await started(harness, holder_job)
    waiting = await harness.start(new_job(parallelism=4))
    await wait_for(waiting, lambda s: "0 jobs ahead" in (s.starting_message or ""), "waiting")
    # An operator's `temporal workflow terminate`: the Job cannot release anything itself.
    await holder.terminate(reason="operator")
    status = await wait_for(waiting, lambda s: s.engine_job_id is not None, "granted after the reclaim")
    assert status.lease and status.lease.resources == {"slots": 4}
    _, ledger = await ledger_of(harness, waiting)
    assert list(ledger.leases) == [waiting.id.removeprefix("job-")]
    await waiting.signal("cancel", {})
    await wait_state(waiting, JobState.TERMINATED)
    await record(waiting, "lease_reclaimed_waiter")


async def test_a_repeated_ask_grants_nothing_twice(harness: Harness) -> None:
    job = new_job(parallelism=3)
    handle = await started(harness, job)
    ledger_id, _ = await ledger_of(harness, handle)
    ledger_handle = harness.client.get_workflow_handle(ledger_id)
    # What a worker killed mid-ask leaves behind: the same ask again (the activity is retried).
    again = Ask(job_id=job.metadata.id, holder=job.workflow_id, resources={"slots": 3}, asked_at=datetime.now(UTC))
    await ledger_handle.signal("ask", again)
    await ledger_handle.signal("ask", again)
    other = await harness.start(new_job(parallelism=2))
    await wait_for(other, lambda s: "0 jobs ahead" in (s.starting_message or ""), "other waits: 1 slot free")
    ledger = await ledger_handle.query("ledger", result_type=Ledger)
    assert list(ledger.leases) == [job.metadata.id] and ledger.leases[job.metadata.id].resources == {"slots": 3}
    assert [a.job_id for a in ledger.queue] == [other.id.removeprefix("job-")]
    for h in (handle, other):
        await h.signal("cancel", {})
        await wait_state(h, JobState.TERMINATED)


async def test_a_job_bigger_than_the_target_fails_with_the_reason(harness: Harness) -> None:
    handle = await harness.start(new_job(parallelism=9))
    status = await wait_state(handle, JobState.FAILED)
    assert status.failure and "needs 9 slots" in status.failure.message and "has 4 in all" in status.failure.message
    assert harness.engine.calls["submit"] == []


async def test_an_updated_job_keeps_its_slots_for_its_successor(harness: Harness) -> None:
    first = new_job(parallelism=2)
    a = await started(harness, first)
    b = await started(harness, new_job(parallelism=2))
    c = await harness.start(new_job(parallelism=2))
    await wait_for(c, lambda s: "0 jobs ahead" in (s.starting_message or ""), "c waits")
    await a.execute_update("update", {"spec": first.spec.model_dump(by_alias=True)}, result_type=RequestAnswer)
    old = await final(a)
    successor = harness.client.get_workflow_handle(f"job-{old.status.links.successor_job_id}")
    status = await wait_for(successor, lambda s: s.engine_job_id is not None, "successor submitted")
    assert status.lease and status.lease.resources == {"slots": 2}
    c_status = await c.query("status", result_type=JobStatus)
    assert c_status.state is JobState.STARTING and c_status.engine_job_id is None
    await record(a, "flink_update_handover")
    for handle in (successor, b, c):
        await handle.signal("cancel", {})
        await wait_state(handle, JobState.TERMINATED)


async def test_an_in_place_update_on_a_full_target_does_not_deadlock(harness: Harness) -> None:
    harness.engine.updates_in_place = True
    job = new_job(parallelism=4)
    handle = await started(harness, job)
    await handle.execute_update("update", {"spec": job.spec.model_dump(by_alias=True)}, result_type=RequestAnswer)
    status = await wait_for(handle, lambda s: s.links.successor_job_id is not None, "successor linked")
    successor = harness.client.get_workflow_handle(f"job-{status.links.successor_job_id}")
    await wait_for(successor, lambda s: s.engine_job_id is not None, "successor submitted on the full target")
    harness.engine.push(job.metadata.engine_job_id, "JOB_STATE_UPDATED", phase=EnginePhase.STOPPED)
    await wait_state(handle, JobState.TERMINATED)
    _, ledger = await ledger_of(harness)
    assert list(ledger.leases) == [successor.id.removeprefix("job-")]
    await record(handle, "in_place_update_handover")
    await successor.signal("cancel", {})
    await wait_state(successor, JobState.TERMINATED)


async def test_a_quick_ask_that_fails_is_asked_again_and_leases_once(harness: Harness) -> None:
    """The ask for resources is a quick step (a local activity in the Job's first workflow task). When its
    answer is lost after the ledger queued the Job, the regular activity asks again: the Job starts, holds
    one lease, and the ledger queued it once."""
    harness.engine.ask_fails_after_asking = 1
    job = new_job(parallelism=3)
    handle = await started(harness, job)
    assert [request.job_id for request in harness.engine.calls["ask"]] == [job.metadata.id] * 2
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in (await handle.fetch_history()).events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert scheduled.count(engine_names.ASK) == 1  # the regular activity, after the failed quick attempt
    _, ledger = await ledger_of(harness, handle)
    assert [lease.resources for lease in ledger.leases.values()] == [{"slots": 3}]
    assert not ledger.queue
    await handle.signal("cancel", {})
    await wait_state(handle, JobState.TERMINATED)


@activity.defn(name=engine_names.TELL_LEDGER)
async def tell_ledger_fails(message: LedgerMessage) -> None:
    raise RuntimeError(f"connection reset while telling {message.ledger_workflow_id}")


async def test_ledger_is_told_by_signal_when_the_quick_step_fails(time_skipping_env: WorkflowEnvironment) -> None:
    """Telling the ledger (confirm, release) is a quick step, a local activity; when it fails, the Job tells
    the ledger by signal instead, and nothing stays leased."""
    engine = ScriptedEngine()
    task_queue = f"quick-tell-fails-{uuid.uuid4()}"
    activities = [a for a in engine.activities() if a is not tell_ledger] + [tell_ledger_fails]
    async with Worker(
        time_skipping_env.client,
        task_queue=task_queue,
        workflows=[JobWorkflow, DeploymentTargetWorkflow],
        activities=activities,
    ):
        h = Harness(time_skipping_env.client, task_queue, engine)
        handle = await started(h, new_job(parallelism=3))
        ledger_id, ledger = await ledger_of(h)
        assert [lease.resources for lease in ledger.leases.values()] == [{"slots": 3}]
        await handle.signal("cancel", {})
        result = await final(handle)
        assert result.status and result.status.state is JobState.TERMINATED
        await wait_ledger(h.client, ledger_id, all_released, "the lease released by signal")
