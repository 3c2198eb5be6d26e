"""Fixtures of the reliability tests: the integration tests' Flink cluster and example jar, a Temporal dev
server and a Dataflow emulator of their own. Workers are `jobctl worker` processes each test starts (and
kills) itself; see support.WorkerProcess.

The short versions run in CI; the long ones are the same tests with bigger knobs set in the environment
(docs/reliability-figures.md), e.g. JOBCTL_CHAOS_LIFECYCLES=100 JOBCTL_CHAOS_KILLS=20.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from jobctl.dataflow_emulator import EmulatorServer, serve
from jobctl.temporal_server import TemporalDevServer, free_port

# The same session fixtures as tests/integration (a directory's conftest is not seen from here).
from tests.integration.conftest import EMULATOR_TIMINGS, example_jar, flink_cluster  # noqa: F401


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: reliability tests (worker kills, engine outages, Temporal restarts)")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def emulator() -> AsyncIterator[EmulatorServer]:
    """The Dataflow emulator (real gRPC API) with short timings; worker processes reach it through
    DATAFLOW_EMULATOR_HOST."""
    server = await serve("127.0.0.1", 0, EMULATOR_TIMINGS)
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def dev_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TemporalDevServer]:
    db_file = tmp_path_factory.mktemp("temporal-chaos") / "temporal.db"
    server = TemporalDevServer(db_file, port=free_port(), ui_port=None)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def client(dev_server: TemporalDevServer) -> Client:
    return await Client.connect(dev_server.address, data_converter=pydantic_data_converter)
