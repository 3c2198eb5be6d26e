"""The REST facts the control plane relies on, checked against a real Flink 2.3 session cluster.

Observed with apache-flink-libraries 2.3.0 (JDK 17), asserted below:
- /jars/{id}/run with a jobId that Flink already knows (running or terminal) -> HTTP 400, and the "errors"
  text ends in "DuplicateApplicationSubmissionException: Application has already been submitted."
  (Flink 2.3 runs every /run as an "application" whose id is the jobId; the answer for /run also carries
  {"jobid": ..., "applicationId": ...}). The first job is left untouched.
- PATCH /jobs/{id}?mode=cancel: 202 {} on a running job, and 202 {} again on a job that is already CANCELED
  (idempotent); 409 "Job cancellation failed because the job has already reached another terminal state
  (FINISHED)." (or (FAILED)) on a job that ended otherwise; 404 "Job could not be found." on an unknown id.
- GET /jobs/{id}/savepoints/{request-id}: {"status": {"id": "IN_PROGRESS"}} then
  {"status": {"id": "COMPLETED"}, "operation": {"location": "file:/.../savepoint-xxxxxx-yyyyyyyyyyyy"}}.
- GET /jobs/{id}/checkpoints of a job started from a savepoint: counts.restored == 1 and
  latest.restored == {"id", "restore_timestamp", "is_savepoint": true, "external_path": <savepoint location>}.
- GET /jobs/{id}/metrics?get=numRestarts -> [{"id": "numRestarts", "value": "2"}] (value is a string). The
  REST metric store is filled lazily, only by REST calls while the job runs (at most every
  metrics.fetcher.update-interval): a job nobody looked at while it ran answers [] once it is terminal.
- GET /jobs/{id}/exceptions -> {"exceptionHistory": {"entries": [newest first], "truncated": false}}; for a job
  FAILED after K restarts there are K+1 entries, the newest being "JobException: Recovery is suppressed by
  FixedDelayRestartBackoffTimeStrategy(...)" with the job's own exception as its "Caused by:".
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import httpx
import pytest
import pytest_asyncio

from jobctl.flink_cluster import FlinkCluster

pytestmark = pytest.mark.integration

T = TypeVar("T")
TERMINAL = {"FINISHED", "FAILED", "CANCELED"}


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 90) -> T:
    """Poll ``probe`` until it returns something other than None; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last is not None:
            return last
        await asyncio.sleep(0.25)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def rest(flink_cluster: FlinkCluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=flink_cluster.rest_url, timeout=30) as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def jar_id(rest: httpx.AsyncClient, example_jar: Path) -> str:
    with example_jar.open("rb") as f:
        r = await rest.post("/jars/upload", files={"jarfile": (example_jar.name, f, "application/x-java-archive")})
    r.raise_for_status()
    body = r.json()
    assert body["status"] == "success", body
    return body["filename"].rsplit("/", 1)[-1]


async def run_job(rest: httpx.AsyncClient, jar_id: str, *args: str, **extra: Any) -> httpx.Response:
    body = {"entryClass": "example.Job", "programArgsList": list(args), "parallelism": 1, **extra}
    return await rest.post(f"/jars/{jar_id}/run", json=body)


async def submit(rest: httpx.AsyncClient, jar_id: str, *args: str, **extra: Any) -> str:
    job_id = uuid.uuid4().hex
    r = await run_job(rest, jar_id, *args, jobId=job_id, **extra)
    assert r.status_code == 200, r.text
    assert r.json()["jobid"] == job_id
    return job_id


async def job(rest: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    r = await rest.get(f"/jobs/{job_id}")
    r.raise_for_status()
    return r.json()


async def wait_state(rest: httpx.AsyncClient, job_id: str, *states: str, timeout: float = 90) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        j = await job(rest, job_id)
        if j["state"] in states:
            return j
        assert j["state"] not in TERMINAL, f"job {job_id} ended {j['state']}, wanted {states}"
        return None

    return await eventually(probe, f"job {job_id} in {states}", timeout)


async def wait_all_tasks_running(rest: httpx.AsyncClient, job_id: str) -> None:
    """A stop-with-savepoint needs every task RUNNING, not just the job."""

    async def probe() -> bool | None:
        j = await job(rest, job_id)
        assert j["state"] not in TERMINAL, j["state"]
        ok = j["state"] == "RUNNING" and all(v["status"] == "RUNNING" for v in j["vertices"])
        return True if ok else None

    await eventually(probe, f"all tasks of {job_id} RUNNING")


async def test_cluster_reports_slots_and_serves_web_ui(rest: httpx.AsyncClient) -> None:
    overview = (await rest.get("/overview")).json()
    assert overview["slots-total"] == 4
    assert overview["taskmanagers"] == 1
    assert overview["flink-version"] == "2.3.0"
    config = (await rest.get("/config")).json()
    assert config["features"]["web-submit"] is True
    # flink-dist carries the web dashboard, so the UI is served too.
    index = await rest.get("/")
    assert index.status_code == 200 and "<html" in index.text.lower()


async def test_bounded_job_finishes_and_its_job_id_cannot_run_twice(rest: httpx.AsyncClient, jar_id: str) -> None:
    job_id = await submit(rest, jar_id, "--mode", "bounded", "--records", "1000")
    finished = await wait_state(rest, job_id, "FINISHED")
    assert finished["jid"] == job_id

    # The control plane fixes the job id before submitting so that a retried submit can never start a second
    # job. Flink 2.3 answers 400 with DuplicateApplicationSubmissionException (the id is also the application id).
    again = await run_job(rest, jar_id, "--mode", "bounded", "--records", "1000", jobId=job_id)
    assert again.status_code == 400, again.text
    assert "DuplicateApplicationSubmissionException: Application has already been submitted." in again.text
    jobs = (await rest.get("/jobs/overview")).json()["jobs"]
    assert [j["state"] for j in jobs if j["jid"] == job_id] == ["FINISHED"]

    # Cancel of a job that is already terminal: 409; of an unknown job: 404.
    r = await rest.patch(f"/jobs/{job_id}", params={"mode": "cancel"})
    assert r.status_code == 409, r.text
    assert "already reached another terminal state (FINISHED)" in r.text
    r = await rest.patch(f"/jobs/{uuid.uuid4().hex}", params={"mode": "cancel"})
    assert r.status_code == 404, r.text
    assert "Job could not be found" in r.text


async def test_failing_job_restarts_twice_then_fails(rest: httpx.AsyncClient, jar_id: str) -> None:
    job_id = await submit(rest, jar_id, "--mode", "failing", "--restarts", "2")

    # Flink's REST metric store only learns job metrics from REST calls made while the job runs, so keep
    # looking at the job (as a control plane's poller does) until it ends.
    async def probe() -> dict[str, Any] | None:
        await rest.get(f"/jobs/{job_id}/metrics", params={"get": "numRestarts"})
        j = await job(rest, job_id)
        return j if j["state"] in TERMINAL else None

    ended = await eventually(probe, f"failing job {job_id} to end")
    assert ended["state"] == "FAILED"

    metrics = (await rest.get(f"/jobs/{job_id}/metrics", params={"get": "numRestarts"})).json()
    assert metrics == [{"id": "numRestarts", "value": "2"}]

    history = (await rest.get(f"/jobs/{job_id}/exceptions")).json()["exceptionHistory"]
    entries = history["entries"]
    assert len(entries) == 3  # two restarts + the failure that was not restarted
    assert "Recovery is suppressed by FixedDelayRestartBackoffTimeStrategy" in entries[0]["stacktrace"]
    assert "example job failing on purpose" in entries[0]["stacktrace"]  # its "Caused by:"
    assert all("example job failing on purpose" in e["stacktrace"] for e in entries)

    r = await rest.patch(f"/jobs/{job_id}", params={"mode": "cancel"})
    assert r.status_code == 409 and "another terminal state (FAILED)" in r.text, r.text


async def test_stop_with_savepoint_then_restore_then_cancel(
    rest: httpx.AsyncClient, jar_id: str, flink_cluster: FlinkCluster
) -> None:
    first = await submit(rest, jar_id, "--mode", "unbounded", "--checkpoint-interval-ms", "1000")
    await wait_all_tasks_running(rest, first)

    # While it runs, its id is refused as well.
    again = await run_job(rest, jar_id, "--mode", "unbounded", jobId=first)
    assert again.status_code == 400 and "DuplicateApplicationSubmissionException" in again.text

    r = await rest.post(f"/jobs/{first}/stop", json={"drain": True})
    assert r.status_code == 202, r.text
    trigger = r.json()["request-id"]

    async def savepoint_done() -> dict[str, Any] | None:
        s = (await rest.get(f"/jobs/{first}/savepoints/{trigger}")).json()
        assert s["status"]["id"] in ("IN_PROGRESS", "COMPLETED"), s
        return s if s["status"]["id"] == "COMPLETED" else None

    status = await eventually(savepoint_done, "stop-with-savepoint to complete")
    assert "failure-cause" not in status["operation"], status
    location = status["operation"]["location"]
    assert location.startswith("file:")
    path = Path(urlparse(location).path)
    assert path.is_dir() and (path / "_metadata").is_file()
    assert path.parent == flink_cluster.savepoint_dir  # execution.checkpointing.savepoint-dir
    await wait_state(rest, first, "FINISHED")  # a drained stop ends the job FINISHED

    second = await submit(rest, jar_id, "--mode", "unbounded", savepointPath=location)
    await wait_state(rest, second, "RUNNING")

    async def restored() -> dict[str, Any] | None:
        cp = (await rest.get(f"/jobs/{second}/checkpoints")).json()
        return cp if (cp.get("latest") or {}).get("restored") else None

    checkpoints = await eventually(restored, "restore info in /checkpoints")
    assert checkpoints["counts"]["restored"] == 1
    info = checkpoints["latest"]["restored"]
    assert info["is_savepoint"] is True
    assert info["external_path"] == location
    assert {"id", "restore_timestamp"} <= set(info)

    # Cancel: 202, then CANCELED. Cancelling a CANCELED job again is idempotent: 202 again (unlike a
    # FINISHED or FAILED job, which answers 409).
    r = await rest.patch(f"/jobs/{second}", params={"mode": "cancel"})
    assert r.status_code == 202, r.text
    await wait_state(rest, second, "CANCELED")
    r = await rest.patch(f"/jobs/{second}", params={"mode": "cancel"})
    assert r.status_code == 202, r.text
    assert r.json() == {}


async def test_stop_with_savepoint_without_drain(rest: httpx.AsyncClient, jar_id: str) -> None:
    job_id = await submit(rest, jar_id, "--mode", "unbounded")
    await wait_all_tasks_running(rest, job_id)
    r = await rest.post(f"/jobs/{job_id}/stop", json={"drain": False})
    assert r.status_code == 202, r.text
    trigger = r.json()["request-id"]

    async def savepoint_done() -> dict[str, Any] | None:
        s = (await rest.get(f"/jobs/{job_id}/savepoints/{trigger}")).json()
        return s if s["status"]["id"] == "COMPLETED" else None

    status = await eventually(savepoint_done, "stop-with-savepoint (no drain) to complete")
    assert Path(urlparse(status["operation"]["location"]).path).is_dir(), status
    await wait_state(rest, job_id, "FINISHED")
