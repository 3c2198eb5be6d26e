"""Engine API outages while Jobs run: the engine keeps running, only the worker cannot reach its API.

Flink: the Deployment Target's restUrl points at a TCP proxy (tcp_proxy.py) in front of the real
JobManager; the outage first refuses connections, then (second half) accepts them and never answers,
so both a dead endpoint and a hanging one are covered. Dataflow: the emulator answers UNAVAILABLE.

Four Jobs per engine are STARTED when the outage begins:
- keep: nothing is asked of it. It stays STARTED with the observed status UNKNOWN (and an
  ENGINE_UNREACHABLE event), then shows the engine's status again once the API is back.
- drain, cancel: requested during the outage. Both are accepted at once (TERMINATING) and complete once
  the API is back; the drain's savepoint is on disk (Flink) or the job ends DRAINED (Dataflow).
- short-drain: a drain whose savepointTimeoutSeconds (5 s) is shorter than the outage. What the user sees
  is printed and must be one of the two documented outcomes: drained, or cancelled instead with a
  DRAIN_FELL_BACK_TO_CANCEL event saying why; never FAILED, never stuck.

Short by default (CI); longer outages: JOBCTL_OUTAGE_SECONDS=300 pytest tests/chaos/test_outages.py -s
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from temporalio.client import Client, WorkflowHandle

from jobctl.client import start_job
from jobctl.dataflow_emulator import EmulatorServer
from jobctl.flink_cluster import FlinkCluster
from jobctl.models import Job, JobStatus, RequestAnswer
from jobctl.states import JobState
from jobctl.temporal_server import TemporalDevServer
from tests.chaos.support import (
    STREAMING,
    WorkerProcess,
    dataflow_job,
    dataflow_target,
    env_number,
    events,
    flink_job,
    flink_states,
    flink_target,
    is_terminal,
    ledgers_once_empty,
    left_on,
    observed,
    savepoint_on_disk,
    write_targets,
)
from tests.chaos.tcp_proxy import TcpProxy
from tests.waiting import wait_for

OUTAGE = env_number("JOBCTL_OUTAGE_SECONDS", 24)
SHORT_SAVEPOINT_TIMEOUT = 5
# The drain and cancel sent during the outage must outlast it (retries back off up to 30 s).
RECOVERY_TIMEOUT = 180
# The savepoint timeout of the Jobs themselves: longer than the outage and the retries after it.
LONG = int(OUTAGE * 2 + 120)
ROLES = ("keep", "drain", "cancel", "short-drain")

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(max(600, OUTAGE * 3 + 300))]


def worker_for(dev_server: TemporalDevServer, targets: Path, tmp_path: Path, **env: str) -> WorkerProcess:
    # A short engine timeout (a user-facing setting): a hanging API shows as UNKNOWN within seconds.
    return WorkerProcess(
        dev_server.address, targets, f"outage-{uuid.uuid4()}", tmp_path, JOBCTL_ENGINE_TIMEOUT_SECONDS="3", **env
    )


def running(status: JobStatus) -> bool:
    return status.state is JobState.STARTED and observed(status) not in (None, "UNKNOWN")


async def start_all(client: Client, worker: WorkerProcess, jobs: dict[str, Job]) -> dict[str, WorkflowHandle]:
    handles = {role: await start_job(client, job, worker.task_queue) for role, job in jobs.items()}
    for handle in handles.values():
        # The first Job waits for the cold worker process to come up.
        await wait_for(handle, running, "STARTED", timeout=120)
    return handles


async def ride_out(
    handles: dict[str, WorkflowHandle], halfway: Callable[[], Awaitable[None]] | None = None
) -> tuple[dict[str, str], dict[str, set[str]], float]:
    """The outage has begun: wait until every Job shows it, send the requests, and keep it up until it
    has lasted OUTAGE seconds, reading every Job's status each second. Returns the answers to the
    requests, what each Job showed meanwhile ("STATE/observed"), and how long the Jobs took to show it."""
    began = time.monotonic()
    for handle in handles.values():
        status = await wait_for(handle, lambda s: observed(s) == "UNKNOWN", "observed UNKNOWN", timeout=60)
        assert status.state is JobState.STARTED and events(status, "ENGINE_UNREACHABLE"), status
    noticed = time.monotonic() - began

    answers = {}
    for role, body in [
        ("drain", {"reason": "drain during the outage"}),
        ("cancel", {"reason": "cancel during the outage"}),
        ("short-drain", {"reason": "short drain", "savepointTimeoutSeconds": SHORT_SAVEPOINT_TIMEOUT}),
    ]:
        name = role.removeprefix("short-")
        answer = await handles[role].execute_update(name, body, result_type=RequestAnswer)
        assert answer.accepted, answer
        answers[role] = answer.message

    shown: dict[str, set[str]] = {role: set() for role in handles}
    half_done = halfway is None
    while (elapsed := time.monotonic() - began) < OUTAGE:
        if not half_done and elapsed >= OUTAGE / 2:
            await halfway()  # type: ignore[misc]
            half_done = True
        for role, status in (await statuses(handles)).items():
            shown[role].add(f"{status.state}/{observed(status)}")
        await asyncio.sleep(1)
    # An outage never changes a Job's state; only the requests do (STARTED -> TERMINATING).
    assert shown["keep"] == {"STARTED/UNKNOWN"}, shown
    for role in ("drain", "cancel", "short-drain"):
        assert {s.split("/")[0] for s in shown[role]} <= {"STARTED", "TERMINATING"}, shown
    return answers, shown, noticed


async def statuses(handles: dict[str, WorkflowHandle]) -> dict[str, JobStatus]:
    return {role: await handle.query("status", result_type=JobStatus) for role, handle in handles.items()}


async def wait_end(handle: WorkflowHandle) -> JobStatus:
    return await wait_for(handle, is_terminal, "a terminal state", timeout=RECOVERY_TIMEOUT, every=0.5)


async def recover(
    handles: dict[str, WorkflowHandle], running: str, restored: float
) -> tuple[float, dict[str, tuple[JobStatus, float]]]:
    """After the outage: how long the untouched Job took to show `running` again (still STARTED), and how
    each requested Job ended and how long after the outage."""
    keep = await wait_for(handles["keep"], lambda s: observed(s) == running, "RUNNING again", RECOVERY_TIMEOUT)
    keep_back = time.monotonic() - restored
    assert keep.state is JobState.STARTED, keep
    ends = {}
    for role in ("drain", "cancel", "short-drain"):
        ends[role] = (await wait_end(handles[role]), time.monotonic() - restored)
    return keep_back, ends


async def leases_left_once_kept_ends(client: Client, handles: dict[str, WorkflowHandle], target: str) -> int:
    """Cancel the untouched Job; what the target's ledger still holds once it has ended."""
    await handles["keep"].execute_update("cancel", {}, result_type=RequestAnswer)
    await wait_end(handles["keep"])
    return left_on(await ledgers_once_empty(client, [target]))


def short_drain_outcome(status: JobStatus, savepoint_expected: bool) -> str:
    """What the user sees of a drain whose savepoint timeout ran out during the outage."""
    assert status.state is JobState.TERMINATED, status
    fell_back = events(status, "DRAIN_FELL_BACK_TO_CANCEL")
    if fell_back:
        assert status.savepoint is None, status
        return f"cancelled instead of drained: {fell_back[-1]}"
    if savepoint_expected:
        assert status.savepoint and savepoint_on_disk(status.savepoint.location), status
        return f"drained with a savepoint at {status.savepoint.location}"
    return f"drained (observed {observed(status)})"


async def test_flink_rest_outage_keeps_jobs_started_and_requests_complete_after_it(
    dev_server: TemporalDevServer, client: Client, flink_cluster: FlinkCluster, example_jar: Path, tmp_path: Path
) -> None:
    upstream = urlparse(flink_cluster.rest_url)
    proxy = await TcpProxy(upstream.hostname or "127.0.0.1", upstream.port or 80).start()
    targets = write_targets(
        tmp_path / "targets.yaml", flink_target("outage-flink", proxy.url, 4, flink_cluster.savepoint_dir)
    )
    worker = worker_for(dev_server, targets, tmp_path)
    await worker.start()
    try:
        args = ["--mode", "unbounded", "--checkpoint-interval-ms", "1000"]
        jobs = {
            role: flink_job(example_jar, "outage-flink", *args, name=f"outage-{role}", savepoint_timeout=LONG)
            for role in ROLES
        }
        handles = await start_all(client, worker, jobs)
        jids = {role: job.metadata.engine_job_id for role, job in jobs.items()}

        await proxy.cut("refuse")
        cut_at = time.monotonic()
        answers, shown, noticed = await ride_out(handles, halfway=lambda: proxy.cut("hang"))
        # Nothing reached the cluster: every job still runs there.
        behind_the_outage = await flink_states(flink_cluster.rest_url, list(jids.values()))
        assert all(states == ["RUNNING"] for states in behind_the_outage.values()), behind_the_outage
        await proxy.restore()
        restored = time.monotonic()

        keep_back, ends = await recover(handles, "RUNNING", restored)
        drain, cancel = ends["drain"][0], ends["cancel"][0]
        assert drain.state is JobState.TERMINATED and not events(drain, "DRAIN_FELL_BACK_TO_CANCEL"), drain
        assert drain.savepoint and drain.savepoint.taken_for == "DRAIN" and savepoint_on_disk(drain.savepoint.location)
        assert cancel.state is JobState.TERMINATED and cancel.savepoint is None, cancel
        short = short_drain_outcome(ends["short-drain"][0], savepoint_expected=True)
        after = await flink_states(flink_cluster.rest_url, list(jids.values()))
        assert after == {
            jids["keep"]: ["RUNNING"],
            jids["drain"]: ["FINISHED"],
            jids["cancel"]: ["CANCELED"],
            jids["short-drain"]: ["CANCELED" if "cancelled instead" in short else "FINISHED"],
        }, after

        left = await leases_left_once_kept_ends(client, handles, "outage-flink")
        print(
            f"\nFlink REST outage of {restored - cut_at:.0f}s (refused, then hanging) with 4 STARTED Jobs:\n"
            f"  every Job showed UNKNOWN {noticed:.1f}s after the cut; states seen during it: {shown}\n"
            f"  answers during the outage: {answers}\n"
            f"  after it: keep RUNNING again in {keep_back:.1f}s; "
            + "; ".join(f"{role} {s.state} in {t:.1f}s" for role, (s, t) in ends.items())
            + f"\n  drain's savepoint: {drain.savepoint.location} (on disk)\n"
            f"  short drain (savepointTimeoutSeconds {SHORT_SAVEPOINT_TIMEOUT} < outage): {short}\n"
            f"  Flink jobs per Job: {after}; leases left: {left}"
        )
        assert left == 0
    finally:
        await worker.stop()
        await proxy.stop()


async def test_dataflow_unavailable_keeps_jobs_started_and_requests_complete_after_it(
    dev_server: TemporalDevServer, client: Client, emulator: EmulatorServer, tmp_path: Path
) -> None:
    targets = write_targets(tmp_path / "targets.yaml", dataflow_target("outage-dataflow"))
    worker = worker_for(dev_server, targets, tmp_path, DATAFLOW_EMULATOR_HOST=emulator.address)
    await worker.start()
    try:
        jobs = {
            role: dataflow_job("outage-dataflow", STREAMING, name=f"outage-{role}", savepoint_timeout=LONG)
            for role in ROLES
        }
        handles = await start_all(client, worker, jobs)
        dataflow_ids = {role: jobs_status.engine_job_id for role, jobs_status in (await statuses(handles)).items()}

        emulator.set_unavailable()
        cut_at = time.monotonic()
        try:
            answers, shown, noticed = await ride_out(handles)
            behind_the_outage = {role: emulator.model.jobs[jid].state.name for role, jid in dataflow_ids.items()}
            assert set(behind_the_outage.values()) == {"JOB_STATE_RUNNING"}, behind_the_outage
        finally:
            emulator.clear_unavailable()
        restored = time.monotonic()

        keep_back, ends = await recover(handles, "JOB_STATE_RUNNING", restored)
        drain, cancel = ends["drain"][0], ends["cancel"][0]
        assert drain.state is JobState.TERMINATED and observed(drain) == "JOB_STATE_DRAINED", drain
        assert cancel.state is JobState.TERMINATED and observed(cancel) == "JOB_STATE_CANCELLED", cancel
        short = short_drain_outcome(ends["short-drain"][0], savepoint_expected=False)
        after = {role: emulator.model.jobs[jid].state.name for role, jid in dataflow_ids.items()}
        assert after == {
            "keep": "JOB_STATE_RUNNING",
            "drain": "JOB_STATE_DRAINED",
            "cancel": "JOB_STATE_CANCELLED",
            "short-drain": "JOB_STATE_CANCELLED" if "cancelled instead" in short else "JOB_STATE_DRAINED",
        }, after

        left = await leases_left_once_kept_ends(client, handles, "outage-dataflow")
        print(
            f"\nDataflow UNAVAILABLE for {restored - cut_at:.0f}s with 4 STARTED Jobs:\n"
            f"  every Job showed UNKNOWN {noticed:.1f}s after the outage began; states seen during it: {shown}\n"
            f"  answers during the outage: {answers}\n"
            f"  after it: keep JOB_STATE_RUNNING again in {keep_back:.1f}s; "
            + "; ".join(f"{role} {s.state} in {t:.1f}s" for role, (s, t) in ends.items())
            + f"\n  short drain (savepointTimeoutSeconds {SHORT_SAVEPOINT_TIMEOUT} < outage): {short}\n"
            f"  Dataflow jobs: {after}; leases left: {left}"
        )
        assert left == 0
    finally:
        await worker.stop()


async def stop_with_savepoint(cluster: FlinkCluster, jid: str, timeout: float = 60) -> str:
    """Stop a Flink job with a drain and a savepoint through Flink's own API; its location. A savepoint
    can fail while tasks are still deploying: trigger again until the deadline."""
    deadline = time.monotonic() + timeout
    body = {"drain": True, "targetDirectory": cluster.savepoint_dir.as_uri()}
    async with httpx.AsyncClient(base_url=cluster.rest_url, timeout=30) as http:
        while time.monotonic() < deadline:
            trigger = (await http.post(f"/jobs/{jid}/stop", json=body)).json()["request-id"]
            progress = f"/jobs/{jid}/savepoints/{trigger}"
            while (answer := (await http.get(progress)).json())["status"]["id"] != "COMPLETED":
                await asyncio.sleep(0.2)
            if location := (answer.get("operation") or {}).get("location"):
                return location
            await asyncio.sleep(0.5)
    pytest.fail(f"Flink could not stop job {jid} with a savepoint within {timeout}s: {answer}")


async def test_a_drain_whose_stop_reached_flink_but_whose_answer_was_lost_ends_at_once_with_its_savepoint(
    dev_server: TemporalDevServer, client: Client, flink_cluster: FlinkCluster, example_jar: Path, tmp_path: Path
) -> None:
    """A stop-with-savepoint that reached Flink, but whose answer the worker never got (the link broke, the
    call timed out, the worker was SIGKILLed before its heartbeat): Flink takes the savepoint and stops the
    job, and the retried attempt finds the job FINISHED. The Job ends TERMINATED with that savepoint as
    soon as the API answers again, instead of triggering a new stop every poll interval (Flink accepts a
    stop of an ended job, then fails its savepoint) until savepointTimeoutSeconds.
    """
    upstream = urlparse(flink_cluster.rest_url)
    proxy = await TcpProxy(upstream.hostname or "127.0.0.1", upstream.port or 80).start()
    targets = write_targets(
        tmp_path / "targets.yaml", flink_target("lost-answer", proxy.url, 4, flink_cluster.savepoint_dir)
    )
    worker = worker_for(dev_server, targets, tmp_path)
    await worker.start()
    try:
        job = flink_job(example_jar, "lost-answer", "--mode", "unbounded", "--checkpoint-interval-ms", "1000")
        [handle] = (await start_all(client, worker, {"drain": job})).values()
        await proxy.cut("refuse")
        await handle.execute_update("drain", {"reason": "drain whose answer gets lost"}, result_type=RequestAnswer)
        # What the attempt whose answer was lost did: Flink got the stop, took the savepoint, stopped the job.
        jid = job.metadata.engine_job_id
        location = await stop_with_savepoint(flink_cluster, jid)
        assert await flink_states(flink_cluster.rest_url, [jid]) == {jid: ["FINISHED"]}
        await proxy.restore()

        # As long as a normal recovery after an outage takes (retries back off), with room to spare.
        deadline = time.monotonic() + 30
        while not is_terminal(status := await handle.query("status", result_type=JobStatus)):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        print(f"\nlost stop answer: Flink took {location}; 30s after the API came back the Job is {status.state}")
        assert status.state is JobState.TERMINATED, f"still {status.state} 30s after the API came back"
        assert status.savepoint and urlparse(status.savepoint.location).path == urlparse(location).path, status
    finally:
        await worker.stop()
        await proxy.stop()
