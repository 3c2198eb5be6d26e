"""Round trips through the OFFICIAL async Dataflow clients against the emulator on an ephemeral port.

Timings are fractions of a second; tests poll with a deadline instead of asserting after a sleep, and every
client call has an explicit timeout (the official client has none by default).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
import pytest_asyncio
from google.api_core import exceptions as gexc
from google.cloud import dataflow_v1beta3 as df

from jobctl.dataflow_emulator import EmulatorAdmin, EmulatorConfig, EmulatorServer, emulator_clients, serve
from jobctl.dataflow_emulator.client import DataflowClients

P, L = "demo-project", "europe-west1"
T = 5.0  # seconds: the timeout of every client call
DEADLINE = 15.0  # seconds: how long a poll waits for a state
STREAMING = {"jobctl-emulator-type": "streaming"}
BATCH = {"jobctl-emulator-type": "batch"}
S = df.JobState


@pytest_asyncio.fixture
async def server() -> AsyncIterator[EmulatorServer]:
    srv = await serve(
        "127.0.0.1",
        0,
        EmulatorConfig(
            queued_seconds=0.1,
            pending_seconds=0.1,
            batch_running_seconds=0.3,
            draining_seconds=0.2,
            cancelling_seconds=0.1,
        ),
    )
    try:
        yield srv
    finally:
        await srv.stop()


@pytest_asyncio.fixture
async def dataflow(server: EmulatorServer) -> AsyncIterator[DataflowClients]:
    async with emulator_clients(server.address) as clients:
        yield clients


async def launch(
    dataflow: DataflowClients,
    name: str,
    params: dict[str, str] | None = None,
    *,
    update: bool = False,
    labels: dict[str, str] | None = None,
    location: str = L,
) -> df.Job:
    resp = await dataflow.flex_templates.launch_flex_template(
        request={
            "project_id": P,
            "location": location,
            "launch_parameter": {
                "job_name": name,
                "container_spec_gcs_path": "gs://bucket/templates/app.json",
                "parameters": params or {},
                "update": update,
                "environment": {"additional_user_labels": labels or {}},
            },
        },
        timeout=T,
    )
    return resp.job


async def get(dataflow: DataflowClients, job_id: str, location: str = L) -> df.Job:
    return await dataflow.jobs.get_job(request={"project_id": P, "location": location, "job_id": job_id}, timeout=T)


async def request_state(dataflow: DataflowClients, job_id: str, state: df.JobState) -> df.Job:
    return await dataflow.jobs.update_job(
        request={"project_id": P, "location": L, "job_id": job_id, "job": {"requested_state": state}}, timeout=T
    )


async def wait_for(dataflow: DataflowClients, job_id: str, states: Iterable[df.JobState]) -> tuple[df.Job, list]:
    """Poll until the job is in one of `states`; returns it and the distinct states observed on the way."""
    wanted, seen = set(states), []
    end = time.monotonic() + DEADLINE
    while True:
        job = await get(dataflow, job_id)
        if not seen or seen[-1] != job.current_state:
            seen.append(job.current_state)
        if job.current_state in wanted:
            return job, seen
        assert time.monotonic() < end, f"job {job_id} never reached {wanted}; saw {seen}"
        await asyncio.sleep(0.02)


async def test_flex_launch_queued_pending_running(dataflow: DataflowClients):
    job = await launch(dataflow, "wordcount", STREAMING, labels={"jobctl-job-id": "3f1da3c8"})
    assert job.id and job.name == "wordcount" and job.project_id == P and job.location == L
    assert job.current_state == S.JOB_STATE_QUEUED and job.type_ == df.JobType.JOB_TYPE_UNKNOWN
    assert job.labels == {"jobctl-job-id": "3f1da3c8"} and job.client_request_id
    assert job.create_time and job.start_time == job.create_time and job.current_state_time
    running, seen = await wait_for(dataflow, job.id, [S.JOB_STATE_RUNNING])
    assert set(seen) <= {S.JOB_STATE_QUEUED, S.JOB_STATE_PENDING, S.JOB_STATE_RUNNING}
    assert running.type_ == df.JobType.JOB_TYPE_STREAMING
    assert running.current_state_time > job.current_state_time
    for project, location in ((P, "us-central1"), ("other-project", L)):  # project + region are honoured
        with pytest.raises(gexc.NotFound):
            await dataflow.jobs.get_job(
                request={"project_id": project, "location": location, "job_id": job.id}, timeout=T
            )


async def test_duplicate_name_is_already_exists_and_found_by_name(dataflow: DataflowClients):
    job = await launch(dataflow, "etl", labels={"jobctl-job-id": "abc"})
    with pytest.raises(gexc.AlreadyExists) as e:
        await launch(dataflow, "etl", labels={"jobctl-job-id": "abc"})
    assert e.value.code == 409
    await launch(dataflow, "etl", location="us-east1")  # the same name in another region is fine
    pager = await dataflow.jobs.list_jobs(
        request={"project_id": P, "location": L, "name": "etl", "filter": df.ListJobsRequest.Filter.ACTIVE}, timeout=T
    )
    found = [j async for j in pager]
    assert [(j.id, j.labels["jobctl-job-id"]) for j in found] == [(job.id, "abc")]


async def test_drain_streaming_job(dataflow: DataflowClients):
    job = await launch(dataflow, "stream", STREAMING)
    await wait_for(dataflow, job.id, [S.JOB_STATE_RUNNING])
    resp = await request_state(dataflow, job.id, S.JOB_STATE_DRAINED)
    assert resp.current_state == S.JOB_STATE_DRAINING and resp.requested_state == S.JOB_STATE_DRAINED
    done, seen = await wait_for(dataflow, job.id, [S.JOB_STATE_DRAINED])
    assert seen[0] in (S.JOB_STATE_DRAINING, S.JOB_STATE_DRAINED)
    with pytest.raises(gexc.FailedPrecondition):  # terminal: any further request is refused
        await request_state(dataflow, job.id, S.JOB_STATE_CANCELLED)


async def test_drain_of_batch_job_is_refused(dataflow: DataflowClients):
    job = await launch(dataflow, "batch", {**BATCH, "jobctl-emulator-run-seconds": "30"})
    await wait_for(dataflow, job.id, [S.JOB_STATE_RUNNING])
    with pytest.raises(gexc.InvalidArgument):
        await request_state(dataflow, job.id, S.JOB_STATE_DRAINED)
    assert (await get(dataflow, job.id)).current_state == S.JOB_STATE_RUNNING
    await request_state(dataflow, job.id, S.JOB_STATE_CANCELLED)
    await wait_for(dataflow, job.id, [S.JOB_STATE_CANCELLED])


async def test_batch_job_finishes_done(dataflow: DataflowClients):
    job = await launch(dataflow, "short-batch", BATCH)
    done, _ = await wait_for(dataflow, job.id, [S.JOB_STATE_DONE])
    assert done.type_ == df.JobType.JOB_TYPE_BATCH


async def test_cancel_of_queued_job_is_immediate(dataflow: DataflowClients):
    job = await launch(dataflow, "queued", {"jobctl-emulator-queued-seconds": "3600"})
    resp = await request_state(dataflow, job.id, S.JOB_STATE_CANCELLED)
    assert resp.current_state == S.JOB_STATE_CANCELLED
    assert (await get(dataflow, job.id)).current_state == S.JOB_STATE_CANCELLED


async def test_update_launch_replaces_running_streaming_job(dataflow: DataflowClients):
    old = await launch(dataflow, "stream", STREAMING)
    await wait_for(dataflow, old.id, [S.JOB_STATE_RUNNING])
    new = await launch(dataflow, "stream", STREAMING, update=True)
    assert new.id != old.id and new.replace_job_id == old.id
    old_now = await get(dataflow, old.id)
    assert old_now.current_state == S.JOB_STATE_UPDATED and old_now.replaced_by_job_id == new.id
    await wait_for(dataflow, new.id, [S.JOB_STATE_RUNNING])
    with pytest.raises(gexc.FailedPrecondition):  # nothing active named like this to update
        await launch(dataflow, "nothing-to-update", STREAMING, update=True)


async def test_unavailable_switch(server: EmulatorServer, dataflow: DataflowClients):
    job = await launch(dataflow, "j")
    server.set_unavailable()
    with pytest.raises(gexc.ServiceUnavailable):
        await get(dataflow, job.id)
    server.clear_unavailable()
    assert (await get(dataflow, job.id)).id == job.id
    server.set_unavailable(1.0)
    with pytest.raises(gexc.ServiceUnavailable):
        await get(dataflow, job.id)
    end = time.monotonic() + DEADLINE
    while True:  # it ends by itself
        try:
            await get(dataflow, job.id)
            break
        except gexc.ServiceUnavailable:
            assert time.monotonic() < end
            await asyncio.sleep(0.02)


async def test_failed_job_messages(dataflow: DataflowClients):
    job = await launch(
        dataflow,
        "doomed",
        {"jobctl-emulator-fail-after-seconds": "0.2", "jobctl-emulator-fail-message": "Workflow failed: bad input"},
    )
    await wait_for(dataflow, job.id, [S.JOB_STATE_FAILED])
    pager = await dataflow.messages.list_job_messages(
        request={
            "project_id": P,
            "location": L,
            "job_id": job.id,
            "minimum_importance": df.JobMessageImportance.JOB_MESSAGE_ERROR,
        },
        timeout=T,
    )
    errors = [m async for m in pager]
    assert [(m.message_importance, m.message_text) for m in errors] == [
        (df.JobMessageImportance.JOB_MESSAGE_ERROR, "Workflow failed: bad input")
    ]
    everything = [
        m
        async for m in await dataflow.messages.list_job_messages(
            request={"project_id": P, "location": L, "job_id": job.id, "page_size": 1}, timeout=T
        )
    ]
    assert len(everything) > 1  # the pager followed next_page_token


async def test_admin_service_from_another_client(server: EmulatorServer, dataflow: DataflowClients):
    job = await launch(dataflow, "stream", STREAMING)
    await wait_for(dataflow, job.id, [S.JOB_STATE_RUNNING])
    async with EmulatorAdmin(server.address) as admin:
        failed = await admin.fail_job(P, L, job.id, "The service lost the worker pool.")
        assert failed["current_state"] == "JOB_STATE_FAILED"
        await admin.set_faults(drain_never_completes=True)
        await admin.set_unavailable(None)
        with pytest.raises(gexc.ServiceUnavailable):
            await get(dataflow, job.id)
        await admin.clear_unavailable()
        assert [j["id"] for j in await admin.list_all_jobs()] == [job.id]
    stuck = await launch(dataflow, "stuck", STREAMING)
    await wait_for(dataflow, stuck.id, [S.JOB_STATE_RUNNING])
    await request_state(dataflow, stuck.id, S.JOB_STATE_DRAINED)
    assert server.model.jobs[stuck.id].drain_never_completes
    await request_state(dataflow, stuck.id, S.JOB_STATE_CANCELLED)  # the cancel fallback
    await wait_for(dataflow, stuck.id, [S.JOB_STATE_CANCELLED])


async def test_classic_template_create_job_list_and_paging(dataflow: DataflowClients):
    resp = await dataflow.templates.launch_template(
        request={
            "project_id": P,
            "location": L,
            "gcs_path": "gs://bucket/templates/streaming-wordcount",
            "launch_parameters": {"job_name": "classic", "environment": {"additional_user_labels": {"a": "b"}}},
        },
        timeout=T,
    )
    assert resp.job.type_ == df.JobType.JOB_TYPE_STREAMING and resp.job.labels == {"a": "b"}
    created = await dataflow.jobs.create_job(
        request={"project_id": P, "location": L, "job": {"name": "sdk-job", "type_": df.JobType.JOB_TYPE_BATCH}},
        timeout=T,
    )
    assert created.current_state == S.JOB_STATE_STOPPED  # created, not started yet
    await wait_for(dataflow, created.id, [S.JOB_STATE_RUNNING, S.JOB_STATE_DONE])
    for i in range(3):
        await launch(dataflow, f"many-{i}", location="us-east1")
    pager = await dataflow.jobs.list_jobs(
        request={"project_id": P, "location": "us-east1", "page_size": 2, "filter": df.ListJobsRequest.Filter.ALL},
        timeout=T,
    )
    pages = [page async for page in pager.pages]  # the pager follows next_page_token
    assert [len(page.jobs) for page in pages] == [2, 1]
    assert sorted(j.name for page in pages for j in page.jobs) == ["many-0", "many-1", "many-2"]
    agg = await dataflow.jobs.aggregated_list_jobs(request={"project_id": P}, timeout=T)
    assert {j.location async for j in agg} == {L, "us-east1"}
    validated = await dataflow.flex_templates.launch_flex_template(
        request={
            "project_id": P,
            "location": L,
            "validate_only": True,
            "launch_parameter": {"job_name": "dry-run", "container_spec_gcs_path": "gs://b/t.json"},
        },
        timeout=T,
    )
    assert validated.job.id == ""  # checked, not created
    with pytest.raises(gexc.InvalidArgument):
        await launch(dataflow, "Not_A_Valid_Name")


def test_command_line_flags_build_the_config():
    from jobctl.dataflow_emulator.server import _parser, config_from_args

    cfg = config_from_args(
        _parser().parse_args(
            [
                "--queued-seconds",
                "0.5",
                "--resource-cleaning-up",
                "true",
                "--drain-never-completes",
                "true",
                "--unavailable-seconds",
                "inf",
                "--default-job-type",
                "streaming",
            ]
        )
    )
    assert (cfg.queued_seconds, cfg.resource_cleaning_up, cfg.default_job_type) == (0.5, True, "streaming")
    assert cfg.faults.drain_never_completes and cfg.faults.unavailable_seconds == float("inf")
    assert config_from_args(_parser().parse_args([])) == EmulatorConfig()


def test_module_entry_point_serves_until_terminated():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobctl.dataflow_emulator",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--queued-seconds",
            "0",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).parents[2],
    )
    try:
        address = None
        for line in proc.stdout:  # the address is printed once the server listens
            if "DATAFLOW_EMULATOR_HOST=" in line:
                address = line.strip().split("=", 1)[1]
                break
        assert address and address.startswith("127.0.0.1:")

        async def round_trip() -> None:
            async with emulator_clients(address) as clients:
                job = await launch(clients, "from-cli")
                assert job.current_state == S.JOB_STATE_PENDING  # queued-seconds 0

        asyncio.run(round_trip())
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
