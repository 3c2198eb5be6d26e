"""Activity errors and results without secrets; Deployment Target credentials only on the wire."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput

from activities.job import JobActivities
from jobctl.engine import Observation, ObserveInput
from jobctl.models import Job
from jobctl.secret_scrubber import Secrets, SecretScrubber
from jobctl.settings import Settings
from jobctl.states import EnginePhase
from jobctl.targets import DeploymentTargets, TargetsError

SECRET = "s3cr3t-db-password-7f3a"
TOKEN = "tok-9c1e5b2d7a"


def test_errors_keep_their_type_and_lose_the_secret() -> None:
    secrets = Secrets([SECRET, "short"])
    try:
        try:
            raise ValueError(f"INVALID_ARGUMENT: parameter dbPassword={SECRET} is malformed")
        except ValueError as cause:
            raise ApplicationError(f"Dataflow refused: {cause}", type="SubmitRejected", non_retryable=True) from cause
    except ApplicationError as err:
        scrubbed = secrets.scrub_error(err)
    assert scrubbed is not None
    assert scrubbed.type == "SubmitRejected" and scrubbed.non_retryable
    assert scrubbed.message == "Dataflow refused: INVALID_ARGUMENT: parameter dbPassword=*** is malformed"
    assert SECRET not in str(scrubbed) and scrubbed.__cause__ is None

    plain = secrets.scrub_error(OSError(f"connection to {SECRET} refused"))
    assert plain is not None and plain.type == "OSError" and not plain.non_retryable  # still retried
    assert secrets.scrub_error(OSError("connection refused")) is None  # nothing to hide: raised as it was
    assert secrets.scrub("short stays") == "short stays"  # too short to search for without garbling messages


def test_results_lose_the_secret() -> None:
    obs = Observation(
        engine_job_id="j1",
        phase=EnginePhase.FAILED,
        engine_status="JOB_STATE_FAILED",
        failure_message=f"Workflow failed. Causes: could not log in with {SECRET}",
        observed_at=datetime.now(UTC),
    )
    scrubbed = Secrets([SECRET]).scrub_result(obs)
    assert scrubbed.failure_message == "Workflow failed. Causes: could not log in with ***"
    assert Secrets([SECRET]).scrub_result(scrubbed) is scrubbed  # nothing to change: the same object


@pytest_asyncio.fixture(loop_scope="session")
async def echoing_proxy() -> AsyncIterator[tuple[str, list[str]]]:
    """A proxy in front of Flink that refuses every call with a body repeating the request's headers."""
    seen: list[str] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        seen.append(head)
        body = json.dumps({"errors": [f"401 Unauthorized: the proxy refused {head!r}"]}).encode()
        writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.close()
        await server.wait_closed()


class _Run(ActivityInboundInterceptor):
    """The end of the interceptor chain: run the activity."""

    def __init__(self) -> None:
        pass

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        return await input.fn(*input.args)


async def test_target_headers_go_on_the_wire_and_never_into_results(echoing_proxy: tuple[str, list[str]]) -> None:
    url, seen = echoing_proxy
    targets = DeploymentTargets.parse(
        {
            "targets": [
                {
                    "name": "guarded",
                    "kind": "flink-session",
                    "restUrl": url,
                    "slots": 2,
                    "headers": {"Authorization": f"Bearer {TOKEN}"},
                }
            ]
        }
    )
    activities = JobActivities(targets, Settings(poll_interval_seconds=0.05))
    job = Job.model_validate(
        {
            "spec": {
                "engine": "FLINK",
                "deploymentTargetName": "guarded",
                "artifact": {"kind": "JAR", "jarUri": "file:///job.jar"},
            }
        }
    )
    request = ObserveInput(metadata=job.metadata, spec=job.spec, engine_job_id="a" * 32, max_wait_seconds=1)
    chain = SecretScrubber(targets).intercept_activity(_Run())
    call = ExecuteActivityInput(fn=activities.observe, args=[request], executor=None, headers={})
    try:
        obs = await ActivityEnvironment().run(chain.execute_activity, call)
    finally:
        await activities.close()
    assert any(f"authorization: Bearer {TOKEN}".lower() in head.lower() for head in seen)  # sent to the target
    assert obs.unreachable_reason and "401 Unauthorized" in obs.unreachable_reason  # the echo, scrubbed
    assert TOKEN not in obs.model_dump_json()
    assert "***" in obs.unreachable_reason
    # The targets file is the only place credentials live: `jobctl targets --json` does not show them.
    assert TOKEN not in json.dumps(targets.all()[0].model_dump(mode="json"))


def test_credentials_in_a_target_url_are_refused() -> None:
    for url in ("http://admin:hunter22@flink:8081", "http://flink:8081/?token=abc"):
        with pytest.raises(TargetsError, match="put credentials in `headers`") as err:
            DeploymentTargets.parse({"targets": [{"name": "t", "kind": "flink-session", "restUrl": url, "slots": 1}]})
        assert "hunter22" not in str(err.value) and "abc" not in str(err.value)
