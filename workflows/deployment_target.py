"""DeploymentTargetWorkflow: the durable ledger of one Deployment Target (workflow id deployment-target-<name>).

Jobs ask for what their spec needs (signal `ask`, sent with signal-with-start by the ask activity); the
ledger grants in FIFO order up to the target's capacity, also checking what the engine itself reports free
(a shared cluster may run jobs outside jobctl), and tells each Job by signal. Jobs release on every exit;
a lease whose holder closed any other way (terminated by an operator, timed out) is reclaimed by a periodic
check. The ledger lives in Temporal, so it survives worker crashes and server restarts.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from jobctl import engine
    from jobctl.engine import CapacitySnapshot, HolderList, JobRef, LeaseAnswer, LeaseGrant, LeaseNotice
    from jobctl.ledger import Ask, Lease, Ledger, describe
    from jobctl.models import Model

# Grants and waiting notices go out together, in one workflow task; older runs replay one after the other.
CONCURRENT_SIGNALS_PATCH = "ledger-signals-together"
# Grants and notices are sent in the background: the ledger goes on admitting while they travel (each
# delivery costs the ledger a workflow task of its own); older runs waited for each round's deliveries.
# Also: the ledger's timers are never cancelled (a change wakes it without touching them), which costs
# nothing and keeps the time-skipping test server from stranding the ledger (temporalio/sdk-java#3088).
BACKGROUND_SIGNALS_PATCH = "ledger-signals-in-background"
# A capacity snapshot without the engine's own free figure is reused this long (patched: older runs ask each round).
CAPACITY_CACHE_PATCH = "ledger-capacity-cached"
# Before continuing as new the ledger keeps answering asks until no handler is left; older runs only waited,
# and waited forever when an ask came in with the suggestion to continue as new (it was never answered).
ANSWER_BEFORE_CONTINUING_PATCH = "ledger-answers-before-continuing"
CAPACITY_CACHE = timedelta(seconds=60)
# How often the ledger re-checks an engine that had no room (a shared cluster freeing slots by itself).
RECHECK = timedelta(seconds=5)
_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


class LedgerInput(Model):
    ledger: Ledger
    # How often leases of closed holders are looked for: the bound on how long a leaked lease lives.
    reclaim_interval_seconds: float = 60.0
    task_queue: str | None = None


def ledger_workflow_id(target: str) -> str:
    return f"deployment-target-{target}"


def ledger_task_queue(task_queue: str) -> str:
    """Where ledgers run: a task queue of their own, so a ledger's workflow tasks never wait behind those of
    the many Jobs it admits (every worker polls both; ledgers started earlier keep the Jobs' queue)."""
    return f"{task_queue}-ledgers"


@workflow.defn(name="DeploymentTargetWorkflow")
class DeploymentTargetWorkflow:
    @workflow.init
    def __init__(self, request: LedgerInput) -> None:
        self._input = request
        self._ledger = request.ledger
        self._changed = True
        self._told: dict[str, str] = {}  # the last waiting message each Job was sent
        self._snapshot: CapacitySnapshot | None = None
        self._snapshot_until = workflow.now()
        self._sending = 0  # signals to Jobs still on their way
        # Asks sent as updates (request_lease), by Job id: None until an admission round answers them.
        self._answers: dict[str, LeaseAnswer | None] = {}
        self._background = False
        self._timer: asyncio.Task[None] | None = None  # the pending wake-up, and when it is due
        self._timer_due = workflow.now()

    @workflow.run
    async def run(self, request: LedgerInput) -> None:
        self._background = workflow.patched(BACKGROUND_SIGNALS_PATCH)
        reclaim_every = timedelta(seconds=self._input.reclaim_interval_seconds)
        next_reclaim = workflow.now() + reclaim_every
        while True:
            if self._ledger.queue or self._answers:
                await self._admit()
            timeout = None
            if self._ledger.queue:
                timeout = RECHECK
            elif self._ledger.leases:
                timeout = max(next_reclaim - workflow.now(), timedelta(seconds=1))
            self._changed = False
            if self._background:
                await self._wait(timeout)
            else:
                try:
                    await workflow.wait_condition(lambda: self._changed, timeout=timeout)
                except TimeoutError:
                    pass
            if self._ledger.holders() and workflow.now() >= next_reclaim:
                await self._reclaim()
                next_reclaim = workflow.now() + reclaim_every
            if workflow.info().is_continue_as_new_suggested():
                if workflow.patched(ANSWER_BEFORE_CONTINUING_PATCH):
                    await self._answer_until_handlers_finished()
                else:
                    await workflow.wait_condition(self._settled)
                workflow.continue_as_new(
                    LedgerInput(
                        ledger=self._ledger,
                        reclaim_interval_seconds=self._input.reclaim_interval_seconds,
                        task_queue=self._input.task_queue,
                    )
                )

    async def _answer_until_handlers_finished(self) -> None:
        """Before continuing as new: every ask sent by update must have its answer, and asks go on arriving
        meanwhile (a busy target gets one with nearly every workflow task), so keep answering them until
        none is left, and no signal is still on its way."""
        while not self._settled():
            if any(answer is None for answer in self._answers.values()):
                await self._admit()
            self._changed = False
            await workflow.wait_condition(lambda: self._changed or self._settled())

    def _settled(self) -> bool:
        """No handler running and no signal on its way: nothing a continued run would lose."""
        return workflow.all_handlers_finished() and not self._sending

    async def _wait(self, timeout: timedelta | None) -> None:
        """Until something changes, or `timeout` passes. The timer is kept, never cancelled: a later wait
        reuses it when it is due soon enough, else starts an earlier one and leaves the old one to fire."""
        if timeout is not None and (self._timer is None or self._timer_due > workflow.now() + timeout):
            self._timer = asyncio.create_task(workflow.sleep(timeout))
            self._timer_due = workflow.now() + timeout
        timer = self._timer
        await workflow.wait_condition(lambda: self._changed or (timer is not None and timer.done()))
        if timer is not None and timer.done():
            self._timer = None

    async def _capacity(self) -> CapacitySnapshot:
        """The target's capacity. An engine that reports no free figure of its own (Dataflow: only the declared
        limits count) is asked at most once a minute, not once per admission round."""
        cached = self._snapshot
        if cached and cached.engine_free is None and workflow.now() < self._snapshot_until:
            if workflow.patched(CAPACITY_CACHE_PATCH):
                return cached
        snapshot: CapacitySnapshot = await workflow.execute_activity(
            engine.TARGET_CAPACITY,
            self._ledger.target,
            result_type=CapacitySnapshot,
            # Short: an attempt lost with a crashed worker must not hold up admission for long.
            start_to_close_timeout=timedelta(seconds=15),
            retry_policy=_RETRY,
            summary=f"capacity of {self._ledger.target}",
        )
        self._snapshot, self._snapshot_until = snapshot, workflow.now() + CAPACITY_CACHE
        return snapshot

    async def _admit(self) -> None:
        snapshot = await self._capacity()
        self._ledger.capacity = snapshot.capacity
        for ask in list(self._ledger.queue):
            why = self._ledger.never_fits(ask.resources)
            if why:
                self._ledger.release(ask.job_id)
                refusal = LeaseNotice(message=why, refused=True)
                if ask.job_id in self._answers:
                    self._answers[ask.job_id] = LeaseAnswer(refused=refusal)
                else:
                    await self._tell(ask.holder, "lease_refused", refusal)
        grants = []  # those told by signal
        for ask in self._ledger.grantable(snapshot.engine_free):
            lease = self._ledger.grant(ask, workflow.now())
            self._told.pop(ask.job_id, None)
            if ask.job_id in self._answers:
                # Asked by update (also of a ledger run started on older code, from upgraded workers): the
                # answer carries the grant, no signal.
                self._answers[ask.job_id] = LeaseAnswer(grant=self._grant_of(lease, snapshot))
            else:
                grants.append((ask, self._grant_of(lease, snapshot if self._background else None)))
        self._answer_the_rest(snapshot)
        if self._background:
            for ask, grant in grants:
                self._send(ask.holder, "lease_granted", grant, gone=ask.job_id)
            self._tell_waiting_in_background(snapshot)
            return
        if workflow.patched(CONCURRENT_SIGNALS_PATCH):
            # All grants in one workflow task: one signal each waiting for the last would cost a task per Job.
            told = await asyncio.gather(*(self._tell(ask.holder, "lease_granted", grant) for ask, grant in grants))
        else:
            told = [await self._tell(ask.holder, "lease_granted", grant) for ask, grant in grants]
        for (ask, _), ok in zip(grants, told, strict=True):
            if not ok:
                self._ledger.release(ask.job_id)  # the holder is gone: nothing to hold for it
        await self._tell_waiting(snapshot)

    def _grant_of(self, lease: Lease, snapshot: CapacitySnapshot | None) -> LeaseGrant:
        """The grant a Job is told. With the round's snapshot it says whether the Job must confirm; without
        (grants by signal of runs started on older code) it keeps the old default, confirm."""
        grant = LeaseGrant(
            target=self._ledger.target,
            resources=lease.resources,
            granted_at=lease.granted_at,
            message=f"{describe(lease.resources)} granted on Deployment Target {self._ledger.target}",
        )
        if snapshot is not None:
            # Confirming tells the ledger that the engine's own free figure now counts this lease, and makes a
            # lease taken over from a predecessor the Job's own: without either, it would change nothing.
            grant.confirm = not lease.confirmed and (snapshot.engine_free is not None or lease.taken_from is not None)
        return grant

    def _waiting_message(self, ask: Ask, position: int, snapshot: CapacitySnapshot) -> str:
        return (
            f"waiting for {describe(ask.resources)} on Deployment Target {self._ledger.target}, "
            f"{position} job{'s' if position != 1 else ''} ahead ({describe(self._ledger.free())} free"
            + (f"; {snapshot.engine_note}" if snapshot.engine_note else "")
            + ")"
        )

    def _answer_the_rest(self, snapshot: CapacitySnapshot) -> None:
        """Answer every ask sent by update that this round did not grant: queued (where), or already
        holding its lease (a Job asking again after its answer was lost)."""
        for job_id in [j for j, answer in self._answers.items() if answer is None]:
            lease = self._ledger.leases.get(job_id)
            position = self._ledger.position(job_id)
            if lease is not None:
                self._answers[job_id] = LeaseAnswer(grant=self._grant_of(lease, snapshot))
            elif position is not None:
                ask = self._ledger.queue[position]
                message = self._waiting_message(ask, position, snapshot)
                self._told[job_id] = message
                self._answers[job_id] = LeaseAnswer(waiting=LeaseNotice(message=message))
            else:  # released meanwhile (its Job ended): there is nothing to grant
                self._answers[job_id] = LeaseAnswer(
                    refused=LeaseNotice(message=f"Job {job_id} no longer asks Deployment Target {self._ledger.target}")
                )

    def _waiting_notices(self, snapshot: CapacitySnapshot) -> list[tuple[Ask, LeaseNotice]]:
        """What each of the first 20 queued Jobs should be told of its place, where that changed."""
        notices = []
        for position, ask in enumerate(self._ledger.queue[:20]):
            message = self._waiting_message(ask, position, snapshot)
            if self._told.get(ask.job_id) != message:
                self._told[ask.job_id] = message
                notices.append((ask, LeaseNotice(message=message)))
        return notices

    def _tell_waiting_in_background(self, snapshot: CapacitySnapshot) -> None:
        for ask, notice in self._waiting_notices(snapshot):
            self._send(ask.holder, "lease_waiting", notice)

    def _send(self, holder: str, signal: str, payload: Model, gone: str | None = None) -> None:
        """Signal a Job without waiting for the delivery; if the Job is gone and `gone` names what it was
        granted, release that (nothing to hold for a closed Job)."""

        async def deliver() -> None:
            try:
                if not await self._tell(holder, signal, payload) and gone is not None:
                    self._ledger.release(gone)
                    self._changed = True
            finally:
                self._sending -= 1

        self._sending += 1
        asyncio.create_task(deliver())

    async def _tell_waiting(self, snapshot: CapacitySnapshot) -> None:
        notices = [self._tell(ask.holder, "lease_waiting", notice) for ask, notice in self._waiting_notices(snapshot)]
        if workflow.patched(CONCURRENT_SIGNALS_PATCH):
            await asyncio.gather(*notices)
        else:
            for notice in notices:
                await notice

    async def _tell(self, holder: str, signal: str, payload: Model) -> bool:
        """Signal a Job; False if it is gone (closed or never existed)."""
        try:
            await workflow.get_external_workflow_handle(holder).signal(signal, payload)
            return True
        except ApplicationError:
            return False
        except Exception:  # the SDK raises for a signal to a closed or unknown workflow
            return False

    async def _reclaim(self) -> None:
        closed: HolderList = await workflow.execute_activity(
            engine.CLOSED_HOLDERS,
            HolderList(holders=sorted(set(self._ledger.holders()))),
            result_type=HolderList,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=_RETRY,
            summary="find leases of closed Jobs",
        )
        if closed.holders:
            gone = self._ledger.drop_holders(set(closed.holders))
            for job_id in gone:
                self._told.pop(job_id, None)
            workflow.logger.info("reclaimed the leases of closed Jobs %s on %s", gone, self._ledger.target)
            self._changed = True

    @workflow.signal(name="ask")
    def ask(self, ask: Ask) -> None:
        self._ledger.ask(ask)
        self._changed = True

    @workflow.update(
        name="request_lease", description="A Job asks for what it needs; answered by the next admission round."
    )
    async def request_lease(self, ask: Ask) -> LeaseAnswer:
        self._ledger.ask(ask)
        self._answers[ask.job_id] = None
        self._changed = True
        await workflow.wait_condition(lambda: self._answers.get(ask.job_id) is not None)
        return self._answers.pop(ask.job_id) or LeaseAnswer()

    @workflow.signal(name="release")
    def release(self, ref: JobRef) -> None:
        self._ledger.release(ref.job_id)
        self._told.pop(ref.job_id, None)
        self._changed = True

    @workflow.signal(name="confirm")
    def confirm(self, ref: JobRef) -> None:
        self._ledger.confirm(ref.job_id)

    @workflow.query(name="ledger", description="Capacity, leases (which Job holds what) and the queue.")
    def ledger(self) -> Ledger:
        return self._ledger
