"""The Job activities the workflow calls by name: acquire, submit, observe, stop.

Each picks the engine for the Job's Deployment Target; the workflow never branches on the engine.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.dataflow import DataflowEngine
from activities.flink import FlinkEngine
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
    StopResult,
    Submission,
    SubmitInput,
)
from jobctl.ledger import Ask, Ledger
from jobctl.models import Engine, JobSpec
from jobctl.settings import Settings
from jobctl.targets import DataflowTarget, DeploymentTargets, FlinkSessionTarget, UnknownTarget
from workflows.deployment_target import LedgerInput, ledger_workflow_id


class JobActivities:
    def __init__(self, targets: DeploymentTargets, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.targets = targets
        # Deployment Target credentials (Flink REST headers) are added on the wire, never passed to an engine.
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(self.settings.engine_timeout_seconds, connect=5.0),
            event_hooks={"request": [targets.add_credentials]},
        )
        self.flink = FlinkEngine(self.http, poll_interval=self.settings.poll_interval_seconds)
        # Builds its gRPC clients on first use, inside the worker's event loop.
        self.dataflow = DataflowEngine(
            timeout=self.settings.engine_timeout_seconds, poll_interval=self.settings.poll_interval_seconds
        )

    async def close(self) -> None:
        await self.http.aclose()
        await self.dataflow.close()

    def _target(self, job_id: str, spec: JobSpec) -> tuple[Any, Any]:
        """The engine and the Deployment Target for a Job, or a non-retryable error saying what is wrong."""
        try:
            target = self.targets.get(spec.deployment_target_name)
        except UnknownTarget as err:
            raise ApplicationError(
                f"Job {job_id}: {err}", type="DeploymentTargetNotFound", non_retryable=True
            ) from None
        if (spec.engine is Engine.FLINK) == isinstance(target, FlinkSessionTarget):
            return self._engine_of(target), target
        raise ApplicationError(
            f"Job {job_id}: engine {spec.engine} cannot run on Deployment Target {target.name} of kind "
            f"{target.kind}; pick a target of the engine's kind",
            type="InvalidSpec",
            non_retryable=True,
        )

    def _check_secrets(self, job_id: str, spec: JobSpec) -> None:
        """Refuse to go on with secret parameters that have no real value (see jobctl/codec.py)."""
        if names := spec.unusable_secrets():
            raise ApplicationError(
                f"Job {job_id}: secret parameter(s) {', '.join(names)} hold no usable value: they arrived "
                "unencrypted (sent without jobctl's payload codec, e.g. by the temporal CLI or the web UI) "
                'or as "***" (copied from `jobctl get`). Start the Job with `jobctl start` (or '
                "jobctl.client.start_job) with JOBCTL_CODEC_KEY set, and change any secret sent unencrypted",
                type="SecretNotEncrypted",
                non_retryable=True,
            )

    def _engine_of(self, target: FlinkSessionTarget | DataflowTarget) -> Any:
        return self.flink if isinstance(target, FlinkSessionTarget) else self.dataflow

    @activity.defn(name=engine.ACQUIRE)
    async def acquire(self, request: AcquireInput) -> Grant:
        """Kept for Jobs started before Deployment Target leases (they replay and resume on this path)."""
        self._check_secrets(request.job_id, request.spec)
        eng, target = self._target(request.job_id, request.spec)
        return await eng.acquire(request.job_id, request.spec, target)

    @activity.defn(name=engine.SUBMIT)
    async def submit(self, request: SubmitInput) -> Submission:
        self._check_secrets(request.metadata.id, request.spec)
        eng, target = self._target(request.metadata.id, request.spec)
        return await eng.submit(request, target)

    @activity.defn(name=engine.OBSERVE)
    async def observe(self, request: ObserveInput) -> Observation:
        eng, target = self._target(request.metadata.id, request.spec)
        return await eng.observe(request, target)

    @activity.defn(name=engine.STOP)
    async def stop(self, request: StopInput) -> StopResult:
        eng, target = self._target(request.metadata.id, request.spec)
        return await eng.stop(request, target)

    # --- Deployment Target leases -----------------------------------------------------------------

    @activity.defn(name=engine.ASK)
    async def ask(self, request: AskInput) -> AskReceipt:
        """Queue the Job on its target's ledger (signal-with-start): asking twice queues it once."""
        self._check_secrets(request.job_id, request.spec)
        eng, target = self._target(request.job_id, request.spec)
        needs = eng.requirements(request.job_id, request.spec, target)
        ledger = Ledger(target=target.name, capacity=eng.capacity(target))
        why = ledger.never_fits(needs)
        if why:
            raise ApplicationError(
                f"Job {request.job_id} {why}; lower what it asks for or pick a bigger target",
                type="InvalidSpec",
                non_retryable=True,
            )
        ledger_id = ledger_workflow_id(target.name)
        ask = Ask(
            job_id=request.job_id,
            holder=request.holder,
            resources=needs,
            asked_at=datetime.now(UTC),
            takes_over=request.takes_over,
        )
        await activity.client().start_workflow(
            "DeploymentTargetWorkflow",
            LedgerInput(
                ledger=ledger,
                reclaim_interval_seconds=self.settings.lease_reclaim_interval_seconds,
                task_queue=activity.info().task_queue,
            ),
            id=ledger_id,
            task_queue=activity.info().task_queue,
            start_signal="ask",
            start_signal_args=[ask],
            static_summary=f"Deployment Target {target.name}: leases and queue",
        )
        return AskReceipt(ledger_workflow_id=ledger_id, resources=needs)

    @activity.defn(name=engine.TARGET_CAPACITY)
    async def capacity(self, target_name: str) -> CapacitySnapshot:
        try:
            target = self.targets.get(target_name)
        except UnknownTarget:
            # Removed from the targets file: grant nothing more; existing leases end with their Jobs.
            return CapacitySnapshot(capacity={}, engine_note=f"{target_name} is no longer declared")
        eng = self._engine_of(target)
        free, note = await eng.engine_free(target)
        return CapacitySnapshot(capacity=eng.capacity(target), engine_free=free, engine_note=note)

    @activity.defn(name=engine.CLOSED_HOLDERS)
    async def closed_holders(self, request: HolderList) -> HolderList:
        """The holders whose workflow is no longer running (closed any way, or unknown)."""
        client = activity.client()
        limit = asyncio.Semaphore(20)

        async def closed(workflow_id: str) -> bool:
            async with limit:
                try:
                    description = await client.get_workflow_handle(workflow_id).describe()
                except RPCError as err:
                    if err.status == RPCStatusCode.NOT_FOUND:
                        return True
                    raise
                return description.status != WorkflowExecutionStatus.RUNNING

        verdicts = await asyncio.gather(*(closed(h) for h in request.holders))
        return HolderList(holders=[h for h, gone in zip(request.holders, verdicts, strict=True) if gone])

    def all(self) -> list[Any]:
        return [self.acquire, self.submit, self.observe, self.stop, self.ask, self.capacity, self.closed_holders]
