"""A local Google Cloud Dataflow emulator speaking the real gRPC API (google.dataflow.v1beta3).

The official clients run unchanged against it over a plaintext channel (see `client.emulator_clients`;
production code uses it when DATAFLOW_EMULATOR_HOST is set). `model` is the pure service state (jobs,
the JobState transition table, timing, faults, driven by an explicit clock); `server` puts it on gRPC.
Conventions for job type and fault launch parameters: see the `model` docstring.

    server = await serve("127.0.0.1", 0, EmulatorConfig(queued_seconds=0.1))
    clients = emulator_clients(server.address)
    ...
    await clients.close(); await server.stop()

Run it: `python -m jobctl.dataflow_emulator --port 8089`.

`server` and `client` import grpc and the Google client; they load on first use so that importing
`jobctl.dataflow_emulator.model` stays free of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .model import (
    ALLOWED,
    PARAM_PREFIX,
    TERMINAL,
    DataflowModel,
    EmulatedJob,
    EmulatorConfig,
    EmulatorError,
    Faults,
    IllegalTransition,
    JobState,
    JobType,
    ManualClock,
)

if TYPE_CHECKING:
    from .client import ENV_VAR, DataflowClients, EmulatorAdmin, emulator_clients, emulator_host
    from .server import EmulatorServer, main, serve

_LAZY = {
    "EmulatorServer": "server",
    "serve": "server",
    "main": "server",
    "DataflowClients": "client",
    "EmulatorAdmin": "client",
    "emulator_clients": "client",
    "emulator_host": "client",
    "ENV_VAR": "client",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ALLOWED",
    "TERMINAL",
    "PARAM_PREFIX",
    "DataflowModel",
    "EmulatedJob",
    "EmulatorConfig",
    "EmulatorError",
    "Faults",
    "IllegalTransition",
    "JobState",
    "JobType",
    "ManualClock",
    "EmulatorServer",
    "serve",
    "main",
    "DataflowClients",
    "EmulatorAdmin",
    "emulator_clients",
    "emulator_host",
    "ENV_VAR",
]
