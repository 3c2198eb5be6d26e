"""The `cases` fixture counts the cases each entry point ran; a test that passed with fewer than
JOBCTL_FUZZ_CASES fails, and the session ends with one line per entry point."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import typer
import typer.testing
from typer.testing import CliRunner

from jobctl.cli import app
from tests.fuzz.profile import CASES, PROFILE

SUMMARY: list[str] = []


@dataclass
class Cases:
    counts: dict[str, int]
    started: float = field(default_factory=time.monotonic)

    def add(self, entry: str, n: int = 1) -> None:
        self.counts[entry] += n  # KeyError: the test did not declare this entry point


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.fuzz_passed = report.passed  # type: ignore[attr-defined]


@pytest.fixture
def cases(request: pytest.FixtureRequest) -> Iterator[Callable[..., Cases]]:
    made: dict[tuple[str, ...], Cases] = {}

    def declare(*entries: str) -> Cases:
        # Called by every example of a hypothesis test: all of them count into the same Cases.
        return made.setdefault(entries, Cases(dict.fromkeys(entries, 0)))

    yield declare
    for ran in made.values():
        elapsed = time.monotonic() - ran.started
        for entry, n in ran.counts.items():
            line = f"{entry}: {n} cases in {elapsed:.1f}s"
            SUMMARY.append(line)
            print(f"\nfuzz: {line}")
    if getattr(request.node, "fuzz_passed", False):
        # Hypothesis stops early if it cannot find more distinct cases: then the entry point was not fuzzed enough.
        short = {e: n for ran in made.values() for e, n in ran.counts.items() if n < CASES}
        assert not short, f"fewer than {CASES} cases ran: {short}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARY:
        terminalreporter.section(f"fuzz cases (hypothesis profile max_examples={PROFILE.max_examples})")
        for line in SUMMARY:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def cli() -> Iterator[CliRunner]:
    """A CliRunner for jobctl that builds its click command once: typer rebuilds it on every invoke, which
    would be most of a case's time."""
    command = typer.main.get_command(app)
    build = typer.testing._get_command
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            typer.testing, "_get_command", lambda typer_app: command if typer_app is app else build(typer_app)
        )
        yield CliRunner()
