"""An update's successor takes over its predecessor's lease (pure ledger)."""

from __future__ import annotations

from datetime import UTC, datetime

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
