"""The Deployment Target ledger: strict FIFO, never beyond capacity, never twice to one Job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from jobctl.ledger import Ask, Ledger, Resources

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def make_ask(job_id: str, holder: str | None = None, at: int = 0, **resources: int) -> Ask:
    return Ask(
        job_id=job_id,
        holder=holder or f"wf-{job_id}",
        resources=resources,
        asked_at=T0 + timedelta(seconds=at),
    )


def grant_all(ledger: Ledger, engine_free: Resources | None = None) -> list[str]:
    granted = ledger.grantable(engine_free)
    for ask in granted:
        ledger.grant(ask, T0)
    return [ask.job_id for ask in granted]


def queued(ledger: Ledger) -> list[str]:
    return [ask.job_id for ask in ledger.queue]


# --- examples -------------------------------------------------------------------------------------------


def test_fifo_big_head_is_not_overtaken_by_small_asks_that_would_fit() -> None:
    ledger = Ledger(target="flink", capacity={"slots": 4})
    ledger.ask(make_ask("small-0", slots=2))
    assert grant_all(ledger) == ["small-0"]
    ledger.ask(make_ask("big", slots=4))
    ledger.ask(make_ask("small-1", slots=1))
    ledger.ask(make_ask("small-2", slots=2))
    # 2 slots are free: small-1 and small-2 would each fit, but the big ask is at the head.
    assert ledger.free() == {"slots": 2}
    assert ledger.grantable() == []
    assert grant_all(ledger) == []
    assert queued(ledger) == ["big", "small-1", "small-2"]
    ledger.release("small-0")
    assert grant_all(ledger) == ["big"]
    assert queued(ledger) == ["small-1", "small-2"]
    ledger.release("big")
    assert grant_all(ledger) == ["small-1", "small-2"]
    assert ledger.queue == []


def test_grantable_stops_at_first_that_does_not_fit_and_keeps_order() -> None:
    ledger = Ledger(target="flink", capacity={"slots": 5})
    for job_id, slots in [("a", 2), ("b", 2), ("c", 2), ("d", 1)]:
        ledger.ask(make_ask(job_id, slots=slots))
    assert [a.job_id for a in ledger.grantable()] == ["a", "b"]


def test_grant_never_exceeds_capacity_per_key() -> None:
    ledger = Ledger(target="dataflow", capacity={"jobs": 3, "workers": 10})
    ledger.ask(make_ask("a", jobs=1, workers=6))
    ledger.ask(make_ask("b", jobs=1, workers=5))  # jobs fit, workers do not
    ledger.ask(make_ask("c", jobs=1, workers=1))
    assert grant_all(ledger) == ["a"]
    assert ledger.used() == {"jobs": 1, "workers": 6}
    ledger.release("a")
    assert grant_all(ledger) == ["b", "c"]
    assert ledger.used() == {"jobs": 2, "workers": 6}
    for job_id in ["d", "e"]:
        ledger.ask(make_ask(job_id, jobs=1, workers=0))
    assert grant_all(ledger) == ["d"]  # "jobs" is full now
    used = ledger.used()
    assert all(used[key] <= ledger.capacity[key] for key in ledger.capacity)
    assert used == {"jobs": 3, "workers": 6}
    assert ledger.free() == {"jobs": 0, "workers": 4}


def test_asking_twice_queues_once_and_never_leases_twice() -> None:
    ledger = Ledger(target="flink", capacity={"slots": 4})
    ledger.ask(make_ask("a", slots=1))
    ledger.ask(make_ask("a", slots=1, at=1))
    assert queued(ledger) == ["a"]
    assert grant_all(ledger) == ["a"]
    # A retried activity asks again after the grant: nothing is queued, nothing more is leased.
    ledger.ask(make_ask("a", slots=1, at=2))
    assert ledger.queue == []
    assert grant_all(ledger) == []
    assert list(ledger.leases) == ["a"]
    assert ledger.used() == {"slots": 1}


def test_release_of_waiting_job_removes_its_ask_and_frees_nothing() -> None:
    ledger = Ledger(target="flink", capacity={"slots": 2})
    ledger.ask(make_ask("holder", slots=2))
    grant_all(ledger)
    ledger.ask(make_ask("waiter", slots=1))
    ledger.ask(make_ask("other", slots=1))
    assert ledger.release("waiter") == {}
    assert queued(ledger) == ["other"]
    assert list(ledger.leases) == ["holder"]
    assert ledger.free() == {"slots": 0}


def test_release_of_job_that_holds_and_waits_for_nothing_changes_nothing() -> None:
    ledger = Ledger(target="flink", capacity={"slots": 3})
    ledger.ask(make_ask("a", slots=2))
    grant_all(ledger)
    ledger.ask(make_ask("b", slots=2))
    before = ledger.model_copy(deep=True)
    assert ledger.release("stranger") == {}
    assert ledger == before


def test_release_of_holder_returns_what_it_held() -> None:
    ledger = Ledger(target="dataflow", capacity={"jobs": 2, "workers": 8})
    ledger.ask(make_ask("a", jobs=1, workers=3))
    grant_all(ledger)
    assert ledger.release("a") == {"jobs": 1, "workers": 3}
    assert ledger.leases == {}
    assert ledger.release("a") == {}


def test_engine_free_lower_than_ledger_free_limits_grants() -> None:
    # A shared cluster: something outside jobctl uses 6 of the 8 slots.
    ledger = Ledger(target="flink", capacity={"slots": 8})
    ledger.ask(make_ask("a", slots=2))
    ledger.ask(make_ask("b", slots=1))
    assert [a.job_id for a in ledger.grantable(engine_free={"slots": 2})] == ["a"]
    assert [a.job_id for a in ledger.grantable(engine_free={"slots": 1})] == []
    assert [a.job_id for a in ledger.grantable(engine_free={"slots": 3})] == ["a", "b"]
    # Ledger free is the tighter bound when the engine reports more than the ledger has.
    assert [a.job_id for a in ledger.grantable(engine_free={"slots": 100})] == ["a", "b"]
    # Keys the target does not track are ignored.
    assert [a.job_id for a in ledger.grantable(engine_free={"slots": 3, "gpus": 0})] == ["a", "b"]


def test_unconfirmed_leases_are_taken_off_engine_free_confirmed_ones_are_not() -> None:
    ledger = Ledger(target="flink", capacity={"slots": 8})
    ledger.ask(make_ask("a", slots=2))
    assert grant_all(ledger, engine_free={"slots": 4}) == ["a"]
    ledger.ask(make_ask("b", slots=2))
    ledger.ask(make_ask("c", slots=1))
    # The engine still reports 4 free: a's engine job is not running yet, so only 2 are really free.
    assert [x.job_id for x in ledger.grantable(engine_free={"slots": 4})] == ["b"]
    assert [x.job_id for x in ledger.grantable(engine_free={"slots": 3})] == []
    # a confirms: its 2 slots are now in the engine's own figure, which drops to 2.
    ledger.confirm("a")
    assert ledger.leases["a"].confirmed
    assert [x.job_id for x in ledger.grantable(engine_free={"slots": 2})] == ["b"]
    assert [x.job_id for x in ledger.grantable(engine_free={"slots": 3})] == ["b", "c"]
    # Confirming a Job that holds nothing does nothing.
    ledger.confirm("nobody")
    assert set(ledger.leases) == {"a"}


def test_drop_holders_reclaims_leases_and_asks_of_closed_holders_only() -> None:
    ledger = Ledger(target="flink", capacity={"slots": 4})
    ledger.ask(make_ask("a", holder="wf-closed", slots=2))
    ledger.ask(make_ask("b", holder="wf-open", slots=2))
    grant_all(ledger)
    ledger.ask(make_ask("c", holder="wf-closed", slots=1))
    ledger.ask(make_ask("d", holder="wf-open", slots=1))
    ledger.ask(make_ask("e", holder="wf-other-closed", slots=1))
    gone = ledger.drop_holders({"wf-closed", "wf-other-closed", "wf-not-here"})
    assert sorted(gone) == ["a", "c", "e"]
    assert list(ledger.leases) == ["b"]
    assert queued(ledger) == ["d"]
    assert sorted(ledger.holders()) == ["wf-open", "wf-open"]
    assert ledger.drop_holders(set()) == []
    assert grant_all(ledger) == ["d"]


def test_never_fits_explains_an_ask_larger_than_capacity() -> None:
    ledger = Ledger(target="df-prod", capacity={"jobs": 2, "workers": 10})
    assert ledger.never_fits({"jobs": 1, "workers": 10}) is None
    reason = ledger.never_fits({"jobs": 1, "workers": 11})
    assert reason is not None
    assert "11 workers" in reason and "df-prod" in reason and "10" in reason
    reason = ledger.never_fits({"slots": 1})
    assert reason is not None and "slots" in reason and "0" in reason
    # Capacity, not current use: a full target still "fits" eventually.
    ledger.ask(make_ask("a", jobs=2))
    grant_all(ledger)
    assert ledger.never_fits({"jobs": 2}) is None


def test_position_counts_asks_ahead() -> None:
    ledger = Ledger(target="flink", capacity={"slots": 1})
    for job_id in ["a", "b", "c", "d"]:
        ledger.ask(make_ask(job_id, slots=1))
    grant_all(ledger)
    assert ledger.position("a") is None  # leased, not queued
    assert [ledger.position(j) for j in ["b", "c", "d"]] == [0, 1, 2]
    ledger.release("c")
    assert [ledger.position(j) for j in ["b", "c", "d"]] == [0, None, 1]
    assert ledger.position("unknown") is None


# --- stateful -------------------------------------------------------------------------------------------

JOB_IDS = [f"job-{i}" for i in range(6)]
HOLDERS = [f"wf-{i}" for i in range(4)]


class LedgerMachine(RuleBasedStateMachine):
    """Random asks, grants, releases, confirms and reclaims against a simple model of the queue."""

    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger(target="t", capacity={"slots": 1})
        self.order: list[str] = []  # model: job ids in the order their (current) asks were first made
        self.leased: dict[str, Resources] = {}  # model: job id -> resources held
        self.confirmed: set[str] = set()
        self.clock = 0

    @initialize(
        kind=st.sampled_from(["slots", "dataflow"]),
        slots=st.integers(1, 6),
        jobs=st.integers(1, 3),
        workers=st.integers(1, 10),
    )
    def make_target(self, kind: str, slots: int, jobs: int, workers: int) -> None:
        capacity = {"slots": slots} if kind == "slots" else {"jobs": jobs, "workers": workers}
        self.ledger = Ledger(target=kind, capacity=capacity)

    def now(self) -> datetime:
        self.clock += 1
        return T0 + timedelta(seconds=self.clock)

    @rule(job_id=st.sampled_from(JOB_IDS), holder=st.sampled_from(HOLDERS), data=st.data())
    def ask(self, job_id: str, holder: str, data: st.DataObject) -> None:
        capacity = self.ledger.capacity
        # Mostly within capacity (0 included); now and then more than the target has in all, which
        # blocks the head of the queue until that Job is released or reclaimed.
        oversize = data.draw(st.integers(0, 5), label="oversize") == 0

        def amount(key: str) -> int:
            cap = capacity[key]
            return data.draw(st.integers(cap + 1, cap + 2) if oversize else st.integers(0, cap), label=key)

        resources: Resources
        if "slots" in capacity:
            resources = {"slots": amount("slots")}
        else:
            resources = {"jobs": amount("jobs")}
            if data.draw(st.booleans(), label="with workers"):
                resources["workers"] = amount("workers")
        assert (self.ledger.never_fits(resources) is not None) == oversize
        before_queue = list(self.ledger.queue)
        before_leases = self.ledger.model_copy(deep=True).leases
        self.ledger.ask(Ask(job_id=job_id, holder=holder, resources=resources, asked_at=self.now()))
        if job_id in self.leased or job_id in self.order:
            assert self.ledger.queue == before_queue
        else:
            self.order.append(job_id)
            assert self.ledger.queue[:-1] == before_queue
            assert self.ledger.queue[-1].resources == resources
        assert self.ledger.leases == before_leases

    @rule(mode=st.sampled_from(["ledger only", "engine", "arbitrary engine"]), data=st.data())
    def grant_everything_grantable(self, mode: str, data: st.DataObject) -> None:
        engine_free: Resources | None = None
        if mode == "engine":
            # What a shared engine would report: capacity minus use outside jobctl minus confirmed leases.
            engine_free = {}
            for key, cap in self.ledger.capacity.items():
                outside = data.draw(st.integers(0, cap), label=f"outside {key}")
                confirmed = sum(lease.resources.get(key, 0) for lease in self.ledger.leases.values() if lease.confirmed)
                engine_free[key] = max(0, cap - outside - confirmed)
        elif mode == "arbitrary engine":
            keys = ["slots", "jobs", "workers", "gpus"]
            engine_free = data.draw(
                st.fixed_dictionaries({}, optional={k: st.integers(-2, 12) for k in keys}), label="engine_free"
            )
        ledger = self.ledger
        queue_before = list(ledger.queue)
        # What may be granted: ledger free, tightened by what the engine reports minus unconfirmed leases.
        free = ledger.free()
        if engine_free is not None:
            pending: Resources = {}
            for lease in ledger.leases.values():
                if not lease.confirmed:
                    for key, amount in lease.resources.items():
                        pending[key] = pending.get(key, 0) + amount
            for key, amount in engine_free.items():
                if key in free:
                    free[key] = min(free[key], amount - pending.get(key, 0))
        granted = ledger.grantable(engine_free)
        # Grants are of the queue head(s), in order.
        assert granted == queue_before[: len(granted)]
        assert ledger.queue == queue_before  # grantable itself changes nothing
        total: Resources = {}
        for ask in granted:
            for key, amount in ask.resources.items():
                total[key] = total.get(key, 0) + amount
        for key, amount in total.items():
            if amount > 0:
                assert amount <= free.get(key, 0), (key, amount, free)
        # It stops only at an ask that does not fit.
        if len(granted) < len(queue_before):
            nxt = queue_before[len(granted)]
            left = {key: free.get(key, 0) - total.get(key, 0) for key in set(free) | set(total)}
            assert any(amount > left.get(key, 0) for key, amount in nxt.resources.items())
        event(f"granted {len(granted)} with {mode}")
        if engine_free is not None and any(free[k] < ledger.free()[k] for k in free):
            event("engine_free tighter than ledger")
        for ask in granted:
            lease = ledger.grant(ask, self.now())
            assert lease.job_id == ask.job_id and lease.resources == ask.resources and not lease.confirmed
            assert self.order[0] == ask.job_id
            self.order.pop(0)
            self.leased[ask.job_id] = dict(ask.resources)

    @rule(job_id=st.sampled_from(JOB_IDS))
    def release(self, job_id: str) -> None:
        others_leases = {k: v for k, v in self.ledger.model_copy(deep=True).leases.items() if k != job_id}
        others_queue = [a for a in self.ledger.queue if a.job_id != job_id]
        released = self.ledger.release(job_id)
        assert released == self.leased.pop(job_id, {})
        self.confirmed.discard(job_id)
        if job_id in self.order:
            self.order.remove(job_id)
        assert self.ledger.leases == others_leases
        assert self.ledger.queue == others_queue

    @rule(data=st.data())
    def confirm(self, data: st.DataObject) -> None:
        # Mostly a Job that holds a lease; sometimes one that only waits or is unknown (changes nothing).
        job_id = data.draw(st.sampled_from(sorted(self.leased) or JOB_IDS) | st.sampled_from(JOB_IDS), label="confirm")
        queue_before = list(self.ledger.queue)
        self.ledger.confirm(job_id)
        if job_id in self.leased:
            self.confirmed.add(job_id)
        assert self.ledger.queue == queue_before

    @rule(closed=st.sets(st.sampled_from(HOLDERS + ["wf-gone"])))
    def drop_holders(self, closed: set[str]) -> None:
        expected = {lease.job_id for lease in self.ledger.leases.values() if lease.holder in closed}
        expected |= {ask.job_id for ask in self.ledger.queue if ask.holder in closed}
        kept_leases = {k: v for k, v in self.ledger.leases.items() if v.holder not in closed}
        kept_queue = [a for a in self.ledger.queue if a.holder not in closed]
        gone = self.ledger.drop_holders(closed)
        assert len(gone) == len(set(gone))
        assert set(gone) == expected
        assert self.ledger.leases == kept_leases
        assert self.ledger.queue == kept_queue
        for job_id in gone:
            self.leased.pop(job_id, None)
            self.confirmed.discard(job_id)
            if job_id in self.order:
                self.order.remove(job_id)

    @invariant()
    def within_capacity(self) -> None:
        used = self.ledger.used()
        for key, cap in self.ledger.capacity.items():
            assert used[key] <= cap, (key, used, self.ledger.capacity)
        free = self.ledger.free()
        assert all(amount >= 0 for amount in free.values())

    @invariant()
    def nobody_both_leased_and_queued(self) -> None:
        assert not set(self.ledger.leases) & {ask.job_id for ask in self.ledger.queue}

    @invariant()
    def nobody_queued_twice(self) -> None:
        ids = queued(self.ledger)
        assert len(ids) == len(set(ids))

    @invariant()
    def fifo_preserved(self) -> None:
        assert queued(self.ledger) == self.order
        times = [ask.asked_at for ask in self.ledger.queue]
        assert times == sorted(times)

    @invariant()
    def leases_match_model(self) -> None:
        assert {k: v.resources for k, v in self.ledger.leases.items()} == self.leased
        assert {k for k, v in self.ledger.leases.items() if v.confirmed} == self.confirmed
        for job_id, lease in self.ledger.leases.items():
            assert lease.job_id == job_id

    @invariant()
    def positions(self) -> None:
        for index, job_id in enumerate(self.order):
            assert self.ledger.position(job_id) == index
        for job_id in self.leased:
            assert self.ledger.position(job_id) is None


TestLedgerStateful = LedgerMachine.TestCase
TestLedgerStateful.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
