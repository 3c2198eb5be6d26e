"""The Job activities the workflow calls by name: acquire, submit, observe, stop.

Each picks the engine for the Job's Deployment Target; the workflow never branches on the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from temporalio import activity
from temporalio.client import WithStartWorkflowOperation, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from activities.dataflow import DataflowEngine, DataflowSurvey, where_of
from activities.flink import FlinkEngine, FlinkSurvey
from activities.ledger import tell_ledger
from activities.watch import Watcher, limiter, workflow_running
from jobctl import engine
from jobctl.engine import (
    AcquireInput,
    AskInput,
    AskReceipt,
    CapacitySnapshot,
    Grant,
    HolderList,
    LeaseAnswer,
    Observation,
    ObserveInput,
    StopInput,
    StopResult,
    Submission,
    SubmitInput,
    WatchInput,
)
from jobctl.ledger import Ask, Ledger
from jobctl.models import Engine, JobSpec
from jobctl.settings import Settings
from jobctl.targets import DataflowTarget, DeploymentTargets, FlinkSessionTarget, UnknownTarget
from workflows.deployment_target import LedgerInput, ledger_task_queue, ledger_workflow_id
from workflows.target_watch import watch_workflow_id

# How long a first ask waits for a turn to ask by update before it asks by signal. With the update's own
# 12 s deadline it stays within the ask's 20 s timeout. A ledger answers 10-15 asks by update per second on
# the bench.
ASK_SLOT_WAIT_SECONDS = 5.0
# Lease holders looked up per visibility query when a ledger looks for leases of closed Jobs.
HOLDERS_PER_QUERY = 100


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
        self._watch_ensured: dict[str, float] = {}  # target -> when this process last made sure it is watched
        # ledger -> the asks this process may have waiting on it by update at once
        self._ask_slots: dict[str, asyncio.Semaphore] = {}

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
        submission = await eng.submit(request, target)
        if self._watches(request.spec, target):
            await self._ensure_watched(target.name)
            submission.watched_by = watch_workflow_id(target.name)
        return submission

    @activity.defn(name=engine.OBSERVE)
    async def observe(self, request: ObserveInput) -> Observation:
        eng, target = self._target(request.metadata.id, request.spec)
        if request.max_wait_seconds == 0 and self._watches(request.spec, target):
            # A watched Job's occasional check: also the moment to restart a watcher an operator stopped.
            await self._ensure_watched(target.name)
        return await eng.observe(request, target)

    # --- Deployment Target watchers ---------------------------------------------------------------

    def _watches(self, spec: JobSpec, target: FlinkSessionTarget | DataflowTarget) -> bool:
        """Whether the target's watcher sees this Job's engine job: it surveys the target's own Flink cluster,
        or the target's own Dataflow project and region (a spec may point elsewhere)."""
        if isinstance(target, DataflowTarget):
            where = where_of(spec, target)
            return (where.project, where.region) == (target.project, target.region)
        return True

    async def _ensure_watched(self, target: str) -> None:
        """Start the target's watcher unless it runs (asked at most once a minute per worker process)."""
        if time.monotonic() - self._watch_ensured.get(target, -3600.0) < 60:
            return
        await activity.client().start_workflow(
            "DeploymentTargetWatchWorkflow",
            WatchInput(target=target),
            id=watch_workflow_id(target),
            task_queue=activity.info().task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"Deployment Target {target}: watches its engine jobs, tells each Job of changes",
        )
        self._watch_ensured[target] = time.monotonic()

    @activity.defn(name=engine.WATCH)
    async def watch(self, request: WatchInput) -> None:
        """Survey the target every watch interval and signal each Job whose engine job changed. Runs until
        cancelled (its workflow closing) or its worker dies (then Temporal starts it again elsewhere)."""
        try:
            target = self.targets.get(request.target)
        except UnknownTarget as err:
            raise ApplicationError(
                f"the watcher of Deployment Target {request.target} stops: {err}. Jobs on it check their "
                "engine jobs themselves from time to time; declare the target again to watch it",
                type="DeploymentTargetNotFound",
                non_retryable=True,
            ) from None
        budget = limiter(self.settings.engine_requests_per_second)
        if isinstance(target, FlinkSessionTarget):
            survey: Any = FlinkSurvey(self.flink, target, budget)
        else:
            survey = DataflowSurvey(self.dataflow, target, budget)
        watcher = Watcher(activity.client(), survey, self.settings.watch_interval_seconds)
        await watcher.run()

    @activity.defn(name=engine.STOP)
    async def stop(self, request: StopInput) -> StopResult:
        eng, target = self._target(request.metadata.id, request.spec)
        return await eng.stop(request, target)

    # --- Deployment Target leases -----------------------------------------------------------------

    @activity.defn(name=engine.ASK)
    async def ask(self, request: AskInput) -> AskReceipt:
        """Queue the Job on its target's ledger (update- or signal-with-start): asking twice queues it once."""
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
        ledger_input = LedgerInput(
            ledger=ledger,
            reclaim_interval_seconds=self.settings.lease_reclaim_interval_seconds,
            task_queue=activity.info().task_queue,
        )
        ledger_queue = ledger_task_queue(activity.info().task_queue)
        summary = f"Deployment Target {target.name}: leases and queue"
        start = WithStartWorkflowOperation(
            "DeploymentTargetWorkflow",
            ledger_input,
            id=ledger_id,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            task_queue=ledger_queue,
            static_summary=summary,
        )
        # A retried attempt asks by update, waiting as long as it takes for a turn: an earlier attempt's update
        # may have been answered already (with the grant), and only the same update id gets that answer back.
        answer = None
        if await self._ask_slot(ledger_id, patient=activity.info().attempt > 1):
            try:
                answer = await self._ask_by_update(ask, start)
            finally:
                self._ask_slots[ledger_id].release()
        if answer is None:
            # The rest of a burst asks by signal and hears back by signal (a grant, or its place in the queue).
            await activity.client().start_workflow(
                "DeploymentTargetWorkflow",
                ledger_input,
                id=ledger_id,
                task_queue=ledger_queue,
                static_summary=summary,
                start_signal="ask",
                start_signal_args=[ask],
            )
        return AskReceipt(ledger_workflow_id=ledger_id, resources=needs, answer=answer)

    async def _ask_slot(self, ledger_id: str, patient: bool) -> bool:
        """Wait for one of this process's turns to ask `ledger_id` by update: a little (False after
        ASK_SLOT_WAIT_SECONDS), or if `patient` until the activity's timeout. Updates are answered in the
        ledger's next round, so a burst of Jobs mostly waits here a moment rather than asking by signal: a grant
        by signal costs the ledger and the Job far more (an external signal each)."""
        turns = self.settings.asks_by_update_per_target
        if turns == 0:  # every ask by signal, retries too: none of them was ever asked by update
            return False
        slots = self._ask_slots.setdefault(ledger_id, asyncio.Semaphore(turns))
        try:
            await asyncio.wait_for(slots.acquire(), None if patient else ASK_SLOT_WAIT_SECONDS)
            return True
        except TimeoutError:
            return False

    async def _ask_by_update(self, ask: Ask, start: WithStartWorkflowOperation) -> LeaseAnswer:
        """Update-with-start: the ledger answers in its next admission round (granted, or where the Job waits),
        so a Job that fits needs no signal back. Asking again (a retried attempt, with the same update id) gets
        the same answer."""
        try:
            return await activity.client().execute_update_with_start_workflow(
                "request_lease",
                ask,
                start_workflow_operation=start,
                id=f"ask-{ask.job_id}",
                result_type=LeaseAnswer,
                # A ledger that does not answer (its workers down) fails the attempt before the activity's
                # timeout, freeing this process's turn; the retry asks again with the same update id.
                rpc_timeout=timedelta(seconds=12),
            )
        except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError):
            # The SDK gives the start operation the same error when the RPC failed before the ledger was seen
            # (the deadline above among them): collect it, or asyncio logs it as never retrieved. Temporal's
            # limit on updates in flight (10 per workflow by default) ends here too, if more workers than it
            # allows ask at once: the activity's retry asks again.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await start.workflow_handle()
            raise

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
        """The holders whose workflow is no longer running (closed any way, or unknown).

        One visibility query per hundred holders finds those still running; only the rest are described one by
        one, to be sure (visibility lags: a Job that just started may not be listed yet, and must keep its lease).
        Describing every holder took a busy target's ledger (700 leases on a loaded server) past this activity's
        timeout, again and again, and the ledger admitted no Job meanwhile.
        """
        client = activity.client()
        listed: set[str] = set()
        for start in range(0, len(request.holders), HOLDERS_PER_QUERY):
            chunk = request.holders[start : start + HOLDERS_PER_QUERY]
            ids = ", ".join(f"'{holder}'" for holder in chunk if "'" not in holder)
            if ids:
                query = f"WorkflowId IN ({ids}) AND ExecutionStatus = 'Running'"
                listed.update([wf.id async for wf in client.list_workflows(query, page_size=HOLDERS_PER_QUERY)])
        limit = asyncio.Semaphore(20)

        async def closed(workflow_id: str) -> bool:
            async with limit:
                return not await workflow_running(client, workflow_id)

        unlisted = [holder for holder in request.holders if holder not in listed]
        verdicts = await asyncio.gather(*(closed(h) for h in unlisted))
        return HolderList(holders=[h for h, gone in zip(unlisted, verdicts, strict=True) if gone])

    def all(self) -> list[Any]:
        return [
            self.acquire,
            self.submit,
            self.observe,
            self.stop,
            self.ask,
            self.capacity,
            self.closed_holders,
            self.watch,
            tell_ledger,
        ]

    def ledger_activities(self) -> list[Any]:
        """What a Deployment Target's ledger runs (on the ledgers' task queue)."""
        return [self.capacity, self.closed_holders]
