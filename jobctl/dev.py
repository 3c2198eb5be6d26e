"""The local stack behind `jobctl dev`: everything a user needs to try jobctl on one machine.

Temporal dev server (SQLite file, web UI) + a real Flink session cluster from apache-flink-libraries +
a worker + the example streaming Job. Ctrl-C stops all of it, in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import uuid
from pathlib import Path

import yaml
from rich.console import Console
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import TypedSearchAttributes
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from activities.job import JobActivities
from jobctl.models import Job
from jobctl.settings import Settings
from jobctl.states import JobState
from jobctl.targets import DeploymentTargets
from jobctl.temporal_server import TemporalDevServer, TemporalSetupError
from worker.main import build_worker
from workflows.job import search_attributes_for

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_JOB_FILE = REPO / "examples" / "jobs" / "streaming.yaml"
console = Console()


class StackError(RuntimeError):
    pass


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def write_targets(path: Path, flink_rest_url: str, slots: int, savepoint_dir: Path) -> Path:
    doc = {
        "targets": [
            {
                "name": "local",
                "kind": "flink-session",
                "restUrl": flink_rest_url,
                "slots": slots,
                "savepointDir": savepoint_dir.as_uri(),
            }
        ]
    }
    path.write_text("# Written by `jobctl dev` for its local stack.\n" + yaml.safe_dump(doc, sort_keys=False))
    return path


class DevStack:
    def __init__(
        self,
        workdir: Path,
        flink_port: int = 8081,
        slots: int = 4,
        temporal_port: int = 7233,
        ui_port: int = 8233,
        start_example: bool = True,
    ) -> None:
        self.workdir = workdir
        self.flink_port = flink_port
        self.slots = slots
        self.temporal_port = temporal_port
        self.ui_port = ui_port
        self.start_example = start_example

    async def run(self, stop: asyncio.Event | None = None) -> None:
        from jobctl.flink_cluster import FlinkCluster, FlinkSetupError, build_example_jar, find_java

        try:
            await asyncio.to_thread(find_java)
        except FlinkSetupError as exc:
            raise StackError(str(exc)) from None
        for port, what, flag in (
            (self.temporal_port, "Temporal", "--temporal-port"),
            (self.ui_port, "the Temporal web UI", "--ui-port"),
            (self.flink_port, "Flink", "--flink-port"),
        ):
            if not _port_free(port):
                raise StackError(
                    f"port {port} for {what} is already in use (another `jobctl dev`?); free it or pass {flag}"
                )
        self.workdir.mkdir(parents=True, exist_ok=True)
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)

        temporal = TemporalDevServer(self.workdir / "temporal.db", self.temporal_port, self.ui_port)
        flink = FlinkCluster(self.workdir / "flink", rest_port=self.flink_port, slots=self.slots)
        activities: JobActivities | None = None
        try:
            console.print("building the example Flink job from source ...")
            built = await build_example_jar(self.workdir / "jars")
            jar = self.workdir / "example-job.jar"
            shutil.copyfile(built, jar)
            console.print("starting the Temporal dev server and a Flink session cluster ...")
            await asyncio.gather(temporal.start(), flink.start())
            targets_file = write_targets(self.workdir / "targets.yaml", flink.rest_url, self.slots, flink.savepoint_dir)
            settings = Settings(targets=str(targets_file))
            client = await Client.connect(temporal.address, data_converter=pydantic_data_converter)
            activities = JobActivities(DeploymentTargets.load(targets_file), settings)
            async with build_worker(client, activities, settings.task_queue):
                example = await self._start_example(client, settings, jar) if self.start_example else None
                self._banner(temporal, flink, targets_file, example)
                await stop.wait()
                console.print("stopping ...")
        except (FlinkSetupError, TemporalSetupError) as exc:
            raise StackError(str(exc)) from None
        finally:
            if activities:
                await activities.close()
            await flink.stop()
            await temporal.stop()

    async def _start_example(self, client: Client, settings: Settings, jar: Path) -> str:
        """Start the example Job once; on later runs keep the one that is still running."""
        id_file = self.workdir / "example-job-id"
        if id_file.exists():
            job_id = id_file.read_text().strip()
            with contextlib.suppress(RPCError):
                description = await client.get_workflow_handle(f"job-{job_id}").describe()
                if description.status == WorkflowExecutionStatus.RUNNING:
                    return job_id
        raw = yaml.safe_load(EXAMPLE_JOB_FILE.read_text())
        raw["metadata"]["id"] = str(uuid.uuid4())
        raw["spec"]["artifact"]["jarUri"] = jar.as_uri()
        job = Job.model_validate(raw)
        await client.start_workflow(
            "JobWorkflow",
            job,
            id=job.workflow_id,
            task_queue=settings.task_queue,
            search_attributes=TypedSearchAttributes(search_attributes_for(job, JobState.STARTING)),
            static_summary=f"example Job {job.metadata.name} on local",
        )
        id_file.write_text(job.metadata.id)
        return job.metadata.id

    def _banner(self, temporal: TemporalDevServer, flink: object, targets_file: Path, example: str | None) -> None:
        console.print(
            "\n[bold green]jobctl local stack is up[/bold green]\n"
            f"  Temporal web UI  {temporal.ui_url}\n"
            f"  Temporal         {temporal.address}  (TEMPORAL_ADDRESS)\n"
            f"  Flink web UI     {getattr(flink, 'rest_url', '')}\n"
            f"  targets file     {targets_file}\n"
            f"  files            {self.workdir}\n"
            + (
                f"  example Job      {example}\n\n  try:  jobctl status {example}\n        jobctl drain {example}\n"
                if example
                else ""
            )
            + "\nCtrl-C stops everything.",
            highlight=False,
        )
