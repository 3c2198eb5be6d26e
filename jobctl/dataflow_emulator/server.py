"""The emulator's gRPC server: the real google.dataflow.v1beta3 wire API over the pure model.

No generated stubs: each service is a `grpc.method_handlers_generic_handler` whose methods (de)serialize
with the proto-plus types of the official client (`Type.deserialize` / `Type.serialize`), so the official
clients talk to it unchanged over a plaintext channel. A model `EmulatorError` becomes `context.abort`
with its status code, which the official client raises as the matching google.api_core exception.

Besides the Dataflow services, one small admin service (`jobctl.dataflow_emulator.Admin`, JSON bodies,
same port, never UNAVAILABLE) changes faults at run time from another process; `client.EmulatorAdmin`
calls it. In-process code can use the `EmulatorServer` methods directly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from google.cloud import dataflow_v1beta3 as df

from .model import (
    DataflowModel,
    EmulatedJob,
    EmulatorConfig,
    EmulatorError,
    Faults,
    Importance,
    JobState,
    JobType,
    Message,
    Transition,
)

log = logging.getLogger("jobctl.dataflow_emulator")

ADMIN_SERVICE = "jobctl.dataflow_emulator.Admin"


# --------------------------------------------------------------------------------------- conversion
def _ts(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


def job_to_proto(job: EmulatedJob, *, created: bool = True) -> df.Job:
    out = df.Job(
        id=job.id if created else "",
        project_id=job.project_id,
        name=job.name,
        location=job.location,
        labels=job.labels,
        type_=df.JobType(int(job.type)),
        current_state=df.JobState(int(job.state)),
        current_state_time=_ts(job.state_time),
        requested_state=df.JobState(int(job.requested_state)),
        create_time=_ts(job.create_time),
        replace_job_id=job.replace_job_id,
        replaced_by_job_id=job.replaced_by_job_id,
        client_request_id=job.client_request_id,
        transform_name_mapping=job.transform_name_mapping,
    )
    if job.start_time is not None:
        out.start_time = _ts(job.start_time)
    return out


def message_to_proto(m: Message) -> df.JobMessage:
    return df.JobMessage(
        id=m.id, time=_ts(m.time), message_text=m.text, message_importance=df.JobMessageImportance(int(m.importance))
    )


def _epoch(dt: datetime) -> float:
    return dt.timestamp()


# ------------------------------------------------------------------------------------------ server
class EmulatorServer:
    """A running emulator: `.port`, `.address`, `.model`, the fault switches, `await .stop()`."""

    def __init__(self, config: EmulatorConfig | None = None, clock: Callable[[], float] | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.model = DataflowModel(self.config, clock=clock or time.time, on_transition=self._log_transition)
        self.host = ""
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self.requests: dict[str, int] = {}  # project -> Dataflow API requests served
        # job id -> (what its message depends on, the raw protobuf message). A watcher lists every active job
        # of its project each second; building each proto-plus Job afresh took most of the emulator's CPU at
        # 10,000 jobs, on the machine it shares with the Temporal server and worker that bench/run.py measures.
        self._listed: dict[str, tuple[tuple[object, ...], Any]] = {}

    @property
    def address(self) -> str:
        """host:port for DATAFLOW_EMULATOR_HOST / client.emulator_clients."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else "[::1]" if self.host in ("::", "[::]") else self.host
        return f"{host}:{self.port}"

    async def start(self, host: str = "localhost", port: int = 0) -> EmulatorServer:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(self._handlers())
        bound = server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise OSError(f"could not bind the Dataflow emulator to {host}:{port}")
        await server.start()
        self._server, self.host, self.port = server, host, bound
        log.info("Dataflow emulator listening on %s:%d", host, bound)
        return self

    async def stop(self, grace: float | None = None) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def __aenter__(self) -> EmulatorServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------- fault switches (in-process)
    def set_unavailable(self, seconds: float | None = None) -> None:
        """Answer UNAVAILABLE to every Dataflow call for `seconds` (None: until clear_unavailable)."""
        self.model.set_unavailable(seconds)

    def clear_unavailable(self) -> None:
        self.model.clear_unavailable()

    def fail_job(self, project_id: str, location: str, job_id: str, message: str | None = None) -> EmulatedJob:
        """The service fails this job on its own (with a JOB_MESSAGE_ERROR message)."""
        return self.model.fail_job(project_id, location, job_id, message)

    def set_faults(self, **changes: Any) -> Faults:
        """Change the fault defaults for jobs launched from now on (fields of model.Faults);
        `unavailable_seconds` switches UNAVAILABLE on at once (None: until cleared)."""
        unknown = set(changes) - set(Faults.model_fields)
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {sorted(Faults.model_fields)}")
        self.model.faults = Faults.model_validate({**self.model.faults.model_dump(), **changes})
        if "unavailable_seconds" in changes:
            self.model.set_unavailable(changes["unavailable_seconds"])
        return self.model.faults

    @staticmethod
    def _log_transition(job: EmulatedJob, t: Transition) -> None:
        src = "created" if t.src == JobState.JOB_STATE_UNKNOWN else t.src.name
        log.info("%s/%s job %s (%s): %s -> %s", job.project_id, job.location, job.id, job.name, src, t.dst.name)

    # ------------------------------------------------------------------------------- handlers
    def _handlers(self) -> tuple[grpc.GenericRpcHandler, ...]:
        def rpc(fn: Callable[[Any], Any], req: Any, resp: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap(fn), request_deserializer=req.deserialize, response_serializer=resp.serialize
            )

        jobs = grpc.method_handlers_generic_handler(
            "google.dataflow.v1beta3.JobsV1Beta3",
            {
                "CreateJob": rpc(self._create_job, df.CreateJobRequest, df.Job),
                "GetJob": rpc(self._get_job, df.GetJobRequest, df.Job),
                "UpdateJob": rpc(self._update_job, df.UpdateJobRequest, df.Job),
                "ListJobs": rpc(self._list_jobs, df.ListJobsRequest, df.ListJobsResponse),
                "AggregatedListJobs": rpc(self._aggregated_list_jobs, df.ListJobsRequest, df.ListJobsResponse),
            },
        )
        flex = grpc.method_handlers_generic_handler(
            "google.dataflow.v1beta3.FlexTemplatesService",
            {
                "LaunchFlexTemplate": rpc(
                    self._launch_flex, df.LaunchFlexTemplateRequest, df.LaunchFlexTemplateResponse
                ),
            },
        )
        templates = grpc.method_handlers_generic_handler(
            "google.dataflow.v1beta3.TemplatesService",
            {
                "LaunchTemplate": rpc(self._launch_template, df.LaunchTemplateRequest, df.LaunchTemplateResponse),
            },
        )
        messages = grpc.method_handlers_generic_handler(
            "google.dataflow.v1beta3.MessagesV1Beta3",
            {
                "ListJobMessages": rpc(self._list_messages, df.ListJobMessagesRequest, df.ListJobMessagesResponse),
            },
        )

        def admin(fn: Callable[[dict[str, Any]], Any]) -> grpc.RpcMethodHandler:
            async def call(body: dict[str, Any], context: grpc.aio.ServicerContext) -> Any:
                try:
                    return fn(body)
                except EmulatorError as e:
                    await context.abort(getattr(grpc.StatusCode, e.code.value), e.message)
                except (TypeError, ValueError) as e:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))

            return grpc.unary_unary_rpc_method_handler(
                call,
                request_deserializer=lambda b: json.loads(b or b"{}"),
                response_serializer=lambda o: json.dumps(o).encode(),
            )

        admin_handler = grpc.method_handlers_generic_handler(
            ADMIN_SERVICE,
            {
                "SetUnavailable": admin(lambda b: self.set_unavailable(b.get("seconds")) or {}),
                "ClearUnavailable": admin(lambda b: self.clear_unavailable() or {}),
                "FailJob": admin(
                    lambda b: _job_json(
                        self.fail_job(b["project_id"], b.get("location", ""), b["job_id"], b.get("message"))
                    )
                ),
                "SetFaults": admin(lambda b: self.set_faults(**b).model_dump(mode="json")),
                "RequestCounts": admin(lambda b: dict(self.requests)),
                "ListAllJobs": admin(
                    lambda b: (self.model.tick(), [_job_json(j) for j in self.model.jobs.values()])[1]
                ),
            },
        )
        return (jobs, flex, templates, messages, admin_handler)

    def _wrap(self, fn: Callable[[Any], Any]) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
            # Counted per project, as a quota would be: what the benchmark reports as requests per target.
            project = getattr(request, "project_id", "") or ""
            self.requests[project] = self.requests.get(project, 0) + 1
            if self.model.is_unavailable():
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE, "The Dataflow emulator is unavailable (injected fault)."
                )
            try:
                return fn(request)
            except EmulatorError as e:
                await context.abort(getattr(grpc.StatusCode, e.code.value), e.message)

        return handler

    # JobsV1Beta3 -------------------------------------------------------------------------------
    def _get_job(self, r: df.GetJobRequest) -> df.Job:
        return job_to_proto(self.model.get_job(r.project_id, r.location, r.job_id))

    def _create_job(self, r: df.CreateJobRequest) -> df.Job:
        j = r.job
        job = self.model.launch(
            r.project_id,
            r.location or j.location,
            j.name,
            kind="create",
            labels=dict(j.labels),
            replace_job_id=r.replace_job_id or j.replace_job_id,
            job_type=JobType(int(j.type_)),
            transform_name_mapping=dict(j.transform_name_mapping),
            client_request_id=j.client_request_id,
        )
        return job_to_proto(job)

    def _update_job(self, r: df.UpdateJobRequest) -> df.Job:
        requested = JobState(int(r.job.requested_state))
        paths = list(r.update_mask.paths) if "update_mask" in r else []
        if paths:
            if requested != JobState.JOB_STATE_UNKNOWN:
                raise EmulatorError("INVALID_ARGUMENT", "requested_state and update_mask cannot both be set")
            if paths != ["labels"]:
                raise EmulatorError("INVALID_ARGUMENT", f"the emulator can update only labels, not {paths}")
            return job_to_proto(self.model.set_labels(r.project_id, r.location, r.job_id, dict(r.job.labels)))
        return job_to_proto(
            self.model.update_job(r.project_id, r.location, r.job_id, requested, labels=dict(r.job.labels))
        )

    def _list(self, r: df.ListJobsRequest, location: str | None) -> df.ListJobsResponse:
        name = r.name if "name" in r and r.name else None
        jobs, token = self.model.list_jobs(
            r.project_id, location, filter=r.filter.name, name=name, page_size=r.page_size, page_token=r.page_token
        )
        raw = df.ListJobsResponse.pb()(jobs=[self._listed_job(j) for j in jobs], next_page_token=token)
        return df.ListJobsResponse.wrap(raw)

    def _listed_job(self, job: EmulatedJob) -> Any:
        """The job's raw protobuf message, built again only when something it shows has changed."""
        shown = (
            job.state,
            job.state_time,
            job.requested_state,
            job.type,
            job.start_time,
            job.replaced_by_job_id,
            tuple(job.labels.items()),
        )
        cached = self._listed.get(job.id)
        if cached is None or cached[0] != shown:
            cached = (shown, df.Job.pb(job_to_proto(job)))
            self._listed[job.id] = cached
        return cached[1]

    def _list_jobs(self, r: df.ListJobsRequest) -> df.ListJobsResponse:
        return self._list(r, r.location)

    def _aggregated_list_jobs(self, r: df.ListJobsRequest) -> df.ListJobsResponse:
        return self._list(r, None)  # every location of the project

    # Templates ---------------------------------------------------------------------------------
    def _launch_flex(self, r: df.LaunchFlexTemplateRequest) -> df.LaunchFlexTemplateResponse:
        p = r.launch_parameter
        env = p.environment
        path = p.container_spec_gcs_path or (p.container_spec.image if "container_spec" in p else "")
        job = self.model.launch(
            r.project_id,
            r.location,
            p.job_name,
            kind="flex",
            template_path=path,
            parameters=dict(p.parameters),
            labels=dict(env.additional_user_labels),
            update=p.update,
            transform_name_mapping=dict(p.transform_name_mappings),
            streaming_mode=int(env.streaming_mode) != 0,
            flexrs=int(env.flexrs_goal) != 0,
            validate_only=r.validate_only,
        )
        return df.LaunchFlexTemplateResponse(job=job_to_proto(job, created=not r.validate_only))

    def _launch_template(self, r: df.LaunchTemplateRequest) -> df.LaunchTemplateResponse:
        p = r.launch_parameters
        env = p.environment
        path = r.gcs_path or (r.dynamic_template.gcs_path if "dynamic_template" in r else "")
        job = self.model.launch(
            r.project_id,
            r.location,
            p.job_name,
            kind="classic",
            template_path=path,
            parameters=dict(p.parameters),
            labels=dict(env.additional_user_labels),
            update=p.update,
            transform_name_mapping=dict(p.transform_name_mapping),
            streaming_mode=int(env.streaming_mode) != 0,
            validate_only=r.validate_only,
        )
        return df.LaunchTemplateResponse(job=job_to_proto(job, created=not r.validate_only))

    # Messages ----------------------------------------------------------------------------------
    def _list_messages(self, r: df.ListJobMessagesRequest) -> df.ListJobMessagesResponse:
        msgs, token = self.model.list_messages(
            r.project_id,
            r.location,
            r.job_id,
            minimum_importance=Importance(int(r.minimum_importance)),
            start_time=_epoch(r.start_time) if "start_time" in r else None,
            end_time=_epoch(r.end_time) if "end_time" in r else None,
            page_size=r.page_size,
            page_token=r.page_token,
        )
        return df.ListJobMessagesResponse(job_messages=[message_to_proto(m) for m in msgs], next_page_token=token)


def _job_json(job: EmulatedJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "project_id": job.project_id,
        "location": job.location,
        "name": job.name,
        "type": job.type.name,
        "current_state": job.state.name,
        "current_state_time": job.state_time,
        "requested_state": job.requested_state.name,
        "replace_job_id": job.replace_job_id,
        "replaced_by_job_id": job.replaced_by_job_id,
        "labels": job.labels,
    }


# -------------------------------------------------------------------------------------- entry points
async def serve(host: str, port: int, config: EmulatorConfig) -> EmulatorServer:
    """Start an emulator on host:port (port 0: an ephemeral port, read it from `.port`)."""
    return await EmulatorServer(config).start(host, port)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m jobctl.dataflow_emulator",
        description="A local Google Cloud Dataflow emulator (gRPC google.dataflow.v1beta3).",
    )
    ap.add_argument("--host", default="localhost", help="address to bind (0.0.0.0 for every interface)")
    ap.add_argument("--port", type=int, default=8089, help="port (0: pick a free one)")
    ap.add_argument("--log-level", default="INFO")
    # One flag per config and fault field (--queued-seconds 0.5, --drain-never-completes true, ...).
    for model in (EmulatorConfig, Faults):
        for name, f in model.model_fields.items():
            if name != "faults":
                ap.add_argument(
                    f"--{name.replace('_', '-')}", dest=name, default=None, help=f.description or f"default {f.default}"
                )
    return ap


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """The EmulatorConfig of the command-line flags (unset flags keep the defaults)."""
    given = {k: v for k, v in vars(args).items() if v is not None and k not in ("host", "port", "log_level")}
    fault_fields = {k: given.pop(k) for k in list(given) if k in Faults.model_fields}
    if fault_fields.get("unavailable_seconds") in ("inf", "forever"):
        fault_fields["unavailable_seconds"] = math.inf
    return EmulatorConfig.model_validate({**given, "faults": fault_fields})


def main(argv: list[str] | None = None) -> None:
    """`python -m jobctl.dataflow_emulator --port 8089`: serve until SIGINT / SIGTERM."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from_args(args)

    async def run() -> None:
        server = await serve(args.host, args.port, config)
        print(
            f"Dataflow emulator listening on {args.host}:{server.port}\n"
            f"  export DATAFLOW_EMULATOR_HOST={server.address}",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop(grace=1.0)

    asyncio.run(run())
