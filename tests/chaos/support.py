"""What the chaos, outage and restart tests share: `jobctl worker` processes they can SIGKILL, Job
builders for both engines, waits that outlive a dead worker, and the user-visible figures (engine jobs
per Job, savepoints on disk, ledgers).

Everything here reads what a user can read too: the `status` and `ledger` queries, Flink's REST API, the
Dataflow emulator's jobs, savepoint directories. Nothing reaches into workflows or activities, so these
tests hold whatever way Jobs are observed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import httpx
import pytest
import yaml
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError

from jobctl.client import start_job
from jobctl.dataflow_emulator import EmulatorServer
from jobctl.flink_cluster import _die_with_parent
from jobctl.ledger import Ledger
from jobctl.models import Job, JobStatus, RequestAnswer
from jobctl.states import TERMINAL
from jobctl.temporal_server import stop_process
from tests.jobs import BATCH, STREAMING, dataflow_job, flink_job  # noqa: F401 (the chaos tests' Jobs)
from tests.waiting import all_released

T = TypeVar("T")
PROJECT, REGION = "demo-project", "us-central1"
LABEL = "jobctl-job-id"


def env_number(name: str, default: float) -> float:
    """A knob of the long versions (JOBCTL_CHAOS_*, JOBCTL_OUTAGE_SECONDS, ...); CI leaves them unset."""
    raw = os.environ.get(name)
    return float(raw) if raw else default


# --- Deployment Targets and Jobs ----------------------------------------------------------------


def write_targets(path: Path, *targets: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"targets": list(targets)}, sort_keys=False))
    return path


def flink_target(name: str, rest_url: str, slots: int, savepoint_dir: Path) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "flink-session",
        "restUrl": rest_url,
        "slots": slots,
        "savepointDir": savepoint_dir.as_uri(),
    }


def dataflow_target(name: str, max_concurrent_jobs: int = 25) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "dataflow",
        "project": PROJECT,
        "region": REGION,
        "maxConcurrentJobs": max_concurrent_jobs,
    }


# --- a `jobctl worker` process ------------------------------------------------------------------


class WorkerProcess:
    """`jobctl worker` as users run it, in its own process, so that a test can SIGKILL it and start a
    new one. Each incarnation logs to its own file in `log_dir` (shown when a test fails)."""

    def __init__(self, address: str, targets: Path, task_queue: str, log_dir: Path, **env: str) -> None:
        self.env = dict(
            os.environ,
            TEMPORAL_ADDRESS=address,
            JOBCTL_TASK_QUEUE=task_queue,
            JOBCTL_TARGETS=str(targets),
            JOBCTL_POLL_INTERVAL_SECONDS="0.5",
            JOBCTL_LEASE_RECLAIM_INTERVAL_SECONDS="2",
            **env,
        )
        self.log_dir = log_dir
        self.incarnations = 0
        self.kills = 0
        self.process: asyncio.subprocess.Process | None = None

    @property
    def task_queue(self) -> str:
        return self.env["JOBCTL_TASK_QUEUE"]

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"worker-{self.incarnations}.log"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        self.incarnations += 1
        with self.log_file.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "jobctl.cli", "worker", env=self.env, stdout=log, stderr=log,
                preexec_fn=_die_with_parent,  # never outlives the test run
            )  # fmt: skip

    async def kill(self) -> None:
        """SIGKILL: no graceful shutdown; activities and workflow tasks in flight are cut off."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        self.kills += 1

    async def stop(self) -> None:
        process, self.process = self.process, None
        await stop_process(process)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_file.read_text(errors="replace")[-chars:] if self.log_file.exists() else ""


# --- waiting through crashes and restarts --------------------------------------------------------

QUERY_TIMEOUT = timedelta(seconds=5)


async def status_of(handle: WorkflowHandle) -> JobStatus | None:
    """The status query, or None while nothing can answer it (no worker alive, Temporal restarting)."""
    try:
        return await handle.query("status", result_type=JobStatus, rpc_timeout=QUERY_TIMEOUT)
    except RPCError:
        return None


async def wait_status(
    handle: WorkflowHandle,
    check: Callable[[JobStatus], bool],
    what: str,
    timeout: float,
    seen: Callable[[JobStatus], None] | None = None,
    raise_on_timeout: bool = True,
) -> JobStatus:
    """tests.waiting.wait_for, except that a query nobody can answer right now is asked again: a killed
    worker or a restarting Temporal server only delays the answer. `seen` gets every status read. With
    raise_on_timeout=False, the last status read is returned at the deadline instead."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    status: JobStatus | None = None
    while loop.time() < deadline:
        latest = await status_of(handle)
        if latest is not None:
            status = latest
            if seen:
                seen(status)
            if check(status):
                return status
        await asyncio.sleep(0.5)
    if status is not None and not raise_on_timeout:
        return status
    shown = status.model_dump_json(indent=1) if status else None
    pytest.fail(f"Job {handle.id} never reached {what} within {timeout}s; last status: {shown}")


async def query_through(handle: WorkflowHandle, name: str, result_type: type[T], timeout: float = 120) -> T:
    """A query, asked again while nothing can answer it (see wait_status)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await handle.query(name, result_type=result_type, rpc_timeout=QUERY_TIMEOUT)
        except RPCError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    """Poll `check` (what an engine, the disk, ... says) until it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"never {what} within {timeout}s")
        await asyncio.sleep(0.2)


def is_terminal(status: JobStatus) -> bool:
    return status.state in TERMINAL


async def request(handle: WorkflowHandle, name: str, body: dict[str, Any], via: str, timeout: float = 300) -> None:
    """Send cancel, drain or update as a signal or as an update, through worker crashes.

    An update waits for a worker to accept it; one whose worker died is asked again with the same
    update id, which Temporal answers with the first outcome instead of running it twice.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    update_id = f"{name}-{uuid.uuid4()}"
    while True:
        try:
            if via == "signal":
                await handle.signal(name, body, rpc_timeout=timedelta(seconds=10))
            else:
                answer = await handle.execute_update(
                    name, body, id=update_id, result_type=RequestAnswer, rpc_timeout=timedelta(seconds=15)
                )
                assert answer.accepted, answer
            return
        except WorkflowUpdateFailedError as err:
            pytest.fail(f"{name} of {handle.id} was rejected: {err.cause}")
        except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(1)


async def start(client: Client, job: Job, task_queue: str, timeout: float = 60) -> WorkflowHandle:
    """Start a Job's workflow; a Temporal server that is restarting is asked again."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await start_job(client, job, task_queue)
        except RPCError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(1)


# --- what the engines, the disk and the ledgers say ----------------------------------------------


async def flink_jobs(rest_url: str) -> list[dict[str, Any]]:
    """Every job the Flink cluster knows (Flink's own list, read directly, not through jobctl)."""
    async with httpx.AsyncClient(base_url=rest_url, timeout=10) as http:
        response = await http.get("/jobs/overview")
        response.raise_for_status()
        return response.json()["jobs"]


async def flink_states(rest_url: str, jids: list[str]) -> dict[str, list[str]]:
    """The Flink jobs with each of these ids: their states (more than one would be a duplicate)."""
    found: dict[str, list[str]] = {jid: [] for jid in jids}
    for job in await flink_jobs(rest_url):
        if job["jid"] in found:
            found[job["jid"]].append(job["state"])
    return found


def dataflow_jobs_by_label(emulator: EmulatorServer, job_ids: list[str]) -> dict[str, list[str]]:
    """The emulator's Dataflow jobs carrying each Job's label jobctl-job-id: their states."""
    found: dict[str, list[str]] = {job_id: [] for job_id in job_ids}
    emulator.model.tick()
    for job in emulator.model.jobs.values():
        if job.labels.get(LABEL) in found:
            found[job.labels[LABEL]].append(job.state.name)
    return found


def savepoint_on_disk(location: str) -> bool:
    path = Path(urlparse(location).path)
    return (path / "_metadata").is_file()


def savepoint_dirs(savepoint_dir: Path, jids: list[str]) -> Counter[str]:
    """Savepoint directories on disk per Flink job (Flink names them savepoint-<first 6 of the id>-...)."""
    prefixes = {jid[:6]: jid for jid in jids}
    found: Counter[str] = Counter()
    for path in savepoint_dir.glob("savepoint-*"):
        jid = prefixes.get(path.name.split("-")[1])
        if jid:
            found[jid] += 1
    return found


async def ledger_of(client: Client, target: str) -> Ledger:
    return await client.get_workflow_handle(f"deployment-target-{target}").query(
        "ledger", result_type=Ledger, rpc_timeout=QUERY_TIMEOUT
    )


def nothing_held(ledger: Ledger) -> bool:
    return all_released(ledger) and ledger.handovers == {}


async def ledgers_once_empty(client: Client, targets: list[str], timeout: float = 60) -> dict[str, Ledger]:
    """Each target's ledger once none holds anything (a release signal lands a little after its Job
    ended), or as they are after `timeout`: the caller counts what is left."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    ledgers: dict[str, Ledger] = {}
    while True:
        for target in targets:
            with contextlib.suppress(RPCError):
                ledgers[target] = await ledger_of(client, target)
        if len(ledgers) == len(targets) and all(nothing_held(ledger) for ledger in ledgers.values()):
            return ledgers
        if loop.time() > deadline:
            return ledgers
        await asyncio.sleep(0.5)


def left_on(ledgers: dict[str, Ledger]) -> int:
    """Leases, queued asks and handed-over leases left on these ledgers."""
    return sum(len(ledger.leases) + len(ledger.queue) + len(ledger.handovers) for ledger in ledgers.values())


def events(status: JobStatus, kind: str) -> list[str]:
    return [e.message for e in status.events if e.kind == kind]


def observed(status: JobStatus) -> str | None:
    """The engine's status as jobctl last observed it (either engine)."""
    if status.started is None:
        return None
    return status.started.observed_flink_job_status or status.started.observed_dataflow_job_state
