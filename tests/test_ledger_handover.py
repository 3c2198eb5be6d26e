"""An update's successor takes over its predecessor's lease (pure ledger)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from jobctl.ledger import Ask, Ledger

NOW = datetime.now(UTC)


def ask(job: str, slots: int, takes_over: str | None = None) -> Ask:
    return Ask(job_id=job, holder=f"job-{job}", resources={"slots": slots}, asked_at=NOW, takes_over=takes_over)


def grant_all(ledger: Ledger) -> list[str]:
    return [ledger.grant(a, NOW).job_id for a in ledger.grantable()]


def full_ledger() -> Ledger:
    ledger = Ledger(target="local", capacity={"slots": 4})
    ledger.ask(ask("a", 2))
    ledger.ask(ask("b", 2))
    assert grant_all(ledger) == ["a", "b"]
    ledger.confirm("a")
    ledger.ask(ask("c", 2))  # waits: the target is full
    return ledger


def test_the_successor_goes_first_and_gets_the_predecessors_resources() -> None:
    ledger = full_ledger()
    ledger.ask(ask("a2", 2, takes_over="a"))
    assert [q.job_id for q in ledger.queue] == ["a2", "c"]
    assert grant_all(ledger) == ["a2"]
    assert sorted(ledger.leases) == ["a2", "b"] and [q.job_id for q in ledger.queue] == ["c"]


def test_a_bigger_successor_still_cannot_exceed_capacity() -> None:
    ledger = full_ledger()
    ledger.ask(ask("a2", 3, takes_over="a"))
    assert grant_all(ledger) == []  # 2 free after the handover, 3 needed: it waits at the head
    ledger.release("b")
    assert grant_all(ledger) == ["a2"]
    assert ledger.used() == {"slots": 3}


def test_a_successor_that_never_ran_gives_the_lease_back() -> None:
    ledger = full_ledger()
    ledger.ask(ask("a2", 2, takes_over="a"))
    grant_all(ledger)
    ledger.release("a2")  # its launch was refused: the predecessor still runs, and holds its slots again
    assert sorted(ledger.leases) == ["a", "b"] and [q.job_id for q in ledger.queue] == ["c"]
    ledger.release("a2")
    assert sorted(ledger.leases) == ["a", "b"]


def test_a_withdrawn_successor_ask_gives_the_lease_back() -> None:
    ledger = full_ledger()
    ledger.ask(ask("a2", 2, takes_over="a"))
    ledger.release("a2")
    assert sorted(ledger.leases) == ["a", "b"]


def test_once_the_successor_ran_the_handover_is_final() -> None:
    ledger = full_ledger()
    ledger.ask(ask("a2", 2, takes_over="a"))
    grant_all(ledger)
    ledger.confirm("a2")
    ledger.release("a2")
    assert sorted(ledger.leases) == ["b"]
    assert grant_all(ledger) == ["c"]


def test_taking_over_a_lease_that_is_not_there_is_a_plain_ask() -> None:
    ledger = full_ledger()
    ledger.ask(ask("x2", 2, takes_over="x"))
    assert [q.job_id for q in ledger.queue] == ["c", "x2"]


def test_giving_a_lease_back_never_exceeds_capacity() -> None:
    """Found by the property test: the predecessor's resources stay counted until the successor runs."""
    ledger = Ledger(target="local", capacity={"slots": 4})
    ledger.ask(ask("a", 4))
    grant_all(ledger)
    ledger.ask(ask("b", 2, takes_over="a"))
    assert grant_all(ledger) == ["b"]
    ledger.ask(ask("c", 2))
    assert grant_all(ledger) == []  # a's 4 slots are still reserved: b has not run yet
    assert ledger.used() == {"slots": 4}
    ledger.release("b")
    assert sorted(ledger.leases) == ["a"] and ledger.used() == {"slots": 4}
    assert grant_all(ledger) == []


def test_the_successors_run_frees_what_the_predecessor_held_beyond_its_own_needs() -> None:
    ledger = Ledger(target="local", capacity={"slots": 4})
    ledger.ask(ask("a", 4))
    grant_all(ledger)
    ledger.ask(ask("b", 2, takes_over="a"))
    grant_all(ledger)
    ledger.ask(ask("c", 2))
    ledger.confirm("b")
    assert grant_all(ledger) == ["c"]
    assert ledger.used() == {"slots": 4}


def test_reclaim_leaves_nothing_of_closed_holders() -> None:
    ledger = Ledger(target="local", capacity={"slots": 4})
    ledger.ask(ask("a", 4))
    grant_all(ledger)
    ledger.ask(ask("b", 4, takes_over="a"))
    grant_all(ledger)
    gone = ledger.drop_holders({"job-a", "job-b"})
    assert sorted(gone) == ["a", "b"] and ledger.leases == {} and ledger.used() == {"slots": 0}


# Random sequences that include handovers: capacity is never exceeded, nothing is both held and queued,
# and reclaiming a set of closed holders leaves nothing of theirs.
JOBS = ["a", "b", "c", "d", "e"]
op = st.one_of(
    st.tuples(st.just("ask"), st.sampled_from(JOBS), st.integers(0, 5), st.none() | st.sampled_from(JOBS)),
    st.tuples(st.just("grant"), st.none() | st.integers(0, 4)),
    st.tuples(st.just("release"), st.sampled_from(JOBS)),
    st.tuples(st.just("confirm"), st.sampled_from(JOBS)),
    st.tuples(st.just("drop"), st.sets(st.sampled_from(JOBS))),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(op, max_size=40))
def test_handovers_keep_the_ledger_within_capacity(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    ledger = Ledger(target="local", capacity={"slots": 4})
    for step in ops:
        if step[0] == "ask":
            _, job, slots, takes_over = step
            if slots <= 4 and takes_over != job:
                ledger.ask(ask(job, slots, takes_over))
        elif step[0] == "grant":
            engine_free = None if step[1] is None else {"slots": step[1]}
            for granted in ledger.grantable(engine_free):
                ledger.grant(granted, NOW)
        elif step[0] == "release":
            ledger.release(step[1])
        elif step[0] == "confirm":
            ledger.confirm(step[1])
        else:
            closed = {f"job-{j}" for j in step[1]}
            ledger.drop_holders(closed)
            assert not any(h in closed for h in ledger.holders())
        assert ledger.used()["slots"] <= 4, ledger
        queued = [q.job_id for q in ledger.queue]
        assert len(queued) == len(set(queued))
        assert not set(queued) & set(ledger.leases)
