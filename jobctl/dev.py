"""The local stack behind `jobctl dev`: everything a user needs to try jobctl on one machine.

Temporal dev server (SQLite file, web UI) + a real Flink session cluster from apache-flink-libraries +
a worker + the example streaming Job. Ctrl-C stops all of it, in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import uuid
from pathlib import Path

import yaml
from rich.console import Console
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from activities.job import JobActivities
from jobctl.client import start_job
from jobctl.codec import data_converter, generate_key, parse_keys
from jobctl.dataflow_emulator import EmulatorConfig, serve
from jobctl.models import Job
from jobctl.settings import Settings
from jobctl.targets import DeploymentTargets
from jobctl.temporal_server import TemporalDevServer, TemporalSetupError
from worker.main import build_worker

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_JOB_FILE = REPO / "examples" / "jobs" / "streaming.yaml"
EXAMPLE_DATAFLOW_JOB_FILE = REPO / "examples" / "jobs" / "dataflow-streaming.yaml"
DATAFLOW_PROJECT, DATAFLOW_REGION = "demo-project", "us-central1"
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


def write_targets(path: Path, flink_rest_url: str, slots: int, savepoint_dir: Path, dataflow: bool = False) -> Path:
    targets: list[dict[str, object]] = [
        {
            "name": "local",
            "kind": "flink-session",
            "restUrl": flink_rest_url,
            "slots": slots,
            "savepointDir": savepoint_dir.as_uri(),
        }
    ]
    if dataflow:
        targets.append(
            {
                "name": "dataflow-local",
                "kind": "dataflow",
                "project": DATAFLOW_PROJECT,
                "region": DATAFLOW_REGION,
                "maxConcurrentJobs": 25,
            }
        )
    header = "# Written by `jobctl dev` for its local stack (dataflow-local is the Dataflow emulator).\n"
    path.write_text(header + yaml.safe_dump({"targets": targets}, sort_keys=False))
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
        dataflow_port: int = 8089,
    ) -> None:
        self.dataflow_port = dataflow_port
        self.workdir = workdir
        self.flink_port = flink_port
        self.slots = slots
        self.temporal_port = temporal_port
        self.ui_port = ui_port
        self.start_example = start_example
        # The stack's own JOBCTL_CODEC_KEY file, when the environment gives none.
        self.key_file: Path | None = None

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
            (self.dataflow_port, "the Dataflow emulator", "--dataflow-port"),
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
        emulator = None
        try:
            console.print("building the example Flink job from source ...")
            built = await build_example_jar(self.workdir / "jars")
            jar = self.workdir / "example-job.jar"
            shutil.copyfile(built, jar)
            console.print("starting the Temporal dev server, a Flink session cluster and the Dataflow emulator ...")
            emulator = await serve("127.0.0.1", self.dataflow_port, EmulatorConfig())
            # The worker's Dataflow engine (in this process) talks to the emulator instead of Google.
            os.environ["DATAFLOW_EMULATOR_HOST"] = emulator.address
            await asyncio.gather(temporal.start(), flink.start())
            targets_file = write_targets(
                self.workdir / "targets.yaml", flink.rest_url, self.slots, flink.savepoint_dir, dataflow=True
            )
            settings = Settings(targets=str(targets_file))
            converter = data_converter(self._codec_keys(settings))
            client = await Client.connect(temporal.address, data_converter=converter)
            activities = JobActivities(DeploymentTargets.load(targets_file), settings)
            async with build_worker(client, activities, settings.task_queue):
                examples = await self._start_examples(client, settings, jar) if self.start_example else {}
                self._banner(temporal, flink, emulator.address, targets_file, examples)
                await stop.wait()
                console.print("stopping ...")
        except (FlinkSetupError, TemporalSetupError) as exc:
            raise StackError(str(exc)) from None
        finally:
            if activities:
                await activities.close()
            if emulator:
                await emulator.stop()
            await flink.stop()
            await temporal.stop()

    async def _start_examples(self, client: Client, settings: Settings, jar: Path) -> dict[str, str]:
        flink = await self._start_example(client, settings, EXAMPLE_JOB_FILE, "flink", jar)
        dataflow = await self._start_example(client, settings, EXAMPLE_DATAFLOW_JOB_FILE, "dataflow", None)
        return {"Flink": flink, "Dataflow": dataflow}

    async def _start_example(self, client: Client, settings: Settings, file: Path, key: str, jar: Path | None) -> str:
        """Start an example Job (and end the one a previous run of the stack started)."""
        id_file = self.workdir / f"example-{key}-job-id"
        if id_file.exists():
            # The local Flink cluster and the emulator do not keep jobs across restarts (no high
            # availability), so the previous example Job's engine job is gone: end that Job, start afresh.
            previous = client.get_workflow_handle(f"job-{id_file.read_text().strip()}")
            with contextlib.suppress(RPCError):
                if (await previous.describe()).status == WorkflowExecutionStatus.RUNNING:
                    reason = "the local stack restarted; its engines do not keep jobs across restarts"
                    await previous.signal("cancel", {"reason": reason})
        raw = yaml.safe_load(file.read_text())
        raw["metadata"]["id"] = str(uuid.uuid4())
        if jar is not None:
            raw["spec"]["artifact"]["jarUri"] = jar.as_uri()
        job = Job.model_validate(raw)
        await start_job(client, job, settings.task_queue, summary=f"example {job.spec.engine} Job {job.metadata.name}")
        id_file.write_text(job.metadata.id)
        return job.metadata.id

    def _codec_keys(self, settings: Settings) -> list[str]:
        """JOBCTL_CODEC_KEY if set; else the stack's own key, kept next to its SQLite file so that Jobs with
        secret parameters from earlier runs stay readable."""
        keys = settings.codec_keys()
        if keys:
            return keys
        self.key_file = self.workdir / "codec.key"
        if not self.key_file.exists():
            self.key_file.touch(mode=0o600)
            self.key_file.write_text(generate_key() + "\n")
        return parse_keys(self.key_file.read_text())

    def _banner(
        self, temporal: TemporalDevServer, flink: object, emulator: str, targets_file: Path, examples: dict[str, str]
    ) -> None:
        lines = [
            "",
            "[bold green]jobctl local stack is up[/bold green]",
            f"  Temporal web UI    {temporal.ui_url}",
            f"  Temporal           {temporal.address}  (TEMPORAL_ADDRESS)",
            f"  Flink web UI       {getattr(flink, 'rest_url', '')}",
            f"  Dataflow emulator  {emulator}  (DATAFLOW_EMULATOR_HOST)",
            f"  targets file       {targets_file}",
            *([f"  secrets key        export JOBCTL_CODEC_KEY=$(cat {self.key_file})"] if self.key_file else []),
            f"  files              {self.workdir}",
        ]
        lines += [f"  example {engine + ' Job':<13}{job_id}" for engine, job_id in examples.items()]
        if examples:
            first = next(iter(examples.values()))
            lines += ["", f"  try:  jobctl status {first}", f"        jobctl drain {first}"]
        lines += ["", "Ctrl-C stops everything."]
        console.print("\n".join(lines), highlight=False)
