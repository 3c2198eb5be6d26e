"""JobWorkflow: one durable workflow per Job, from STARTING to a terminal state.

The workflow decides; activities do the I/O (see jobctl/engine.py). It never branches on the engine.

Requests (cancel, drain, update) arrive as signals (fire and forget) or as updates (answered: accepted,
or rejected with the reason). Both go through the same checks. A signal whose payload is malformed or
not acceptable in the Job's state is recorded in status.events as rejected, never dropped silently.

Observation is pushed: the Deployment Target's watcher (activities/watch.py) surveys all engine jobs of
the target at once and signals a Job only when its engine job changed; the Job checks by itself only every
few hours. So history grows with the number of changes, not with elapsed time, and a run continues as new
after a few hundred events. (Jobs the watcher does not see, and runs started before watchers existed,
observe with a long-poll activity that returns when the engine job changed.)
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pydantic
from temporalio import workflow
from temporalio.common import (
    RetryPolicy,
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
)
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, FailureError

with workflow.unsafe.imports_passed_through():
    from jobctl import engine
    from jobctl.engine import (
        AcquireInput,
        AskInput,
        AskReceipt,
        JobRef,
        LeaseGrant,
        LeaseNotice,
        LedgerMessage,
        Observation,
        ObserveInput,
        StopInput,
        StopMode,
        StopResult,
        Submission,
        SubmitInput,
    )
    from jobctl.models import (
        CancelRequest,
        DrainRequest,
        Failure,
        Job,
        JobEvent,
        JobLinks,
        JobMetadata,
        JobStatus,
        LeaseStatus,
        RequestAnswer,
        SavepointStatus,
        StartedStatus,
        TerminatingStatus,
        UpdateRequest,
        workflow_id_for,
    )
    from jobctl.states import (
        ENDED_PHASES,
        EnginePhase,
        JobState,
        is_terminal,
        path_to,
        transition,
    )

JOB_STATE = SearchAttributeKey.for_keyword("JobState")
JOB_ENGINE = SearchAttributeKey.for_keyword("JobEngine")
DEPLOYMENT_TARGET = SearchAttributeKey.for_keyword("DeploymentTarget")
DEPLOYMENT_NAME = SearchAttributeKey.for_keyword("DeploymentName")
ENGINE_JOB_ID = SearchAttributeKey.for_keyword("EngineJobId")

MAX_EVENTS = 50
# Jobs started before this change acquire without a lease; replays of their histories take that path.
LEASES_PATCH = "deployment-target-leases"
# An update's successor takes over the lease instead of the predecessor releasing it first.
HANDOVER_PATCH = "lease-handover-to-successor"
# Long-poll bound for one observe activity: long enough that a quiet job writes a handful of events a
# day, short enough that lastUpdateTime is never older than this.
OBSERVE_MAX_WAIT = timedelta(hours=4)
# Observation pushed by the Deployment Target's watcher; runs without this marker long-poll.
WATCH_PATCH = "observation-pushed-by-target-watcher"
# How often a watched Job checks its engine job itself: a safety net should the watcher miss a change,
# and the moment a watcher an operator stopped is started again. Each check costs 11 history events.
CHECK_EVERY = timedelta(hours=8)
# The first check, when no observation came since the run began: an engine job that ended before the
# watcher ever saw it (a batch job failing at launch) is not left waiting for hours.
CHECK_SOON = timedelta(seconds=30)
# A watched run continues as new after this many events, so replaying it (a worker's cache evicted it) is
# always cheap; with pushes that is weeks of a quiet Job.
MAX_RUN_EVENTS = 500

# Temporal retries transient failures; these error types mean retrying cannot help.
NON_RETRYABLE = ["DeploymentTargetNotFound", "InvalidArtifact", "SubmitRejected", "InvalidSpec"]
_RETRY_FOREVER = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=NON_RETRYABLE,
)
# The quick steps (submitting, telling the Deployment Target's ledger) are tried once as local
# activities: run by the worker that runs the Job's workflow task and recorded in that same task, they spare
# the Job a workflow task and three or four events each (a Dataflow lifecycle wrote 58 events in 9 tasks,
# against about 20 in 4 for a bare workflow). A step whose quick attempt fails, for whatever reason, then runs
# as a regular activity: retried for as long as it takes without writing history meanwhile (an engine outage
# while a Job starts costs nothing), or failing at once where retrying cannot help. Older runs replay their
# regular activities.
QUICK_STEPS_PATCH = "quick-steps-as-local-activities"
_QUICK_ATTEMPT = RetryPolicy(maximum_attempts=1)
# Every patch above, in one marker at the start of each run. The Python SDK writes each marker with an upsert
# of the TemporalChangeVersion search attribute, and each upsert is a visibility write on the server: a new
# Job wrote three of both. A run that has a generation marker takes every patched path without asking for
# their markers; runs recorded before them ask for each, as they did. It also spares a run the upsert of the
# search attributes its start (or its predecessor's run) already set. A change to what a new run does adds a
# generation at the end; the newest one a run has stands for every earlier one, so a new run writes one marker.
GENERATIONS = (
    "job-workflow-2026-11",
    # A watched Job's cancel is requested in the Job's own workflow task (a local activity), and the
    # watcher's push of the engine job's end ends the Job: no stop activity polling each engine job.
    "job-workflow-2026-11-23",
    # A watched Job keeps its check timer until it fires, instead of cancelling it and starting a new one on
    # every push and every request (two events each); only the early check is cancelled, at the first news.
    "job-workflow-2026-11-23-check-timer",
    # The ask for Deployment Target resources is a quick step too: asked in the Job's first workflow task, a
    # grant at once lets the Job submit in that same task (a workflow task and an activity less per start).
    "job-workflow-2026-11-23-quick-ask",
)
# Generation 3 on: the running check timer (see _await_news_or_check).
CHECK_TIMER_GENERATION = 3
# Generation 4 on: the ask is a quick step (see _acquire_lease).
QUICK_ASK_GENERATION = 4
# Generation 4 on: a cancel whose engine job ended at once ends the Job after this timer (see _cancel_watched).
ANSWER_BEFORE_CLOSING = timedelta(milliseconds=10)
# Generation 2: how long a watched Job waits for the watcher's push that its engine job ended after the cancel
# was requested, before the stop activity requests it again and watches the engine job itself.
CANCEL_PUSH_WAIT = timedelta(minutes=2)


class RequestRejected(Exception):
    """A request (cancel, drain, update) that cannot be carried out in the Job's current state."""


def search_attributes_for(job: Job, state: JobState) -> list[SearchAttributePair[Any]]:
    pairs: list[SearchAttributePair[Any]] = [
        SearchAttributePair(JOB_STATE, state.value),
        SearchAttributePair(JOB_ENGINE, job.spec.engine.value),
        SearchAttributePair(DEPLOYMENT_TARGET, job.spec.deployment_target_name),
    ]
    if job.metadata.deployment_name:
        pairs.append(SearchAttributePair(DEPLOYMENT_NAME, job.metadata.deployment_name))
    return pairs


@workflow.defn(name="JobWorkflow", failure_exception_types=[pydantic.ValidationError])
class JobWorkflow:
    @workflow.init
    def __init__(self, job: Job) -> None:
        self._job = job
        if workflow.info().continued_run_id is None or job.status is None:
            # A fresh Job: whatever status the caller sent is not the truth, except the link to the Job
            # it succeeds (set by the predecessor when it starts this one as its update).
            links = job.status.links if job.status else JobLinks()
            job.status = JobStatus(state=JobState.STARTING, links=links)
            job.metadata.created_at = job.metadata.created_at or workflow.now()
        self._status: JobStatus = job.status
        # The request being carried out (cancel, drain or update), if any.
        self._request: TerminatingStatus | None = None
        self._drain_timeout: int | None = None
        self._update_spec: UpdateRequest | None = None
        self._last_observation: Observation | None = None
        # The newest observation the watcher pushed that the main loop has not taken yet.
        self._news: Observation | None = None
        # Generation 3: the check timer that runs, and since when the Job has heard of its engine job (a push
        # or its own check; the run's start before either). A check is due CHECK_SOON or CHECK_EVERY after it.
        self._check_timer: asyncio.Future[None] | None = None
        self._check_timer_soon = False  # the timer runs for CHECK_SOON (no observation yet)
        self._heard_at: datetime | None = None
        self._watched = False
        self._generation = 0  # the newest of GENERATIONS this run has (1-based; 0: none)
        # An update the engine carries out in place (Dataflow): its successor, and the request that
        # waits for the engine to report this Job's engine job replaced.
        self._in_place: TerminatingStatus | None = None
        self._successor: Any = None
        # Deployment Target lease: the ledger asked (before a grant), the grant or refusal it sent.
        self._ledger_id: str | None = None
        self._grant: LeaseGrant | None = None
        self._refusal: str | None = None
        self._lease_confirmed = False
        # An unfinished request carried over continue-as-new.
        if self._status.state is JobState.TERMINATING and self._status.terminating:
            self._request = self._status.terminating

    # --- the main loop ---------------------------------------------------------------------------

    @workflow.run
    async def run(self, job: Job) -> Job:
        if workflow.info().workflow_id != workflow_id_for(self._job.metadata.id):
            raise ApplicationError(
                f"workflow id {workflow.info().workflow_id!r} does not match the Job: a Job with "
                f"metadata.id {self._job.metadata.id} must run as workflow id "
                f"{workflow_id_for(self._job.metadata.id)!r}; start it again with that id",
                type="InvalidSpec",
                non_retryable=True,
            )
        self._generation = self._newest_generation()
        self._watched = self._patched(WATCH_PATCH)
        wanted = search_attributes_for(self._job, self._status.state)
        given = workflow.info().typed_search_attributes
        if not self._generation or any(given.get(pair.key) != pair.value for pair in wanted):
            # Started without them (the temporal CLI, a client of its own), or with others: set them.
            workflow.upsert_search_attributes([pair.key.value_set(pair.value) for pair in wanted])
        if workflow.info().continued_run_id is None:
            self._event("CREATED", f"Job created for target {self._job.spec.deployment_target_name}")
        self._publish()

        if self._status.state is JobState.STARTING and self._status.engine_job_id is None:
            await self._start()

        while not is_terminal(self._status.state):
            if self._request_to_carry_out():
                await self._carry_out_request()
                continue
            await self._observe()
            if self._status.state is JobState.STARTED and self._status.lease and not self._lease_confirmed:
                # The engine job runs: its slots now show in the engine's own free capacity.
                self._lease_confirmed = True
                await self._tell_ledger("confirm")
            if self._in_place is not None and self._successor is not None and self._successor.done():
                self._successor_ended_first()
            if self._should_continue_as_new():
                await workflow.wait_condition(workflow.all_handlers_finished)
                if self._request is None:
                    self._job.status = self._status
                    workflow.continue_as_new(self._job)

        self._job.metadata.terminated_at = self._job.metadata.terminated_at or workflow.now()
        successor_pending = bool(self._status.links.successor_job_id and self._update_spec and self._successor is None)
        if successor_pending and self._patched(HANDOVER_PATCH):
            # The successor takes over this Job's lease (no other Job can slip in between); should it
            # never ask, the lease of this closed Job is reclaimed.
            await self._start_successor(self._status.links.successor_job_id)
        else:
            # Every other exit releases what the Job holds on its Deployment Target (or withdraws its ask).
            await self._tell_ledger("release")
            if successor_pending:
                await self._start_successor(self._status.links.successor_job_id)
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._job.status = self._status
        return self._job

    @staticmethod
    def _newest_generation() -> int:
        # Newest first: a new run writes the newest marker only; a recorded run finds the one it has (a marker
        # asked for during replay and not in the history reads as absent, and writes nothing).
        for number in range(len(GENERATIONS), 0, -1):
            if workflow.patched(GENERATIONS[number - 1]):
                return number
        return 0

    def _patched(self, patch: str) -> bool:
        """Whether this run takes the patched path: always for runs with a generation marker."""
        return self._generation >= 1 or workflow.patched(patch)

    # --- STARTING ----------------------------------------------------------------------------------

    async def _start(self) -> None:
        spec = self._job.spec
        if self._patched(LEASES_PATCH):
            if not await self._acquire_lease():
                return
        elif not await self._acquire_unleased():
            return
        self._status.starting_message = f"submitting to {spec.deployment_target_name}"
        self._publish()
        submission = await self._unless_stopped(
            self._step(
                engine.SUBMIT,
                SubmitInput(
                    metadata=self._job.metadata,
                    spec=spec,
                    replaces_engine_job_id=self._status.links.replaces_engine_job_id,
                ),
                result_type=Submission,
                timeout=timedelta(minutes=5),
                heartbeat_timeout=timedelta(minutes=1),
                # A slow submission (a big jar to upload) goes on as a regular activity, with heartbeats.
                quick_timeout=timedelta(seconds=60),
                summary=f"submit to {spec.deployment_target_name}",
            )
        )
        if submission is None:
            return
        self._status.engine_job_id = submission.engine_job_id
        self._status.engine_ui_url = submission.engine_ui_url
        if self._watched:
            self._status.watched_by = submission.watched_by
        self._status.starting_message = "submitted; waiting for the engine to report the job running"
        verb = "adopted the existing" if submission.adopted else "submitted"
        self._event("SUBMITTED", f"{verb} engine job {submission.engine_job_id}")
        workflow.upsert_search_attributes([ENGINE_JOB_ID.value_set(submission.engine_job_id)])
        self._publish()

    async def _acquire_lease(self) -> bool:
        """Ask the Deployment Target's ledger for what the Job needs and wait in its FIFO queue."""
        spec = self._job.spec
        self._status.starting_message = f"asking Deployment Target {spec.deployment_target_name} for resources"
        self._publish()
        ask = AskInput(
            job_id=self._job.metadata.id,
            holder=workflow.info().workflow_id,
            spec=spec,
            takes_over=self._status.links.predecessor_job_id,
        )
        summary = f"queue on Deployment Target {spec.deployment_target_name}"
        timeout = timedelta(seconds=20)
        if self._generation >= QUICK_ASK_GENERATION:
            # A quick step: the ledger mostly answers within a fraction of a second, and a grant lets the Job
            # submit in this same workflow task. The Job's task stays open while the ledger answers (the SDK
            # keeps it alive past its timeout); a request that comes meanwhile is taken when the ask returns or
            # the SDK renews the task. Asking twice (the regular activity after a failed quick attempt) queues
            # the Job once.
            task = self._step(engine.ASK, ask, result_type=AskReceipt, timeout=timeout, summary=summary)
        else:
            # Generations before 4: a regular activity (a workflow task of its own, and an activity task).
            task = workflow.start_activity(
                engine.ASK,
                ask,
                result_type=AskReceipt,
                start_to_close_timeout=timeout,
                retry_policy=_RETRY_FOREVER,
                summary=summary,
            )
        receipt: AskReceipt | None = await self._unless_stopped(task)
        if receipt is None:
            return False
        self._ledger_id = receipt.ledger_workflow_id
        answer = receipt.answer  # None from older ask activities: the answer comes by signal
        if answer is not None:
            if answer.grant is not None:
                self._grant = self._grant or answer.grant
            elif answer.refused is not None:
                self._refusal = self._refusal or answer.refused.message
            elif answer.waiting is not None and self._grant is None:
                self._status.starting_message = answer.waiting.message
                self._publish()
        await workflow.wait_condition(
            lambda: self._grant is not None or self._refusal is not None or self._request is not None
        )
        if self._grant is None:
            if self._refusal is not None and self._request is None:
                self._status.failure = Failure(reason="InvalidSpec", message=self._refusal, failed_at=workflow.now())
                self._set_state(JobState.FAILED, self._refusal)
                self._publish()
            return False  # cancelled while waiting: the release at the end withdraws the ask
        if not self._grant.confirm:
            self._lease_confirmed = True  # the ledger has nothing to learn from a confirm
        self._status.lease = LeaseStatus(
            target=self._grant.target,
            resources=self._grant.resources,
            granted_at=self._grant.granted_at,
            ledger_workflow_id=receipt.ledger_workflow_id,
        )
        self._event("RESOURCES_ACQUIRED", self._grant.message)
        return True

    async def _acquire_unleased(self) -> bool:
        """Jobs that started before Deployment Target leases: check free slots, hold nothing."""
        spec = self._job.spec
        self._status.starting_message = (
            f"acquiring {spec.parallelism} slot(s) on Deployment Target {spec.deployment_target_name}"
        )
        self._publish()
        grant = await self._unless_stopped(
            workflow.start_activity(
                engine.ACQUIRE,
                AcquireInput(job_id=self._job.metadata.id, spec=spec),
                result_type=engine.Grant,
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=_RETRY_FOREVER,
                summary=f"acquire {spec.parallelism} slot(s) on {spec.deployment_target_name}",
            )
        )
        if grant is None:
            return False
        self._event("RESOURCES_ACQUIRED", grant.message)
        return True

    def _step(
        self,
        activity: str,
        arg: Any,
        *,
        result_type: type,
        timeout: timedelta,
        summary: str,
        heartbeat_timeout: timedelta | None = None,
        quick_timeout: timedelta | None = None,
    ) -> asyncio.Task[Any]:
        """Start a STARTING step: one quick attempt as a local activity, then (if that failed) the regular
        activity, retried for as long as it takes. Both attempts are the same activity, which does its work once
        however often it is asked (see QUICK_STEPS_PATCH)."""

        def durable() -> asyncio.Task[Any]:
            return workflow.start_activity(
                activity,
                arg,
                result_type=result_type,
                start_to_close_timeout=timeout,
                heartbeat_timeout=heartbeat_timeout,
                retry_policy=_RETRY_FOREVER,
                summary=summary,
            )

        if not self._patched(QUICK_STEPS_PATCH):
            return durable()

        async def quick_then_durable() -> Any:
            done, result = await self._once_locally(activity, arg, quick_timeout or timeout, summary, result_type)
            # Whatever failed, the regular activity tries again, and fails for good at once where retrying cannot
            # help, so a Job fails with the same reason however its step ran.
            return result if done else await durable()

        return asyncio.create_task(quick_then_durable())

    async def _once_locally(
        self, activity: str, arg: Any, timeout: timedelta, summary: str, result_type: type | None = None
    ) -> tuple[bool, Any]:
        """One attempt as a local activity, recorded in this workflow task: (True, its result), or (False, None)
        when it failed for any reason (the SDK raises a local activity's own error, not an ActivityError) but
        the cancellation of this workflow task's own work, which is raised."""
        try:
            return True, await workflow.execute_local_activity(
                activity,
                arg,
                result_type=result_type,
                start_to_close_timeout=timeout,
                retry_policy=_QUICK_ATTEMPT,
                summary=summary,
            )
        except FailureError as err:
            if _is_cancellation(err):
                raise
            workflow.logger.info("Job %s: %s failed at its quick attempt: %s", self._job.metadata.id, summary, err)
            return False, None

    async def _tell_ledger(self, signal: str) -> None:
        """Signal the Deployment Target's ledger about this Job (confirm, release)."""
        ledger_id = self._status.lease.ledger_workflow_id if self._status.lease else self._ledger_id
        if ledger_id is None:
            return
        if self._patched(QUICK_STEPS_PATCH):
            # From the worker, in this workflow task; should that fail, by the external signal below.
            done, _ = await self._once_locally(
                engine.TELL_LEDGER,
                LedgerMessage(ledger_workflow_id=ledger_id, signal=signal, job_id=self._job.metadata.id),
                timedelta(seconds=10),
                f"{signal} on Deployment Target {self._job.spec.deployment_target_name}",
            )
            if done:
                return
        try:
            await workflow.get_external_workflow_handle(ledger_id).signal(signal, JobRef(job_id=self._job.metadata.id))
        except Exception as err:  # the ledger is gone (an operator terminated it): it holds nothing of ours
            workflow.logger.warning("could not %s the lease of Job %s: %s", signal, self._job.metadata.id, err)

    @workflow.signal(name="lease_granted", description="From the Deployment Target's ledger.")
    def lease_granted(self, grant: LeaseGrant) -> None:
        self._grant = grant

    @workflow.signal(name="lease_waiting", description="From the Deployment Target's ledger.")
    def lease_waiting(self, notice: LeaseNotice) -> None:
        if self._status.state is JobState.STARTING and self._grant is None:
            self._status.starting_message = notice.message
            self._publish()

    @workflow.signal(name="lease_refused", description="From the Deployment Target's ledger.")
    def lease_refused(self, notice: LeaseNotice) -> None:
        self._refusal = notice.message

    async def _unless_stopped(self, task: asyncio.Task[Any]) -> Any:
        """Await a STARTING activity, unless a request to stop arrives first (then cancel it: None).

        An activity that fails for good fails the Job with the activity's own reason.
        """
        await workflow.wait_condition(lambda: task.done() or self._request is not None)
        if not task.done():
            await _cancelled(task)
            return None
        try:
            return task.result()
        except ActivityError as err:
            self._fail_from_activity(err)
            return None

    # --- STARTED: observe ----------------------------------------------------------------------

    async def _observe(self) -> None:
        assert self._status.engine_job_id is not None
        if self._watched and self._status.watched_by:
            await self._await_news()
            return
        task = workflow.start_activity(
            engine.OBSERVE,
            self._observe_input(OBSERVE_MAX_WAIT.total_seconds()),
            result_type=Observation,
            start_to_close_timeout=OBSERVE_MAX_WAIT + timedelta(minutes=5),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=_RETRY_FOREVER,
            cancellation_type=workflow.ActivityCancellationType.TRY_CANCEL,
            summary="watch the engine job",
        )
        await workflow.wait_condition(
            lambda: (
                task.done()
                or self._request_to_carry_out()
                or (self._successor is not None and self._in_place is not None and self._successor.done())
            )
        )
        if not task.done():
            # A request arrived (or the successor of an in-place update ended): stop watching and act.
            await _cancelled(task)
            return
        try:
            self._apply(task.result())
        except ActivityError as err:
            self._fail_from_activity(err)

    def _observe_input(self, max_wait_seconds: float) -> ObserveInput:
        return ObserveInput(
            metadata=self._job.metadata,
            spec=self._job.spec,
            engine_job_id=self._status.engine_job_id,
            last=self._last_observation,
            max_wait_seconds=max_wait_seconds,
        )

    async def _await_news(self) -> None:
        """Wait for the watcher's next push (or a request); check the engine job itself now and then."""
        if self._generation >= CHECK_TIMER_GENERATION:
            await self._await_news_or_check()
            return
        try:
            await workflow.wait_condition(
                lambda: self._news is not None or self._request_to_carry_out() or self._in_place_successor_ended(),
                timeout=CHECK_SOON if self._last_observation is None else CHECK_EVERY,
                timeout_summary="check the engine job",
            )
        except TimeoutError:
            await self._check_engine_job()
            return
        await self._take_news()

    async def _await_news_or_check(self) -> None:
        """_await_news with the check timer kept until it fires: a timer that fires after the Job ended costs
        nothing, and each cancel costs two events (and cancelled timers strand workflows on the time-skipping
        test server, temporalio/sdk-java#3088). Only the early check (CHECK_SOON) is cancelled, once, when the
        first news comes. A timer that fires early (news came meanwhile) starts one for the rest."""
        now = workflow.now()
        if self._heard_at is None:
            self._heard_at = now
        soon = self._last_observation is None
        due = self._heard_at + (CHECK_SOON if soon else CHECK_EVERY)
        if self._check_timer is not None and self._check_timer_soon and not soon and not self._check_timer.done():
            # The first news came: the early check is moot. Cancelled once, in the task that took the news;
            # left running, it fired 30 s after every start and cost each Job a workflow task more.
            self._check_timer.cancel()
            self._check_timer = None
        if self._check_timer is not None and self._check_timer.done():
            self._check_timer = None
            if now >= due:
                await self._check_engine_job()
                self._heard_at = workflow.now()
                return
        if self._check_timer is None:
            wait = max(due - now, timedelta(seconds=1))
            self._check_timer = asyncio.ensure_future(workflow.sleep(wait, summary="check the engine job"))
            self._check_timer_soon = soon
        timer = self._check_timer
        await workflow.wait_condition(
            lambda: (
                self._news is not None
                or self._request_to_carry_out()
                or self._in_place_successor_ended()
                or timer.done()
            )
        )
        if self._news is not None:
            self._heard_at = workflow.now()
            await self._take_news()

    async def _take_news(self) -> None:
        if self._news is None:
            return
        news, self._news = self._news, None
        if news.phase is EnginePhase.FAILED and news.failure_message is None:
            # The watcher sends no engine error texts (they may quote the Job's secret parameters, and
            # signals pass no scrubbing): the Job's own look reads the root cause, scrubbed.
            await self._check_engine_job()
        else:
            self._take(news)

    async def _check_engine_job(self) -> None:
        """One look at the engine job through the observe activity (no waiting for news)."""
        try:
            checked = await workflow.execute_activity(
                engine.OBSERVE,
                self._observe_input(max_wait_seconds=0),
                result_type=Observation,
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=_RETRY_FOREVER,
                summary="check the engine job",
            )
        except ActivityError as err:
            self._fail_from_activity(err)
            return
        self._take(checked)

    def _take(self, obs: Observation) -> None:
        """Apply an observation unless it is stale (see _stale) or no news."""
        if not self._stale(obs) and obs.differs_from(self._last_observation):
            self._apply(obs)

    def _stale(self, obs: Observation) -> bool:
        """About another engine job (an earlier one of this Job), or older than the observation we hold."""
        last = self._last_observation
        return obs.engine_job_id != self._status.engine_job_id or bool(last and obs.observed_at < last.observed_at)

    @workflow.signal(name=engine.OBSERVED, description="From the Deployment Target's watcher: the engine job changed.")
    def engine_observed(self, obs: Observation) -> None:
        if self._news is None or obs.observed_at >= self._news.observed_at:
            self._news = obs

    def _in_place_successor_ended(self) -> bool:
        return self._successor is not None and self._in_place is not None and self._successor.done()

    def _apply(self, obs: Observation) -> None:
        self._last_observation = obs
        if self._status.state is JobState.STARTING:
            self._status.starting_message = f"submitted; the engine reports {obs.engine_status}"
        if self._status.started is not None:
            self._update_started(obs)
        path = path_to(self._status.state, obs.phase)
        if path and (JobState.STARTED in path or self._status.started is None):
            # Also for a Job that ends straight from STARTING: keep what the engine last reported.
            self._status.starting_message = None
            self._status.started = StartedStatus(transition_time=obs.observed_at if JobState.STARTED in path else None)
            self._update_started(obs)
        if JobState.TERMINATING in path:
            self._event("ENGINE_JOB_STOPPING", self._why_stopping(obs))
        for state in path:
            self._set_state(state, f"the engine reports {obs.engine_status}")
        if JobState.FAILED in path:
            self._status.failure = Failure(
                reason="ENGINE_JOB_FAILED",
                message=obs.failure_message or f"the engine job ended {obs.engine_status}",
                failed_at=obs.observed_at,
            )
        if is_terminal(self._status.state):
            self._request = self._in_place = None
        if not path and obs.phase is EnginePhase.UNKNOWN:
            self._event("ENGINE_UNREACHABLE", obs.unreachable_reason or "the engine API did not answer")
        self._publish()

    def _why_stopping(self, obs: Observation) -> str:
        if self._in_place is not None:
            return f"the engine job was replaced by the update's successor Job {self._status.links.successor_job_id}"
        return (
            f"the engine job is {obs.engine_status} although nobody asked jobctl to stop it "
            "(stopped from the engine's own console or API)"
        )

    def _update_started(self, obs: Observation) -> None:
        self._merge_started(obs.started_fields, obs.observed_at)

    def _merge_started(self, started_fields: dict[str, Any], when: Any) -> None:
        """Merge the engine's own observed fields into status.started without knowing the engine."""
        assert self._status.started is not None
        fields = self._status.started.model_dump(by_alias=True)
        fields.update(started_fields)
        fields["lastUpdateTime"] = when
        self._status.started = StartedStatus.model_validate(fields)

    # --- requests: cancel, drain, update -----------------------------------------------------------

    async def _carry_out_request(self) -> None:
        request = self._request
        assert request is not None
        if request.request != "UPDATE":
            self._status.terminating = request
            if self._status.state is not JobState.TERMINATING:
                self._set_state(JobState.TERMINATING, f"{request.request.lower()} requested")
            self._publish()
        mode = {"CANCEL": StopMode.CANCEL, "DRAIN": StopMode.DRAIN, "UPDATE": StopMode.SUSPEND}[request.request]
        if mode is StopMode.CANCEL and self._cancel_ends_by_push():
            if await self._cancel_watched(request):
                return
            # The quick request failed, or no push came in time: the stop activity below requests the cancel
            # again (a second request of a cancel changes nothing) and watches the engine job until it ends.
        timeout = self._savepoint_timeout()
        task = workflow.start_activity(
            engine.STOP,
            StopInput(
                metadata=self._job.metadata,
                spec=self._job.spec,
                engine_job_id=self._status.engine_job_id,
                mode=mode,
                savepoint_timeout_seconds=timeout,
            ),
            result_type=StopResult,
            start_to_close_timeout=timedelta(seconds=timeout) + timedelta(minutes=10),
            heartbeat_timeout=timedelta(minutes=1),
            retry_policy=_RETRY_FOREVER,
            summary=f"{mode.value.lower()} the engine job",
        )
        # A cancel may overtake a drain or an update in progress (a savepoint that hangs must never
        # leave the job without a way to stop).
        await workflow.wait_condition(lambda: task.done() or self._request is not request)
        if not task.done():
            await _cancelled(task)
            return
        try:
            result: StopResult = task.result()
        except ActivityError as err:
            self._fail_from_activity(err)
            return
        await self._finish_request(request, result)

    def _cancel_ends_by_push(self) -> bool:
        return (
            self._generation >= 2
            and self._watched
            and self._status.watched_by is not None
            and self._status.engine_job_id is not None
        )

    async def _cancel_watched(self, request: TerminatingStatus) -> bool:
        """Request the cancel in this workflow task, then let the watcher's push of the end finish it.

        True when the request is over (or another one replaced it); False to leave it to the stop activity.
        A stop activity waiting for the end would poll the engine for each Job (a thousand Jobs cancelled at
        once: a thousand pollers on one engine API) and cost the Job a workflow task of its own, while the
        watcher pushes the same end anyway.
        """
        done, asked = await self._once_locally(
            engine.STOP,
            StopInput(
                metadata=self._job.metadata,
                spec=self._job.spec,
                engine_job_id=self._status.engine_job_id,
                mode=StopMode.CANCEL,
                wait_for_end=False,
            ),
            timedelta(seconds=30),
            "request the cancel of the engine job",
            StopResult,
        )
        if not done:
            return False
        if asked.phase in ENDED_PHASES:
            if self._generation >= QUICK_ASK_GENERATION:
                # Ended at once (a QUEUED Dataflow job): end the Job in the next workflow task, not in this one.
                # A task that closes the workflow is refused when a signal (the watcher's push) comes meanwhile;
                # Temporal then drops an update accepted in it, and the replayed Job, not knowing it was asked,
                # ended "stopped by nobody" while the caller's cancel failed. A task that only answers the
                # update is never refused, so the answer is kept. Seen in the chaos test once the ask became
                # a quick step: a cancel while starting now mostly finds the job submitted and QUEUED.
                await workflow.sleep(ANSWER_BEFORE_CLOSING, summary="end the Job in a task of its own")
            await self._finish_request(request, asked)
            return True
        if self._status.started is not None:
            self._merge_started(asked.started_fields, workflow.now())
            self._publish()
        # Never cancelled: a timer that fires after the Job ended costs nothing, and cancelling timers strands
        # workflows on the time-skipping test server (temporalio/sdk-java#3088).
        deadline = asyncio.ensure_future(workflow.sleep(CANCEL_PUSH_WAIT, summary="wait for the engine job to end"))
        while True:
            await workflow.wait_condition(
                lambda: self._news is not None or self._request is not request or deadline.done()
            )
            if self._request is not request:
                return True
            if self._news is None:
                return False  # no push in time (the watcher is down or behind)
            news, self._news = self._news, None
            if self._stale(news):
                continue
            if news.phase is EnginePhase.FAILED:
                # The push carries no error text (see _await_news); the stop activity reads how it ended.
                return False
            if news.phase in ENDED_PHASES:
                ended = StopResult(
                    engine_status=news.engine_status,
                    phase=news.phase,
                    message=f"engine job {news.engine_job_id} ended {news.engine_status} after the cancel request",
                    started_fields=news.started_fields,
                )
                await self._finish_request(request, ended)
                return True
            self._last_observation = news
            if self._status.started is not None:
                self._update_started(news)
            self._publish()

    async def _finish_request(self, request: TerminatingStatus, result: StopResult) -> None:
        if result.savepoint_location:
            self._status.savepoint = SavepointStatus(
                location=result.savepoint_location,
                taken_for="UPDATE" if request.request == "UPDATE" else "DRAIN",
                completed_at=workflow.now(),
            )
            self._event("SAVEPOINT_COMPLETED", f"savepoint at {result.savepoint_location}")
        if result.cancelled_instead:
            self._event("DRAIN_FELL_BACK_TO_CANCEL", result.message)
        if self._status.started is not None:
            self._merge_started(result.started_fields, workflow.now())

        if request.request == "UPDATE":
            await self._finish_update(request, result)
            return
        path = path_to(JobState.TERMINATING, result.phase) or [JobState.TERMINATED]
        if JobState.FAILED in path:
            self._status.failure = Failure(
                reason="ENGINE_JOB_FAILED_WHILE_STOPPING", message=result.message, failed_at=workflow.now()
            )
        for state in path:
            self._set_state(state, result.message)
        self._request = None
        self._publish()

    async def _finish_update(self, request: TerminatingStatus, result: StopResult) -> None:
        assert self._update_spec is not None
        if result.replaced_in_place:
            # The engine replaces the job when the successor launches (Dataflow): start the successor now
            # and stay STARTED, watching, until the engine reports this job replaced.
            successor_id = str(workflow.uuid4())
            self._status.links.successor_job_id = successor_id
            self._successor = await self._start_successor(successor_id, replaces=self._status.engine_job_id)
            self._in_place = request
            self._publish()
            return
        if result.savepoint_location is None:
            # The savepoint could not be taken; the engine job was not stopped. Keep it running on its
            # current spec rather than lose its state.
            self._event("UPDATE_NOT_CARRIED_OUT", result.message)
            self._request = self._update_spec = None
            self._publish()
            return
        self._status.terminating = request
        self._set_state(JobState.TERMINATING, "update: stopped with a savepoint")
        successor_id = str(workflow.uuid4())
        self._status.links.successor_job_id = successor_id
        self._set_state(JobState.TERMINATED, f"updated; successor Job {successor_id}")
        self._request = None
        self._publish()

    def _successor_ended_first(self) -> None:
        """The successor of an in-place update closed before it replaced this Job's engine job."""
        self._event(
            "UPDATE_NOT_CARRIED_OUT",
            f"successor Job {self._status.links.successor_job_id} ended before it replaced engine job "
            f"{self._status.engine_job_id} (see its status); this Job keeps running on its current spec",
        )
        self._status.links.successor_job_id = None
        self._request = self._in_place = self._update_spec = self._successor = None
        self._publish()

    async def _start_successor(self, successor_id: str, replaces: str | None = None) -> Any:
        assert self._update_spec is not None
        savepoint = self._status.savepoint.location if self._status.savepoint else None
        successor = successor_of(self._job, self._update_spec, successor_id, savepoint, replaces)
        # ABANDON: the successor outlives this Job, which ends as soon as the successor has started.
        handle = await workflow.start_child_workflow(
            JobWorkflow.run,
            successor,
            id=successor.workflow_id,
            task_queue=workflow.info().task_queue,
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            search_attributes=TypedSearchAttributes(search_attributes_for(successor, JobState.STARTING)),
            static_summary=f"Job {successor.metadata.name or successor_id} (update of {self._job.metadata.id})",
        )
        how = f"restores from {savepoint}" if savepoint else f"replaces engine job {replaces}"
        self._event("SUCCESSOR_STARTED", f"successor Job {successor_id} {how}")
        self._publish()
        return handle

    def _request_to_carry_out(self) -> bool:
        return self._request is not None and self._request is not self._in_place

    def _savepoint_timeout(self) -> int:
        return self._drain_timeout or self._job.spec.savepoint_timeout_seconds

    def _check(self, kind: str) -> None:
        """Raise RequestRejected if a `kind` request cannot be carried out now. Shared by signals,
        update validators and update handlers, so all three always agree."""
        state = self._status.state
        job_id = self._job.metadata.id
        if is_terminal(state):
            raise RequestRejected(f"Job {job_id} is {state}: there is nothing left to {kind.lower()}")
        current = self._request
        if kind == "CANCEL":
            return  # cancel is always possible: it also overtakes a drain or update in progress
        if current is not None:
            raise RequestRejected(
                f"Job {job_id} is already carrying out a {current.request.lower()} request; "
                "wait for it to end, or cancel the Job"
            )
        if state is not JobState.STARTED:
            raise RequestRejected(
                f"Job {job_id} is {state}: a {kind.lower()} needs a running engine job to take a "
                "savepoint from; wait until the Job is STARTED, or cancel it"
            )
        refused = self._last_observation.refuses.get(kind) if self._last_observation else None
        if refused:
            raise RequestRejected(f"Job {job_id}: {refused}")

    def _accept(self, kind: str, reason: str | None) -> str:
        self._check(kind)
        if self._request is not None and self._request.request == "CANCEL":
            return f"Job {self._job.metadata.id} is already being cancelled"
        self._request = TerminatingStatus(request=kind, reason=reason, requested_at=workflow.now())  # type: ignore[arg-type]
        self._event(f"{kind}_REQUESTED", reason or f"{kind.lower()} requested")
        self._publish()
        return f"{kind.lower()} accepted for Job {self._job.metadata.id}"

    def _answer(self, kind: str, reason: str | None) -> RequestAnswer:
        try:
            message = self._accept(kind, reason)
        except RequestRejected as err:
            raise ApplicationError(str(err), type="RequestRejected", non_retryable=True) from None
        return RequestAnswer(job_id=self._job.metadata.id, accepted=True, state=self._status.state, message=message)

    def _validate(self, kind: str, request: Any, model: type[pydantic.BaseModel]) -> None:
        if not isinstance(request, model):  # binary/null and binary/plain payloads skip pydantic entirely
            got = "null" if request is None else type(request).__name__
            raise ApplicationError(
                f"Job {self._job.metadata.id}: a {kind.lower()} takes one JSON object ({model.__name__}), got {got}",
                type="RequestRejected",
                non_retryable=True,
            )
        try:
            self._check(kind)
        except RequestRejected as err:
            raise ApplicationError(str(err), type="RequestRejected", non_retryable=True) from None

    # Signals take whatever was sent (any number of arguments, any encoding) and validate it here, so a
    # malformed one is recorded as rejected instead of failing the workflow task (a wrong argument count
    # raises in the SDK before any handler code runs) or being dropped by the SDK with only a log line.
    # The value is converted back to JSON and validated as the update handlers' payloads are, so a signal
    # and an update with the same payload get the same answer.
    def _decode(self, kind: str, args: tuple[Any, ...], model: type[pydantic.BaseModel]) -> Any:
        wanted = f"a {kind.lower()} signal takes one JSON object ({model.__name__})"
        if len(args) != 1:
            self._reject(kind, f"{wanted}, got {len(args)} arguments")
            return None
        value = args[0]
        if value is None or isinstance(value, bytes):  # sent as binary/null or binary/plain, not JSON
            self._reject(kind, f"{wanted}, got {'null' if value is None else 'bytes'}")
            return None
        converter = workflow.payload_converter()
        try:
            return converter.from_payload(converter.to_payload(value), model)
        except Exception as err:  # the converter wraps pydantic's ValidationError in various ways
            detail = str(err).splitlines()
            self._reject(kind, f"malformed {kind.lower()} payload: {' '.join(detail)[:500]}")
            return None

    def _reject(self, kind: str, why: str) -> None:
        self._event("REQUEST_REJECTED", f"{kind.lower()} signal rejected: {why}")
        self._publish()

    @workflow.signal(name="cancel", description="Cancel the Job: stop the engine job now, no savepoint.")
    def cancel_signal(self, *args: Any) -> None:
        request = self._decode("CANCEL", args, CancelRequest)
        if request is not None:
            self._signal("CANCEL", request.reason)

    @workflow.signal(name="drain", description="Drain the Job: stop with a savepoint after draining.")
    def drain_signal(self, *args: Any) -> None:
        request = self._decode("DRAIN", args, DrainRequest)
        if request is not None and self._signal("DRAIN", request.reason):
            self._drain_timeout = request.savepoint_timeout_seconds

    @workflow.signal(name="update", description="Update the Job: savepoint, then a successor with the new spec.")
    def update_signal(self, *args: Any) -> None:
        request = self._decode("UPDATE", args, UpdateRequest)
        if request is not None and self._update_spec_fits(request) and self._signal("UPDATE", request.reason):
            self._update_spec = request

    def _signal(self, kind: str, reason: str | None) -> bool:
        try:
            self._accept(kind, reason)
            return True
        except RequestRejected as err:
            self._reject(kind, str(err))
            return False

    def _update_spec_fits(self, request: UpdateRequest) -> bool:
        try:
            self._check_update_spec(request)
            return True
        except RequestRejected as err:
            self._reject("UPDATE", str(err))
            return False

    def _check_update_spec(self, request: UpdateRequest) -> None:
        if request.spec.engine != self._job.spec.engine:
            raise RequestRejected(
                f"an update cannot change the engine ({self._job.spec.engine} -> {request.spec.engine}); "
                "start a new Job instead"
            )
        unusable = request.spec.unusable_secrets()
        if unusable:
            raise RequestRejected(
                f"secret parameter(s) {', '.join(unusable)} hold no usable value (sent unencrypted, or copied "
                "as *** from what jobctl shows); send the update with `jobctl update` and JOBCTL_CODEC_KEY set"
            )

    @workflow.update(name="cancel", description="Cancel the Job and get an answer.")
    def cancel_update(self, request: CancelRequest) -> RequestAnswer:
        return self._answer("CANCEL", request.reason)

    @cancel_update.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        self._validate("CANCEL", request, CancelRequest)

    @workflow.update(name="drain", description="Drain the Job and get an answer.")
    def drain_update(self, request: DrainRequest) -> RequestAnswer:
        answer = self._answer("DRAIN", request.reason)
        self._drain_timeout = request.savepoint_timeout_seconds
        return answer

    @drain_update.validator
    def _validate_drain(self, request: DrainRequest) -> None:
        self._validate("DRAIN", request, DrainRequest)

    @workflow.update(name="update", description="Update the Job to a new spec and get an answer.")
    def update_update(self, request: UpdateRequest) -> RequestAnswer:
        answer = self._answer("UPDATE", request.reason)
        self._update_spec = request
        return answer

    @update_update.validator
    def _validate_update(self, request: UpdateRequest) -> None:
        self._validate("UPDATE", request, UpdateRequest)
        try:
            self._check_update_spec(request)
        except RequestRejected as err:
            raise ApplicationError(str(err), type="RequestRejected", non_retryable=True) from None

    # --- queries -------------------------------------------------------------------------------

    @workflow.query(name="status", description="The Job's Ververica-shaped status.")
    def status(self) -> JobStatus:
        return self._status

    @workflow.query(name="job", description="The whole Job resource: metadata, spec and status.")
    def job(self) -> Job:
        # Secret parameters show as "***": query results are not encrypted, and the web UI shows them.
        return self._job.model_copy(update={"status": self._status}).redacted()

    # --- bookkeeping ---------------------------------------------------------------------------

    def _set_state(self, dst: JobState, why: str) -> None:
        src = self._status.state
        self._status.state = transition(src, dst)  # raises on anything the state machine forbids
        self._event("STATE_CHANGED", f"{src} -> {dst}: {why}")
        workflow.upsert_search_attributes([JOB_STATE.value_set(dst.value)])

    def _fail_from_activity(self, err: ActivityError) -> None:
        cause = err.cause
        reason = cause.type if isinstance(cause, ApplicationError) and cause.type else "ACTIVITY_FAILED"
        message = str(cause) if cause else str(err)
        self._status.failure = Failure(reason=reason, message=message, failed_at=workflow.now())
        self._set_state(JobState.FAILED, message)
        self._request = None
        self._publish()

    def _event(self, kind: str, message: str) -> None:
        self._status.events.append(JobEvent(time=workflow.now(), kind=kind, message=message))
        del self._status.events[:-MAX_EVENTS]

    def _should_continue_as_new(self) -> bool:
        # Both are recorded in history (the suggestion, the length at each workflow task), so a replay
        # decides exactly as the run did.
        info = workflow.info()
        if self._watched and info.get_current_history_length() >= MAX_RUN_EVENTS:
            return True
        return info.is_continue_as_new_suggested()

    def _publish(self) -> None:
        """Refresh what the web UI shows: the current details (Markdown)."""
        s = self._status
        meta = self._job.metadata
        lines = [f"## {s.state} · {meta.name or meta.id}"]
        lines.append(
            f"Engine **{self._job.spec.engine}** on Deployment Target **{self._job.spec.deployment_target_name}**"
            + (f" · deployment **{meta.deployment_name}**" if meta.deployment_name else "")
        )
        if s.engine_job_id:
            link = f"[{s.engine_job_id}]({s.engine_ui_url})" if s.engine_ui_url else s.engine_job_id
            lines.append(f"Engine job: {link}")
        if s.starting_message and s.state is JobState.STARTING:
            lines.append(f"Starting: {s.starting_message}")
        if s.started:
            st = s.started
            observed = st.observed_flink_job_status or st.observed_dataflow_job_state
            restarts = (
                f" · restarts {st.observed_flink_job_restarts}" if st.observed_flink_job_restarts is not None else ""
            )
            lines.append(f"Observed: **{observed}**{restarts} · last update {st.last_update_time}")
        if s.savepoint:
            lines.append(f"Savepoint ({s.savepoint.taken_for.lower()}): `{s.savepoint.location}`")
        if s.failure:
            lines.append(f"Failure: **{s.failure.reason}**: {s.failure.message}")
        if s.links.predecessor_job_id or s.links.successor_job_id:
            lines.append(
                f"Links: predecessor {s.links.predecessor_job_id or '-'} · successor {s.links.successor_job_id or '-'}"
            )
        if s.events:
            recent = "\n".join(f"- {e.time:%Y-%m-%d %H:%M:%S} **{e.kind}** {e.message}" for e in s.events[-8:])
            lines.append(f"### Recent events\n{recent}")
        workflow.set_current_details("\n\n".join(lines))


def _is_cancellation(err: FailureError) -> bool:
    return isinstance(err, CancelledError) or isinstance(err.cause, CancelledError)


async def _cancelled(task: asyncio.Task[Any]) -> None:
    """Cancel an activity the workflow no longer waits for, and swallow its cancellation."""
    task.cancel()
    try:
        await task
    except (ActivityError, CancelledError, asyncio.CancelledError):
        pass


def successor_of(
    job: Job, request: UpdateRequest, successor_id: str, savepoint: str | None, replaces: str | None = None
) -> Job:
    """The Job an update starts: same name and deployment, the new spec, restored from the savepoint
    (Flink) or replacing the predecessor's engine job in place (Dataflow)."""
    spec = request.spec.model_copy(update={"restore_from_savepoint": savepoint or request.spec.restore_from_savepoint})
    return Job(
        metadata=JobMetadata(
            id=successor_id,
            name=job.metadata.name,
            deployment_name=job.metadata.deployment_name,
            labels=dict(job.metadata.labels),
        ),
        spec=spec,
        status=JobStatus(links=JobLinks(predecessor_job_id=job.metadata.id, replaces_engine_job_id=replaces)),
    )
