"""The Job activities the workflow calls by name: acquire, submit, observe, stop.

Each picks the engine for the Job's Deployment Target; the workflow never branches on the engine.
"""

from __future__ import annotations

from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.dataflow import DataflowEngine
from activities.flink import FlinkEngine
from jobctl import engine
from jobctl.engine import AcquireInput, Grant, Observation, ObserveInput, StopInput, StopResult, Submission, SubmitInput
from jobctl.models import Engine, JobSpec
from jobctl.settings import Settings
from jobctl.targets import DataflowTarget, DeploymentTargets, FlinkSessionTarget, UnknownTarget


class JobActivities:
    def __init__(self, targets: DeploymentTargets, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.targets = targets
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(self.settings.engine_timeout_seconds, connect=5.0))
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
        if spec.engine is Engine.FLINK and isinstance(target, FlinkSessionTarget):
            return self.flink, target
        if spec.engine is Engine.DATAFLOW and isinstance(target, DataflowTarget):
            return self.dataflow, target
        raise ApplicationError(
            f"Job {job_id}: engine {spec.engine} cannot run on Deployment Target {target.name} of kind "
            f"{target.kind}; pick a target of the engine's kind",
            type="InvalidSpec",
            non_retryable=True,
        )

    @activity.defn(name=engine.ACQUIRE)
    async def acquire(self, request: AcquireInput) -> Grant:
        eng, target = self._target(request.job_id, request.spec)
        return await eng.acquire(request.job_id, request.spec, target)

    @activity.defn(name=engine.SUBMIT)
    async def submit(self, request: SubmitInput) -> Submission:
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

    def all(self) -> list[Any]:
        return [self.acquire, self.submit, self.observe, self.stop]
