"""Activities replaced for time-skipping workflow tests: a scripted engine with the real activity names.

The test decides what the engine reports (push) and inspects what the workflow asked of it (calls).
Temporal itself is real (the time-skipping test server).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from datetime import UTC, datetime

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from activities.ledger import tell_ledger
from jobctl import engine
from jobctl.engine import (
    AcquireInput,
    AskInput,
    AskReceipt,
    CapacitySnapshot,
    Grant,
    HolderList,
    Observation,
    ObserveInput,
    StopInput,
    StopMode,
    StopResult,
    Submission,
    SubmitInput,
)
from jobctl.ledger import Ask, Ledger
from jobctl.models import Engine, Job, JobMetadata, JobSpec, workflow_id_for
from jobctl.states import EnginePhase, flink_phase
from workflows.deployment_target import LedgerInput, ledger_workflow_id


def observation(
    jid: str,
    status: str,
    restarts: int | None = 0,
    failure: str | None = None,
    phase: EnginePhase | None = None,
    refuses: dict[str, str] | None = None,
) -> Observation:
    phase = phase or (EnginePhase.UNKNOWN if status == "UNKNOWN" else flink_phase(status))
    return Observation(
        refuses=refuses or {},
        engine_job_id=jid,
        phase=phase,
        engine_status=status,
        restarts=restarts,
        failure_message=failure,
        unreachable_reason="connection refused" if status == "UNKNOWN" else None,
        observed_at=datetime.now(UTC),
        started_fields={"flinkJobId": jid, "observedFlinkJobStatus": status, "observedFlinkJobRestarts": restarts},
    )


class ScriptedEngine:
    def __init__(self) -> None:
        self.engine_jobs: dict[str, str] = {}  # engine job id -> status, what "the engine" holds
        self.calls: dict[str, list[object]] = defaultdict(list)
        self.has_capacity = True
        self.submit_fails_after_creating = 0  # attempts that create the job, then fail (lost answer)
        self.ask_fails_after_asking = 0  # asks that reach the ledger, then fail (lost answer)
        self.drain_completes = True
        self.suspend_completes = True
        self.updates_in_place = False  # SUSPEND replaces in place, like Dataflow
        self.refuse_replacement = False  # a successor's in-place launch is refused
        self.drain_gate: asyncio.Event | None = None  # a drain waits for it: holds the Job in TERMINATING
        self.cancel_end_pushed = True  # after a cancel not waited for, the watcher pushes CANCELLING, CANCELED
        self.reclaim_interval_seconds = 2.0  # of the test's ledger: short, so reclaims show quickly
        # What the engine currently reports per job. Observing reads it, never consumes it, as with a real
        # engine: an observe call the workflow abandoned cannot swallow a change.
        self._current: dict[str, Observation] = {}
        # The scripted Deployment Target watcher: pushes go out in order, one signal each, as the real
        # watcher's do (activities/watch.py). None: Jobs are not watched and long-poll instead.
        self.watched_by: str | None = "watch-deployment-target-local"
        self._outbox: asyncio.Queue[Observation] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None

    def push(self, jid: str, status: str, restarts: int | None = 0, failure: str | None = None, **kw: object) -> None:
        """Make the engine report `status` for job `jid`: the watcher tells the Job, an observe call sees it."""
        self._current[jid] = observation(jid, status, restarts, failure, **kw)  # type: ignore[arg-type]
        if self.watched_by:
            self._outbox.put_nowait(self._current[jid])

    def _start_watcher(self, client: Client) -> None:
        if self._sender is None and self.watched_by:
            self._sender = asyncio.create_task(self._send(client))

    async def _send(self, client: Client) -> None:
        while True:
            obs = await self._outbox.get()
            # As the real watcher: no engine error texts in signals (the Job reads them with a look of its own).
            obs = obs.model_copy(update={"failure_message": None})
            handle = client.get_workflow_handle(workflow_id_for(str(uuid.UUID(hex=obs.engine_job_id))))
            try:
                await handle.signal(engine.OBSERVED, obs)
            except RPCError:
                pass  # the Job's workflow closed: nobody to tell, as with the real watcher

    @activity.defn(name=engine.ACQUIRE)
    async def acquire(self, request: AcquireInput) -> Grant:
        self.calls["acquire"].append(request)
        if not self.has_capacity:
            raise ApplicationError(f"waiting for slots on {request.spec.deployment_target_name}", type="NoCapacity")
        if request.spec.deployment_target_name == "nowhere":
            raise ApplicationError(
                "Deployment Target 'nowhere' is not declared (known targets: local)",
                type="DeploymentTargetNotFound",
                non_retryable=True,
            )
        return Grant(target=request.spec.deployment_target_name, slots=request.spec.parallelism, message="granted")

    @activity.defn(name=engine.ASK)
    async def ask(self, request: AskInput) -> AskReceipt:
        """The real ledger workflow, a scripted target: 4 slots, free as `has_capacity` says."""
        self.calls["ask"].append(request)
        if request.spec.deployment_target_name == "nowhere":
            raise ApplicationError(
                "Deployment Target 'nowhere' is not declared (known targets: local)",
                type="DeploymentTargetNotFound",
                non_retryable=True,
            )
        target = request.spec.deployment_target_name
        ask = Ask(
            job_id=request.job_id,
            holder=request.holder,
            resources={"slots": request.spec.parallelism},
            asked_at=datetime.now(UTC),
            takes_over=request.takes_over,
        )
        # One ledger per test (each test has its own task queue and worker).
        ledger_id = f"{ledger_workflow_id(target)}-{activity.info().task_queue}"
        await activity.client().start_workflow(
            "DeploymentTargetWorkflow",
            LedgerInput(
                ledger=Ledger(target=target, capacity=self.capacity_of()),
                reclaim_interval_seconds=self.reclaim_interval_seconds,
            ),
            id=ledger_id,
            task_queue=activity.info().task_queue,
            start_signal="ask",
            start_signal_args=[ask],
        )
        if self.ask_fails_after_asking > 0:
            self.ask_fails_after_asking -= 1
            raise RuntimeError("connection reset while reading the ledger's answer")
        return AskReceipt(ledger_workflow_id=ledger_id, resources=ask.resources)

    def capacity_of(self) -> dict[str, int]:
        return {"slots": 4}

    @activity.defn(name=engine.TARGET_CAPACITY)
    async def capacity(self, target: str) -> CapacitySnapshot:
        free = {"slots": 4 if self.has_capacity else 0}
        return CapacitySnapshot(capacity=self.capacity_of(), engine_free=free, engine_note=f"{free['slots']} free")

    @activity.defn(name=engine.CLOSED_HOLDERS)
    async def closed_holders(self, request: HolderList) -> HolderList:
        client = activity.client()
        closed = []
        for holder in request.holders:
            description = await client.get_workflow_handle(holder).describe()
            if description.status != WorkflowExecutionStatus.RUNNING:
                closed.append(holder)
        return HolderList(holders=closed)

    @activity.defn(name=engine.SUBMIT)
    async def submit(self, request: SubmitInput) -> Submission:
        self.calls["submit"].append(request)
        self._start_watcher(activity.client())
        jid = request.metadata.engine_job_id
        if jid in self.engine_jobs:
            return Submission(engine_job_id=jid, adopted=True, watched_by=self.watched_by)
        if request.replaces_engine_job_id and self.refuse_replacement:
            raise ApplicationError("the update is not compatible", type="SubmitRejected", non_retryable=True)
        self.engine_jobs[jid] = "CREATED"
        if self.submit_fails_after_creating > 0:
            self.submit_fails_after_creating -= 1
            raise RuntimeError("connection reset while reading the submit answer")
        return Submission(
            engine_job_id=jid,
            engine_ui_url=f"http://flink.example/#/job/running/{jid}/overview",
            watched_by=self.watched_by,
        )

    @activity.defn(name=engine.OBSERVE)
    async def observe(self, request: ObserveInput) -> Observation:
        self.calls["observe"].append(request)
        if request.max_wait_seconds == 0:  # a watched Job's own check: one look
            return self._current.get(request.engine_job_id) or observation(request.engine_job_id, "CREATED")
        # A long-poll: answer as soon as the engine reports something new, else (rarely, as the real one)
        # with what the workflow knows. Answering "no news" often would race with requests: the
        # time-skipping server then refuses to cancel an observe that just completed.
        for _ in range(100):
            current = self._current.get(request.engine_job_id)
            if current is not None and current.differs_from(request.last):
                self.engine_jobs[request.engine_job_id] = current.engine_status
                return current
            await asyncio.sleep(0.05)
        return request.last or observation(request.engine_job_id, "CREATED")

    @activity.defn(name=engine.STOP)
    async def stop(self, request: StopInput) -> StopResult:
        self.calls["stop"].append(request)
        jid = request.engine_job_id or request.metadata.engine_job_id
        if jid not in self.engine_jobs:
            return StopResult(engine_status="NOT_FOUND", message="nothing to cancel")
        if request.mode is StopMode.CANCEL and not request.wait_for_end:
            # As a real engine: the cancel is under way; the job ends a moment later, and the watcher says so.
            self.engine_jobs[jid] = "CANCELED"
            if self.cancel_end_pushed:
                self.push(jid, "CANCELLING")
                self.push(jid, "CANCELED")
            else:
                self._current[jid] = observation(jid, "CANCELED")
            return StopResult(
                engine_status="CANCELLING",
                phase=EnginePhase.STOPPING,
                message="cancel requested",
                started_fields={"observedFlinkJobStatus": "CANCELLING"},
            )
        current = self._current.get(jid)
        if request.mode is StopMode.CANCEL and current is not None and current.phase is EnginePhase.FAILED:
            return StopResult(
                engine_status="FAILED",
                phase=EnginePhase.FAILED,
                message="it failed before the cancel took effect: TaskManager lost",
                started_fields={"observedFlinkJobStatus": "FAILED"},
            )
        if request.mode is StopMode.CANCEL:
            self.engine_jobs[jid] = "CANCELED"
            return StopResult(
                engine_status="CANCELED", message="cancelled", started_fields={"observedFlinkJobStatus": "CANCELED"}
            )
        if request.mode is StopMode.DRAIN and self.drain_gate is not None:
            await self.drain_gate.wait()
        if request.mode is StopMode.SUSPEND and self.updates_in_place:
            return StopResult(engine_status="RUNNING", replaced_in_place=True, message="replaced at launch")
        completes = self.drain_completes if request.mode is StopMode.DRAIN else self.suspend_completes
        if not completes:
            if request.mode is StopMode.DRAIN:
                self.engine_jobs[jid] = "CANCELED"
                return StopResult(
                    engine_status="CANCELED",
                    cancelled_instead=True,
                    message=f"the savepoint did not complete within {request.savepoint_timeout_seconds}s",
                )
            return StopResult(engine_status="RUNNING", message="the savepoint failed; it keeps running")
        self.engine_jobs[jid] = "FINISHED"
        return StopResult(
            engine_status="FINISHED",
            phase=EnginePhase.FINISHED,
            savepoint_location=f"file:/tmp/savepoints/savepoint-{jid[:6]}-{len(self.calls['stop'])}",
            message="stopped with a savepoint",
            started_fields={"observedFlinkJobStatus": "FINISHED"},
        )

    def activities(self) -> list[object]:
        return [
            self.acquire,
            self.ask,
            self.capacity,
            self.closed_holders,
            self.submit,
            self.observe,
            self.stop,
            tell_ledger,
        ]


def new_job(target: str = "local", **spec: object) -> Job:
    return Job(
        metadata=JobMetadata(id=str(uuid.uuid4()), name="orders", deployment_name="orders-deployment"),
        spec=JobSpec.model_validate(
            {
                "engine": Engine.FLINK,
                "deploymentTargetName": target,
                "parallelism": 1,
                "artifact": {"kind": "JAR", "jarUri": "file:///tmp/job.jar", "entryClass": "example.Job"},
                **spec,
            }
        ),
    )
