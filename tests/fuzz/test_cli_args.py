"""`jobctl` arguments: random and well-formed argv for start, status, get, list, cancel, drain, update, targets.

Temporal is pointed at a port where nothing listens. Whatever the arguments, the CLI answers with a message
and an exit code (non-zero unless it only printed help or an offline targets list), never an uncaught
exception; well-formed commands that need Temporal say `cannot reach Temporal at <address>`, quickly.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import jobctl.cli
from jobctl.cli import app
from jobctl.models import Failure, JobEvent, JobStatus
from jobctl.states import JobState
from jobctl.temporal_server import free_port
from tests.fuzz.profile import fuzz
from tests.fuzz.strategies import NASTY, huge, numbers, text

COMMANDS = ["start", "status", "get", "list", "cancel", "drain", "update", "targets"]
OPTIONS = [
    "--json", "--id", "--reason", "--savepoint-timeout", "--state", "--deployment", "--limit", "--file",
    "--offline", "--no-offline", "--help", "--", "-x", "--json=1", "--limit=0", "--state=", "--reason=",
]  # fmt: skip
SPEC = {
    "engine": "FLINK",
    "deploymentTargetName": "local",
    "artifact": {"kind": "JAR", "jarUri": "job.jar", "entryClass": "example.Job"},
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Files the arguments may name: good and bad Job, spec and targets files, and things that are no file."""
    folder = tmp_path_factory.mktemp("cli files")
    contents: dict[str, Any] = {
        "job.yaml": yaml.safe_dump({"kind": "Job", "metadata": {"name": "fuzz"}, "spec": SPEC}),
        "job.json": json.dumps({"spec": SPEC}),
        "spec.yaml": yaml.safe_dump(SPEC),
        "bad-job.yaml": yaml.safe_dump({"spec": {**SPEC, "parallelism": 0}}),
        "bad-spec.json": json.dumps({**SPEC, "engine": "SPARK"}),
        "list.yaml": "- 1\n- 2\n",
        "targets.yaml": "targets:\n  - {name: local, kind: flink-session, restUrl: 'http://localhost:8081', slots: 4}",
        "bad-targets.yaml": "targets:\n  - {name: local, kind: flink-session, slots: -4}\n",
        "broken.yaml": "spec: [unclosed\n",
        "empty.yaml": "",
        "binary.bin": b"\xff\xfe\x00\x01",
    }
    for name, content in contents.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    named = {name: str(folder / name) for name in contents}
    return named | {"missing": str(folder / "missing.yaml"), "folder": str(folder)}


@pytest.fixture(scope="module")
def temporal_address() -> Iterator[str]:
    yield f"127.0.0.1:{free_port()}"  # nothing listens there


job_refs = st.uuids().map(str) | st.uuids().map(lambda u: f"job-{u}") | st.uuids().map(lambda u: u.hex.upper())
states = st.sampled_from(["STARTED", "started", "FAILED", "RUNNING", "", "STARTED'"])


@st.composite
def well_formed(draw: st.DrawFn, files: dict[str, str]) -> list[str]:
    """Arguments that are right in every way: only the unreachable Temporal can stop them."""
    ref = draw(job_refs)
    reason = [f"--reason={draw(st.text(max_size=50))}"] if draw(st.booleans()) else []
    command = draw(st.sampled_from(COMMANDS))
    if command == "start":
        job_id = ["--id", draw(job_refs)] if draw(st.booleans()) else []
        return ["start", files[draw(st.sampled_from(["job.yaml", "job.json"]))], *job_id]
    if command == "list":
        state = ["--state", draw(st.sampled_from(["STARTED", "failed"]))] if draw(st.booleans()) else []
        deployment = [f"--deployment={draw(st.text(max_size=20))}"] if draw(st.booleans()) else []
        return ["list", *state, *deployment, "--limit", str(draw(st.integers(1, 1000)))]
    if command == "drain":
        timeout = ["--savepoint-timeout", str(draw(st.integers(1, 7 * 24 * 3600)))] if draw(st.booleans()) else []
        return ["drain", ref, *reason, *timeout]
    if command == "update":
        return ["update", ref, files[draw(st.sampled_from(["job.yaml", "spec.yaml"]))], *reason]
    if command == "targets":
        return ["targets", "--file", files["targets.yaml"], *draw(st.lists(st.just("--json"), max_size=1))]
    return [command, ref, *(reason if command == "cancel" else [])]


def argvs(files: dict[str, str]) -> st.SearchStrategy[tuple[list[str], bool]]:
    """(argv, well-formed?): well-formed commands, or commands with random, missing and extra arguments."""
    token = (
        text
        | st.sampled_from(OPTIONS)
        | st.sampled_from(sorted(files.values()))
        | job_refs
        | states
        | numbers.map(str)
        | st.sampled_from(NASTY)
    )
    good = well_formed(files).map(lambda argv: (argv, True))
    return good | st.builds(random_argv, st.lists(token, max_size=6), st.none() | st.sampled_from(COMMANDS))


def random_argv(args: list[str], command: str | None) -> tuple[list[str], bool]:
    if command:
        args = [command, *args]
    # Commands that run servers or print secrets are not what this test is about.
    if args and args[0] in ("worker", "dev", "dataflow-emulator", "codec-key"):
        args = args[1:]
    return args, False


def test_jobctl_arguments(files: dict[str, str], temporal_address: str, cases: Any, cli: CliRunner) -> None:
    ran = cases("jobctl arguments (CliRunner, Temporal unreachable)")
    env = {"TEMPORAL_ADDRESS": temporal_address, "JOBCTL_TARGETS": files["targets.yaml"], "JOBCTL_CODEC_KEY": None}

    @fuzz()
    @given(case=argvs(files))
    def check(case: tuple[list[str], bool]) -> None:
        argv, well_formed = case
        ran.add("jobctl arguments (CliRunner, Temporal unreachable)")
        started = time.monotonic()
        result = cli.invoke(app, argv, env=env)
        took = time.monotonic() - started
        shown = result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            f"jobctl {argv} raised {result.exception!r}"
        )
        assert "Traceback" not in shown, shown
        assert took < 5, f"jobctl {argv} took {took:.1f}s"
        helped = "--help" in argv[: argv.index("--")] if "--" in argv else "--help" in argv
        if result.exit_code == 0:
            assert helped or not argv or (argv[0] == "targets" and "--offline" in argv), (argv, shown)
            return
        assert shown.strip(), f"jobctl {argv} exited {result.exit_code} without a word"
        assert "error" in shown.lower() or "usage" in shown.lower(), shown
        if "cannot reach Temporal" in shown:
            assert f"cannot reach Temporal at {temporal_address}" in shown, shown
        if well_formed:
            assert result.exit_code == 1 and f"cannot reach Temporal at {temporal_address}" in shown, (argv, shown)

    check()


def test_an_unknown_job_id_is_named_with_the_expected_form(cli: CliRunner) -> None:
    bad = f"{uuid.uuid4()}x"
    result = cli.invoke(app, ["status", bad])
    assert result.exit_code == 1 and f"'{bad}' is not a Job id" in result.output


@fuzz(cases_per_example=5)  # a side check, 200 cases: the rendering of what a Job recorded
@given(kind=text, message=text | huge(300), where=text)
def test_status_shows_what_a_job_recorded_as_it_is(cli: CliRunner, kind: str, message: str, where: str) -> None:
    """Event messages quote user input (reasons, rejected payloads) and engine text: `jobctl status` must
    print them, whatever they hold (rich markup such as "[/]" included), never crash on them."""
    now = datetime.now(UTC)
    shown = JobStatus(
        state=JobState.FAILED,
        engine_ui_url=where,
        failure=Failure(reason=kind, message=message),
        events=[JobEvent(time=now, kind=kind, message=message), JobEvent(time=now, kind="X", message="[/]")],
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jobctl.cli, "_query", lambda ref, name, result_type: shown)
        result = cli.invoke(app, ["status", str(uuid.uuid4())])
    assert result.exception is None and result.exit_code == 0, (result.exception, result.output)
    assert "[/]" in result.output
