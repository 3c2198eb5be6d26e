"""`jobctl`: start, inspect, drain, update and cancel Jobs; run the worker and the local stack."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from temporalio.client import (
    Client,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.envconfig import ClientConfig
from temporalio.service import RPCError, RPCStatusCode

from jobctl.codec import CodecKeyError, SecretsNotEncrypted, data_converter, generate_key
from jobctl.models import (
    CancelRequest,
    DrainRequest,
    Input,
    Job,
    JobSpec,
    JobStatus,
    RequestAnswer,
    UpdateRequest,
    workflow_id_for,
)
from jobctl.settings import Settings
from jobctl.states import JobState
from jobctl.targets import DeploymentTargets, DocumentError, TargetsError, field_path, read_document

app = typer.Typer(
    help="jobctl: a durable control plane for Apache Flink and Google Cloud Dataflow jobs, on Temporal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


# Control characters other than newline and tab, shown escaped (\x1b): they would garble or drive the terminal.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if chr(c) not in "\n\t"}


def fail(message: str, code: int = 1) -> NoReturn:
    # The message quotes what users typed (ids, paths, field values): never read it as rich markup, and
    # never hard-wrap it, so scripts and logs get it whole.
    err.print(f"[red]error:[/red] {escape(message.translate(_CONTROL))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _plain(value: object) -> Text:
    """A table cell showing a value as it is (user input, engine messages), never as rich markup."""
    return Text(str(value))


def _temporal_address() -> str:
    try:
        return str(ClientConfig.load_client_connect_config().get("target_host") or "localhost:7233")
    except Exception:  # an unreadable profile: the connection error itself says what is wrong
        return "the configured address"


def _connect() -> Client:
    from worker.main import connect

    try:
        return asyncio.run(connect())
    except CodecKeyError as exc:
        fail(str(exc))
    except Exception as exc:  # connection refused, bad TLS settings, ...
        fail(
            f"cannot reach Temporal at {_temporal_address()} ({exc}); is the server running? "
            "Set TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE (or a temporal config profile)"
        )


def job_id_of(ref: str) -> str:
    """Accept a Job id (uuid) or its workflow id (job-<uuid>)."""
    raw = ref.removeprefix("job-")
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        fail(f"{ref!r} is not a Job id: give the Job's metadata.id (a UUID) or its workflow id job-<uuid>")


def load_job_file(path: Path, job_id: str | None = None) -> Job:
    """Read a Job (YAML or JSON), give it an id if it has none, and make a relative jar path absolute."""
    raw = _read(path, "Job file")
    if not isinstance(raw, dict):
        fail(f"Job file {path} must hold one Job object (kind: Job, metadata, spec)")
    if raw.get("metadata") is None:
        raw["metadata"] = {}
    # Anything not shaped as expected is left as it is, for validation to name the field.
    metadata = raw["metadata"]
    if isinstance(metadata, dict) and (job_id or metadata.get("id") in (None, "")):
        metadata["id"] = job_id or str(uuid.uuid4())
    spec = raw.get("spec")
    artifact = spec.get("artifact") if isinstance(spec, dict) else None
    unusable = ""
    for key in ("jarUri", "jar_uri") if isinstance(artifact, dict) else ():
        jar = artifact.get(key)
        if isinstance(jar, str) and jar and "://" not in jar and not jar.startswith("/"):
            try:
                artifact[key] = (path.parent / jar).resolve().as_uri()
            except (OSError, ValueError) as exc:  # e.g. a NUL byte in the path
                unusable = f"  spec.artifact.{key}: {jar!r} is not a usable path ({exc})"
    raw.pop("status", None)
    try:
        job = Job.model_validate(raw)
    except ValidationError as exc:
        fail(f"Job file {path} is invalid:\n{_errors(exc)}")
    if unusable:
        fail(f"Job file {path} is invalid:\n{unusable}")
    return job


def _read(path: Path, what: str) -> object:
    try:
        return read_document(path)
    except FileNotFoundError:
        fail(f"{what} {path} does not exist")
    except DocumentError as exc:
        fail(f"{what} {path} {exc}")


def _errors(exc: ValidationError) -> str:
    return "\n".join(f"  {field_path(e['loc'])}: {e['msg']}" for e in exc.errors())


def _print_json(value: Any) -> None:
    out.print_json(json.dumps(value, default=str))


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


@app.command()
def start(
    file: Annotated[Path, typer.Argument(help="Job file (YAML or JSON)")],
    job_id: Annotated[str | None, typer.Option("--id", help="Job id (default: metadata.id or a new UUID)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the started Job as JSON")] = False,
) -> None:
    """Start a Job from a Job file."""
    from jobctl.client import start_job

    job = load_job_file(file, job_id_of(job_id) if job_id else None)
    settings = Settings()
    _check_secrets(job.spec, settings)
    client = _connect()

    async def go() -> None:
        await start_job(client, job, settings.task_queue)

    try:
        asyncio.run(go())
    except RPCError as exc:
        if exc.status == RPCStatusCode.ALREADY_EXISTS:
            fail(f"Job {job.metadata.id} already exists ({job.workflow_id}); give it another metadata.id")
        fail(f"could not start Job {job.metadata.id}: {exc}")
    if as_json:
        _print_json({"jobId": job.metadata.id, "workflowId": job.workflow_id})
    else:
        out.print(f"started Job [bold]{job.metadata.id}[/bold] (workflow {job.workflow_id})", highlight=False)


def _check_secrets(spec: JobSpec, settings: Settings) -> None:
    """Refuse secret parameters this machine cannot encrypt before anything is sent."""
    from jobctl.client import check_secrets

    try:
        check_secrets(spec, data_converter(settings.codec_keys()))
    except (SecretsNotEncrypted, CodecKeyError) as exc:
        fail(str(exc))


def _query(ref: str, name: str, result_type: type) -> Any:
    job_id = job_id_of(ref)
    client = _connect()
    try:
        return asyncio.run(client.get_workflow_handle(workflow_id_for(job_id)).query(name, result_type=result_type))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            fail(f"no Job {job_id} in namespace {client.namespace}")
        fail(f"could not read Job {job_id}: {exc}")
    except WorkflowQueryFailedError as exc:  # e.g. no worker has the Job's workflow code
        fail(f"could not read Job {job_id}: {exc}")


@app.command()
def status(
    job: Annotated[str, typer.Argument(help="Job id or workflow id")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show a Job's status (also of Jobs that have ended)."""
    st: JobStatus = _query(job, "status", JobStatus)
    if as_json:
        _print_json(_dump(st))
        return
    table = Table(show_header=False, box=None)
    table.add_row("state", f"[bold]{st.state}[/bold]")
    if st.engine_job_id:
        table.add_row("engine job", _plain(st.engine_job_id))
    if st.engine_ui_url:
        table.add_row("engine UI", _plain(st.engine_ui_url))
    if st.starting_message and st.state is JobState.STARTING:
        table.add_row("starting", _plain(st.starting_message))
    if st.started:
        for key, value in _dump(st.started).items():
            table.add_row(key, _plain(value))
    if st.savepoint:
        table.add_row("savepoint", _plain(f"{st.savepoint.location} ({st.savepoint.taken_for.lower()})"))
    if st.failure:
        table.add_row("failure", _plain(f"{st.failure.reason}: {st.failure.message}"))
    if st.links.predecessor_job_id:
        table.add_row("predecessor", _plain(st.links.predecessor_job_id))
    if st.links.successor_job_id:
        table.add_row("successor", _plain(st.links.successor_job_id))
    out.print(table)
    if st.events:
        events = Table("time", "event", "message", title="recent events", title_justify="left")
        for event in st.events[-10:]:
            events.add_row(f"{event.time:%Y-%m-%d %H:%M:%S}", _plain(event.kind), _plain(event.message))
        out.print(events)


@app.command()
def get(job: Annotated[str, typer.Argument(help="Job id or workflow id")]) -> None:
    """Print the whole Job resource (metadata, spec, status) as JSON; secret parameters show as "***"."""
    _print_json(_dump(_query(job, "job", Job).redacted()))


@app.command(name="list")
def list_jobs(
    state: Annotated[str | None, typer.Option(help="only Jobs in this state, e.g. STARTED")] = None,
    deployment: Annotated[str | None, typer.Option(help="only Jobs of this deployment")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many")] = 50,
) -> None:
    """List Jobs, newest first, with their state from the JobState search attribute."""
    query = "WorkflowType = 'JobWorkflow'"
    if state:
        if state.upper() not in JobState.__members__:
            fail(f"unknown state {state!r}; one of {', '.join(JobState)}")
        query += f" AND JobState = '{state.upper()}'"
    if deployment:
        query += f" AND DeploymentName = {_quoted(deployment)}"
    client = _connect()

    async def go() -> list[Any]:
        return [wf async for wf in client.list_workflows(query, limit=limit)]

    try:
        rows = asyncio.run(go())
    except RPCError as exc:
        fail(f"could not list Jobs: {exc.message}")
    table = Table("job id", "state", "engine", "target", "deployment", "engine job", "started")
    for wf in rows:
        attrs = wf.search_attributes
        table.add_row(
            *(
                _plain(value)
                for value in (
                    wf.id.removeprefix("job-"),
                    (attrs.get("JobState") or ["?"])[0],
                    (attrs.get("JobEngine") or [""])[0],
                    (attrs.get("DeploymentTarget") or [""])[0],
                    (attrs.get("DeploymentName") or [""])[0],
                    (attrs.get("EngineJobId") or [""])[0],
                    f"{wf.start_time:%Y-%m-%d %H:%M:%S}",
                )
            )
        )
    out.print(table)


def _quoted(value: str) -> str:
    """A string literal of Temporal's visibility query language (its parser keeps backslashes as they are)."""
    return "'" + value.replace("'", "''") + "'"


REQUESTS: dict[str, type[Input]] = {"cancel": CancelRequest, "drain": DrainRequest, "update": UpdateRequest}


def _request(ref: str, name: str, payload: dict[str, Any]) -> None:
    job_id = job_id_of(ref)
    try:
        REQUESTS[name].model_validate(payload)
    except ValidationError as exc:  # said here, before anything is sent
        fail(f"{name} not sent, it is invalid:\n{_errors(exc)}")
    client = _connect()
    handle = client.get_workflow_handle(workflow_id_for(job_id))

    async def go() -> RequestAnswer:
        return await handle.execute_update(name, payload, result_type=RequestAnswer)

    try:
        answer = asyncio.run(go())
    except SecretsNotEncrypted as exc:
        fail(f"{name} not sent: {exc}")
    except WorkflowUpdateFailedError as exc:
        fail(f"{name} rejected: {getattr(exc.cause, 'message', exc.cause)}")
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        fail(f"{name} sent to Job {job_id} but not answered in time; is a jobctl worker running? See `jobctl status`")
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND and "completed" in exc.message.lower():
            closed: JobStatus = _query(job_id, "status", JobStatus)
            fail(f"{name} rejected: Job {job_id} is {closed.state}: there is nothing left to {name}")
        if exc.status == RPCStatusCode.NOT_FOUND:
            fail(f"no Job {job_id} in namespace {client.namespace}")
        fail(f"could not send {name} to Job {job_id}: {exc}")
    out.print(f"{answer.message} (state {answer.state})", highlight=False, markup=False)


@app.command()
def cancel(
    job: Annotated[str, typer.Argument(help="Job id or workflow id")],
    reason: Annotated[str | None, typer.Option(help="why, recorded in the Job's status")] = None,
) -> None:
    """Cancel a Job: stop its engine job now, without a savepoint."""
    _request(job, "cancel", {"reason": reason})


@app.command()
def drain(
    job: Annotated[str, typer.Argument(help="Job id or workflow id")],
    reason: Annotated[str | None, typer.Option(help="why, recorded in the Job's status")] = None,
    savepoint_timeout: Annotated[
        int | None, typer.Option(help="seconds the savepoint may take before jobctl cancels instead")
    ] = None,
) -> None:
    """Drain a Job: stop it with a savepoint after draining in-flight data."""
    _request(job, "drain", {"reason": reason, "savepointTimeoutSeconds": savepoint_timeout})


@app.command()
def update(
    job: Annotated[str, typer.Argument(help="Job id or workflow id")],
    file: Annotated[Path, typer.Argument(help="Job file (or a file with just the spec) holding the new spec")],
    reason: Annotated[str | None, typer.Option(help="why, recorded in the Job's status")] = None,
) -> None:
    """Update a Job to a new spec: savepoint, then a successor Job restores from it."""
    job_id_of(job)
    raw = _read(file, "file")
    if isinstance(raw, dict) and "spec" in raw and raw.get("kind", "Job") == "Job":
        new = load_job_file(file)
        spec = _dump(new.spec)
    else:
        spec = raw
    try:
        checked = JobSpec.model_validate(spec)
    except ValidationError as exc:  # said here, before anything is sent
        fail(f"{file} does not hold a valid spec (a Job file, or just the spec):\n{_errors(exc)}")
    _check_secrets(checked, Settings())
    _request(job, "update", {"spec": spec, "reason": reason})


@app.command()
def targets(
    file: Annotated[Path | None, typer.Option(help="Deployment Targets file (default: $JOBCTL_TARGETS)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print capacity, leases and queues as JSON")] = False,
    offline: Annotated[bool, typer.Option(help="only read the file; do not ask Temporal for leases")] = False,
) -> None:
    """List the Deployment Targets: capacity, leases (which Job holds what) and the queue."""
    from jobctl.ledger import Ledger, describe
    from workflows.deployment_target import ledger_workflow_id

    path = file or Path(Settings().targets)
    try:
        declared = DeploymentTargets.load(path)
    except TargetsError as exc:
        fail(str(exc))
    ledgers: dict[str, Ledger] = {}
    if not offline:
        client = _connect()

        async def read() -> None:
            for t in declared.all():
                try:
                    handle = client.get_workflow_handle(ledger_workflow_id(t.name))
                    ledgers[t.name] = await handle.query("ledger", result_type=Ledger)
                except RPCError as exc:
                    if exc.status != RPCStatusCode.NOT_FOUND:
                        raise
                    # No Job has asked this target for anything yet.

        try:
            asyncio.run(read())
        except (RPCError, WorkflowQueryFailedError) as exc:
            fail(f"could not read the Deployment Targets' leases: {exc}")
    if as_json:
        _print_json(
            [
                {"target": _dump(t), "ledger": _dump(ledgers[t.name]) if t.name in ledgers else None}
                for t in declared.all()
            ]
        )
        return
    table = Table("name", "kind", "where", "capacity", "in use", "leases", "queue")
    for t in declared.all():
        where = t.base_url if t.kind == "flink-session" else f"{t.project}/{t.region}"
        capacity = f"{t.slots} slots" if t.kind == "flink-session" else f"{t.max_concurrent_jobs} jobs"
        ledger = ledgers.get(t.name)
        used = describe({k: v for k, v in ledger.used().items() if v}) if ledger else "-"
        table.add_row(
            _plain(t.name),
            t.kind,
            _plain(where),
            capacity,
            used,
            str(len(ledger.leases)) if ledger else "0",
            str(len(ledger.queue)) if ledger else "0",
        )
    out.print(table)
    for name, ledger in ledgers.items():
        if not ledger.leases and not ledger.queue:
            continue
        detail = Table("Job", "holds / asks for", "since", "", title=_plain(name), title_justify="left")
        for lease in ledger.leases.values():
            detail.add_row(lease.job_id, describe(lease.resources), f"{lease.granted_at:%Y-%m-%d %H:%M:%S}", "lease")
        for position, ask in enumerate(ledger.queue):
            detail.add_row(
                ask.job_id, describe(ask.resources), f"{ask.asked_at:%Y-%m-%d %H:%M:%S}", f"queued #{position + 1}"
            )
        out.print(detail)


@app.command(name="codec-key")
def codec_key() -> None:
    """Print a new key for JOBCTL_CODEC_KEY (encrypts secret parameters; the same on clients and workers)."""
    print(generate_key())


@app.command()
def worker() -> None:
    """Run a worker (configured by TEMPORAL_* and JOBCTL_* environment variables)."""
    from worker.main import main

    try:
        main()
    except (TargetsError, CodecKeyError) as exc:
        fail(str(exc))


@app.command()
def dev(
    workdir: Annotated[Path, typer.Option(help="where the stack keeps its files")] = Path(".jobctl/dev"),
    example: Annotated[bool, typer.Option(help="start the example streaming Job")] = True,
    flink_port: Annotated[int, typer.Option(help="Flink REST and web UI port")] = 8081,
    slots: Annotated[int, typer.Option(help="Flink task slots")] = 4,
    temporal_port: Annotated[int, typer.Option(help="Temporal frontend port")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Temporal web UI port")] = 8233,
    dataflow_port: Annotated[int, typer.Option(help="Dataflow emulator port")] = 8089,
) -> None:
    """Run the local stack: Temporal dev server + web UI, a Flink session cluster, a worker, an example Job."""
    from jobctl.dev import DevStack, StackError

    stack = DevStack(
        workdir.resolve(), flink_port, slots, temporal_port, ui_port, start_example=example, dataflow_port=dataflow_port
    )
    try:
        asyncio.run(stack.run())
    except (StackError, CodecKeyError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass


@app.command(
    name="dataflow-emulator",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def dataflow_emulator(ctx: typer.Context) -> None:
    """Run the Dataflow emulator (the real gRPC API, locally). `jobctl dataflow-emulator --help` for its flags."""
    from jobctl.dataflow_emulator.server import main as emulator_main

    emulator_main(list(ctx.args))


def main() -> None:  # pragma: no cover - console script entry
    app(prog_name="jobctl")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
