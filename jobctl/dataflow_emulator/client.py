"""Official async Dataflow clients for an emulator address, and a client for the emulator's admin service.

The official clients, given only `client_options.api_endpoint`, still open a TLS channel with Application
Default Credentials; an emulator needs a plaintext channel handed to the gRPC transport instead. That is
the convention of Google's own emulators (PUBSUB_EMULATOR_HOST): production code calls
`emulator_host()` and, when it returns an address, builds its clients with `emulator_clients(address)`.

Build the clients inside the running event loop that will use them (a grpc.aio channel belongs to one loop).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.cloud.dataflow_v1beta3 import (
    FlexTemplatesServiceAsyncClient,
    JobsV1Beta3AsyncClient,
    MessagesV1Beta3AsyncClient,
    TemplatesServiceAsyncClient,
)
from google.cloud.dataflow_v1beta3.services.flex_templates_service.transports import (
    FlexTemplatesServiceGrpcAsyncIOTransport,
)
from google.cloud.dataflow_v1beta3.services.jobs_v1_beta3.transports import JobsV1Beta3GrpcAsyncIOTransport
from google.cloud.dataflow_v1beta3.services.messages_v1_beta3.transports import (
    MessagesV1Beta3GrpcAsyncIOTransport,
)
from google.cloud.dataflow_v1beta3.services.templates_service.transports import (
    TemplatesServiceGrpcAsyncIOTransport,
)

ENV_VAR = "DATAFLOW_EMULATOR_HOST"
ADMIN_SERVICE = "jobctl.dataflow_emulator.Admin"


def emulator_host(environ: Mapping[str, str] | None = None) -> str | None:
    """The emulator address from DATAFLOW_EMULATOR_HOST ("host:port"), or None for the real service."""
    value = (os.environ if environ is None else environ).get(ENV_VAR, "").strip()
    return value or None


@dataclass
class DataflowClients:
    """The four official async clients, sharing one plaintext channel. `await close()` when done."""

    address: str
    channel: grpc.aio.Channel
    jobs: JobsV1Beta3AsyncClient
    flex_templates: FlexTemplatesServiceAsyncClient
    templates: TemplatesServiceAsyncClient
    messages: MessagesV1Beta3AsyncClient

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> DataflowClients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def emulator_channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address)


def emulator_clients(address: str, channel: grpc.aio.Channel | None = None) -> DataflowClients:
    """Official async clients for the emulator at "host:port" (plaintext gRPC, no credentials)."""
    ch = channel or emulator_channel(address)
    return DataflowClients(
        address=address,
        channel=ch,
        jobs=JobsV1Beta3AsyncClient(transport=JobsV1Beta3GrpcAsyncIOTransport(channel=ch)),
        flex_templates=FlexTemplatesServiceAsyncClient(transport=FlexTemplatesServiceGrpcAsyncIOTransport(channel=ch)),
        templates=TemplatesServiceAsyncClient(transport=TemplatesServiceGrpcAsyncIOTransport(channel=ch)),
        messages=MessagesV1Beta3AsyncClient(transport=MessagesV1Beta3GrpcAsyncIOTransport(channel=ch)),
    )


class EmulatorAdmin:
    """Run-time fault switches of an emulator in another process (JSON over gRPC on the same port)."""

    def __init__(self, address: str, channel: grpc.aio.Channel | None = None, timeout: float = 10.0) -> None:
        self._own = channel is None
        self.channel = channel or emulator_channel(address)
        self.timeout = timeout

    async def _call(self, method: str, body: dict[str, Any] | None = None) -> Any:
        rpc = self.channel.unary_unary(
            f"/{ADMIN_SERVICE}/{method}",
            request_serializer=lambda o: json.dumps(o).encode(),
            response_deserializer=lambda b: json.loads(b or b"null"),
        )
        return await rpc(body or {}, timeout=self.timeout)

    async def set_unavailable(self, seconds: float | None = None) -> None:
        """Every Dataflow call answers UNAVAILABLE for `seconds` (None: until clear_unavailable)."""
        await self._call("SetUnavailable", {"seconds": seconds})

    async def clear_unavailable(self) -> None:
        await self._call("ClearUnavailable")

    async def fail_job(self, project_id: str, location: str, job_id: str, message: str | None = None) -> dict:
        """The service fails the job on its own; returns the job as JSON."""
        return await self._call(
            "FailJob", {"project_id": project_id, "location": location, "job_id": job_id, "message": message}
        )

    async def set_faults(self, **faults: Any) -> dict:
        """Fault defaults for jobs launched from now on (fail_after_seconds, drain_never_completes, ...)."""
        return await self._call("SetFaults", faults)

    async def request_counts(self) -> dict[str, int]:
        """Dataflow API requests served so far, per project."""
        return await self._call("RequestCounts")

    async def list_all_jobs(self) -> list[dict]:
        return await self._call("ListAllJobs")

    async def close(self) -> None:
        if self._own:
            await self.channel.close()

    async def __aenter__(self) -> EmulatorAdmin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
