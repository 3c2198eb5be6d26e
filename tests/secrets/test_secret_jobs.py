"""Secret parameters end to end: the real Temporal dev server, a real jobctl worker with JOBCTL_CODEC_KEY,
the Dataflow emulator. The engine gets the real values; no history, read without the key the way the web UI
or `temporal workflow show` reads it, holds them anywhere: inputs, results, updates, errors."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import yaml
from temporalio.client import Client, WorkflowHandle
from temporalio.common import RawValue
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.job import JobActivities
from jobctl.client import start_job
from jobctl.codec import data_converter, generate_key
from jobctl.dataflow_emulator import EmulatorConfig, EmulatorServer, serve
from jobctl.models import Job, JobStatus, RequestAnswer
from jobctl.settings import Settings
from jobctl.states import JobState
from jobctl.targets import DeploymentTargets
from jobctl.temporal_server import TemporalDevServer, free_port
from tests.secrets.scan import findings
from tests.waiting import final, wait_for, wait_state
from worker.main import build_worker

pytestmark = pytest.mark.integration

TASK_QUEUE = "jobctl-secrets-integration"
SECRET = "s3cr3t-db-password-7f3a"
NEW_SECRET = "s3cr3t-rotated-password-91b0"
ECHOED = "launch-refused-secret-4d2c"
STREAMING = {"jobctl-emulator-type": "streaming"}
TARGET = {"name": "dataflow-local", "kind": "dataflow", "project": "demo-project", "region": "us-central1"}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def emulator() -> AsyncIterator[EmulatorServer]:
    config = EmulatorConfig(queued_seconds=0.3, pending_seconds=0.3, cancelling_seconds=0.3)
    server = await serve("127.0.0.1", 0, config)
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dev_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TemporalDevServer]:
    server = TemporalDevServer(tmp_path_factory.mktemp("temporal-secrets") / "temporal.db", free_port(), ui_port=None)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def client(
    dev_server: TemporalDevServer, emulator: EmulatorServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Client]:
    """A client and a real worker sharing one JOBCTL_CODEC_KEY, as `jobctl` and `jobctl worker` do."""
    targets_file = tmp_path_factory.mktemp("targets-secrets") / "targets.yaml"
    targets_file.write_text(yaml.safe_dump({"targets": [TARGET]}))
    key = generate_key()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DATAFLOW_EMULATOR_HOST", emulator.address)
        env.setenv("JOBCTL_CODEC_KEY", key)
        settings = Settings(targets=str(targets_file), task_queue=TASK_QUEUE, poll_interval_seconds=0.25)
        client = await Client.connect(dev_server.address, data_converter=data_converter(settings.codec_keys()))
        activities = JobActivities(DeploymentTargets.load(targets_file), settings)
        try:
            async with build_worker(client, activities, TASK_QUEUE):
                yield client
        finally:
            await activities.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def keyless(dev_server: TemporalDevServer) -> Client:
    """What the web UI, `temporal workflow show` or a plain client see: no key, no codec."""
    return await Client.connect(dev_server.address, data_converter=pydantic_data_converter)


def secret_job(prefix: str, secrets: dict[str, str], params: dict[str, str] | None = None) -> Job:
    job_id = str(uuid.uuid4())
    return Job.model_validate(
        {
            "metadata": {"id": job_id, "name": prefix},
            "spec": {
                "engine": "DATAFLOW",
                "deploymentTargetName": "dataflow-local",
                "artifact": {
                    "kind": "FLEX_TEMPLATE",
                    "jobName": f"{prefix}-{job_id[:8]}",
                    "containerSpecGcsPath": "gs://bucket/templates/app.json",
                    "parameters": params if params is not None else STREAMING,
                    "secretParameters": secrets,
                },
            },
        }
    )


async def scan_history(keyless: Client, workflow_id: str, secrets: list[str], skip_events: int = 0) -> list[str]:
    """Findings in one workflow's history, read without the key: the secret values in any event's raw
    bytes, and whatever looks secret in its JSON."""
    history = await keyless.get_workflow_handle(workflow_id).fetch_history()
    found = [
        f"{workflow_id} event {event.event_id}: raw bytes hold a secret value"
        for event in history.events[skip_events:]
        if any(s.encode() in event.SerializeToString() for s in secrets)
    ]
    raw = json.loads(history.to_json())
    raw["events"] = raw["events"][skip_events:]
    return found + [f"{workflow_id} {f}" for f in findings(raw, secrets)]


async def scan_everything(keyless: Client, secrets: list[str]) -> list[str]:
    """Every workflow on the server: the Jobs, their successors, the Deployment Target's ledger, ..."""
    found: list[str] = []
    async for wf in keyless.list_workflows():
        found += await scan_history(keyless, wf.id, secrets)
    return found


async def test_secret_reaches_the_engine_and_no_history(
    client: Client, keyless: Client, emulator: EmulatorServer
) -> None:
    job = secret_job("secret", {"dbPassword": SECRET})
    handle: WorkflowHandle[Any, Job] = await start_job(client, job, TASK_QUEUE)
    status = await wait_state(handle, JobState.STARTED)
    launched = emulator.model.jobs[status.engine_job_id]
    assert launched.parameters == {**STREAMING, "dbPassword": SECRET}  # the real value, at launch only

    # An update carries a new secret: through the client (update request), the workflow (successor Job) and
    # the activities (submit input); Dataflow replaces the job in place.
    new_spec = job.spec.model_dump(mode="json", by_alias=True)
    new_spec["artifact"]["secretParameters"] = {"dbPassword": NEW_SECRET}
    answer = await handle.execute_update("update", {"spec": new_spec}, result_type=RequestAnswer)
    assert answer.accepted
    ended = await final(handle)
    assert ended.status and ended.status.state is JobState.TERMINATED
    successor_id = ended.status.links.successor_job_id
    assert successor_id
    successor = client.get_workflow_handle(f"job-{successor_id}", result_type=Job)
    status = await wait_for(
        successor,
        lambda s: s.state is JobState.STARTED and bool(s.engine_job_id) and s.engine_job_id != launched.id,
        "the successor STARTED on a new Dataflow job",
    )
    assert emulator.model.jobs[status.engine_job_id].parameters["dbPassword"] == NEW_SECRET
    await successor.execute_update("cancel", {"reason": "end of test"}, result_type=RequestAnswer)
    await final(successor)

    # What a user without the key sees of the Job: encrypted payloads where secrets are, plain JSON elsewhere.
    history = await keyless.get_workflow_handle(job.workflow_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    assert started.input.payloads[0].metadata["encoding"] == b"binary/encrypted"
    status_seen = await keyless.get_workflow_handle(job.workflow_id).query("status", result_type=JobStatus)
    assert status_seen.state is JobState.TERMINATED  # status holds no secrets: plain JSON for everyone
    raw_job = await keyless.get_workflow_handle(job.workflow_id).query("job", result_type=RawValue)
    assert SECRET.encode() not in raw_job.payload.SerializeToString()

    found = await scan_everything(keyless, [SECRET, NEW_SECRET])
    assert not found, "\n".join(found)


async def test_job_query_shows_secrets_as_stars(client: Client) -> None:
    job = secret_job("shown", {"dbPassword": SECRET})
    handle = await start_job(client, job, TASK_QUEUE)
    try:
        await wait_state(handle, JobState.STARTED)
        seen = await handle.query("job", result_type=Job)  # even with the key: the query never decrypts a secret
        assert seen.spec.secret_values == {"dbPassword": "***"}
    finally:
        await handle.execute_update("cancel", {"reason": "end of test"}, result_type=RequestAnswer)
        await final(handle)


async def test_a_secret_the_engine_echoes_in_an_error_is_scrubbed(
    client: Client, keyless: Client, emulator: EmulatorServer
) -> None:
    """Dataflow refuses the launch quoting a secret parameter: the Job fails with the reason, the secret as ***."""
    refusal = f"INVALID_ARGUMENT: credentials {ECHOED} were rejected"
    job = secret_job("echo", {"jobctl-emulator-launch-error": refusal, "apiToken": ECHOED, "dbPassword": SECRET})
    handle = await start_job(client, job, TASK_QUEUE)
    status = await wait_state(handle, JobState.FAILED)
    assert status.failure and status.failure.reason == "SubmitRejected"
    assert "credentials *** were rejected" in status.failure.message
    assert not [j for j in emulator.model.jobs.values() if j.name == job.spec.artifact.job_name]
    found = await scan_history(keyless, job.workflow_id, [ECHOED, SECRET, refusal])
    assert not found, "\n".join(found)


async def test_a_secret_in_the_engine_jobs_failure_message_is_scrubbed(
    client: Client, keyless: Client, emulator: EmulatorServer
) -> None:
    """The pipeline fails, its error message printing a secret parameter: the Job's failure shows ***."""
    job = secret_job(
        "crash",
        {"apiToken": ECHOED, "jobctl-emulator-fail-message": f"could not log in to the sink with token {ECHOED}"},
        params={**STREAMING, "jobctl-emulator-fail-after-seconds": "1"},
    )
    handle = await start_job(client, job, TASK_QUEUE)
    status = await wait_state(handle, JobState.FAILED)
    # (Here the whole message is a secret parameter too, as the emulator takes it from one: all of it is ***.)
    assert status.failure and status.failure.reason == "ENGINE_JOB_FAILED"
    assert "***" in status.failure.message and ECHOED not in status.failure.message
    found = await scan_history(keyless, job.workflow_id, [ECHOED])
    assert not found, "\n".join(found)


async def test_a_secret_sent_unencrypted_is_never_used(
    client: Client, keyless: Client, emulator: EmulatorServer
) -> None:
    """`temporal workflow start --input '{...secretParameters...}'` (no codec): the Job fails STARTING with
    the reason, nothing is launched, and the plaintext goes no further than the input the sender wrote."""
    job = secret_job("plain", {"dbPassword": SECRET})
    handle = await keyless.start_workflow("JobWorkflow", job, id=job.workflow_id, task_queue=TASK_QUEUE)
    status = await wait_state(client.get_workflow_handle(job.workflow_id), JobState.FAILED)
    assert status.failure and status.failure.reason == "SecretNotEncrypted"
    assert "dbPassword" in status.failure.message and "unencrypted" in status.failure.message
    assert not [j for j in emulator.model.jobs.values() if j.name == job.spec.artifact.job_name]
    found = await scan_history(keyless, handle.id, [SECRET], skip_events=1)
    assert not found, "\n".join(found)
    # The scan does see payloads: the sender's own input holds the secret in plaintext.
    assert await scan_history(keyless, handle.id, [SECRET])


async def test_a_worker_without_the_key_waits_for_one_that_has_it(
    client: Client, dev_server: TemporalDevServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Workers that lack the key cannot read the Job: its workflow task fails with the reason and is retried
    (nothing is written in plaintext) until a worker with the key takes it."""
    queue = f"{TASK_QUEUE}-keyless"
    targets = DeploymentTargets.parse({"targets": [TARGET]})
    settings = Settings(task_queue=queue, poll_interval_seconds=0.25)
    job = secret_job("keyless", {"dbPassword": SECRET})
    handle = await start_job(client, job, queue)
    keyless_client = await Client.connect(dev_server.address, data_converter=data_converter([]))
    activities = JobActivities(targets, settings)
    try:
        async with build_worker(keyless_client, activities, queue):
            for _ in range(100):
                history = await handle.fetch_history()
                failed = [e.workflow_task_failed_event_attributes.failure.message for e in history.events]
                if any("JOBCTL_CODEC_KEY is not set here" in m for m in failed):
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the keyless worker's workflow task never failed with the reason")
        async with build_worker(client, activities, queue):
            await wait_state(handle, JobState.STARTED)
            await handle.execute_update("cancel", {"reason": "end of test"}, result_type=RequestAnswer)
            await final(handle)
    finally:
        await activities.close()
