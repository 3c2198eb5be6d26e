"""Session fixtures for the integration tests: the example job jar and one real Flink session cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from jobctl.dataflow_emulator import EmulatorConfig
from jobctl.flink_cluster import FlinkCluster, FlinkSetupError, _port_in_use, build_example_jar, free_port

FLINK_SLOTS = 4
# The Dataflow emulator's timings in the tests that run one: short, so a Job's lifecycle takes seconds.
EMULATOR_TIMINGS = EmulatorConfig(
    queued_seconds=0.5, pending_seconds=0.5, batch_running_seconds=2, draining_seconds=1, cancelling_seconds=0.5
)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def example_jar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/flink-job compiled against pyflink's lib/ (about 2 s), once per test session."""
    return await build_example_jar(tmp_path_factory.mktemp("example-jar"))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def flink_cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FlinkCluster]:
    """A real Flink 2.3 session cluster (JobManager + TaskManager JVMs, 4 slots) on a free port.

    Other people's tests run on this machine too: every port is ephemeral. A REST port picked free can be
    taken by someone else before the JobManager binds it, so a start that failed on a now-busy port is
    retried on a fresh one.
    """
    workdir = tmp_path_factory.mktemp("flink")
    cluster: FlinkCluster | None = None
    for attempt in range(3):
        port = free_port()
        cluster = FlinkCluster(workdir, rest_port=port, slots=FLINK_SLOTS)
        try:
            await cluster.start(timeout=180)
            break
        except FlinkSetupError:
            if attempt == 2 or not _port_in_use(port):
                raise
    assert cluster is not None
    try:
        yield cluster
    finally:
        await cluster.stop()
