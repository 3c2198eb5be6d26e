"""Chaos: Job lifecycles of every kind on both engines (a real Flink session cluster and the Dataflow
emulator) while the only `jobctl worker` process is SIGKILLed at random moments and started again.

Every lifecycle is one a user would run: start then drain, update (then cancel the successor), cancel
(while still starting or once started), a job that finishes by itself, a job that fails. Requests go as
signals or as updates, at random. At the end the test prints, and then checks, what a user could count:
every Job in its expected terminal state, no engine job twice for one Job, no engine job left running, each
drain's and update's savepoint on disk and in the Job's status, nothing left on the Deployment Targets'
ledgers, the number of kills and the wall time.

Short by default (CI); the full run:
    JOBCTL_CHAOS_LIFECYCLES=100 JOBCTL_CHAOS_KILLS=20 pytest tests/chaos/test_chaos.py -s
JOBCTL_CHAOS_SEED repeats a run's choices (the seed is printed); kill moments still depend on timing.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowHandle

from jobctl.dataflow_emulator import EmulatorServer
from jobctl.dataflow_emulator import JobState as DataflowState
from jobctl.flink_cluster import FlinkCluster
from jobctl.models import Job, JobStatus
from jobctl.states import JobState
from jobctl.temporal_server import TemporalDevServer
from tests.chaos.support import (
    BATCH,
    LABEL,
    PROJECT,
    REGION,
    STREAMING,
    WorkerProcess,
    dataflow_job,
    dataflow_jobs_by_label,
    dataflow_target,
    env_number,
    events,
    flink_job,
    flink_jobs,
    flink_states,
    flink_target,
    is_terminal,
    ledgers_once_empty,
    left_on,
    observed,
    query_through,
    request,
    savepoint_dirs,
    savepoint_on_disk,
    start,
    until,
    wait_status,
    write_targets,
)
from tests.integration.conftest import FLINK_SLOTS
from tests.waiting import asked_for_resources

LIFECYCLES = int(env_number("JOBCTL_CHAOS_LIFECYCLES", 10))
KILLS = int(env_number("JOBCTL_CHAOS_KILLS", 3))
SEED = int(env_number("JOBCTL_CHAOS_SEED", random.randrange(1_000_000)))
KINDS = ("drain", "update", "cancel", "finish", "fail")
FLINK_TARGET, DATAFLOW_TARGET = "chaos-flink", "chaos-dataflow"
# Lifecycles under way per engine at once: more than fit (4 slots, 4 Dataflow jobs), so some Jobs wait in
# their target's FIFO queue while the worker dies.
IN_FLIGHT = 6
DATAFLOW_MAX_JOBS = 4
# One step of a lifecycle (reach STARTED, end) may wait behind a queue and several worker kills.
STEP_TIMEOUT = 420
FLINK_END_STATES = {"FINISHED", "CANCELED", "FAILED"}
DATAFLOW_END_STATES = {f"JOB_STATE_{s}" for s in ("DRAINED", "UPDATED", "CANCELLED", "DONE", "FAILED")}

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(max(600, LIFECYCLES * 45 + KILLS * 60))]


@dataclass
class Lifecycle:
    number: int
    engine: str
    kind: str
    via: str  # "signal" or "update"
    cancel_early: bool  # cancel while STARTING instead of once STARTED
    job: Job
    handle: WorkflowHandle | None = None
    last: JobStatus | None = None
    final: JobStatus | None = None
    successor: Job | None = None
    successor_final: JobStatus | None = None
    seconds: float = 0.0
    error: str | None = None

    @property
    def name(self) -> str:
        early = " (while starting)" if self.cancel_early else ""
        return f"#{self.number} {self.engine} {self.kind}{early} via {self.via} [{self.job.metadata.id}]"

    @property
    def jobs(self) -> list[tuple[Job, JobStatus | None]]:
        both = [(self.job, self.final)]
        return both + [(self.successor, self.successor_final)] if self.successor else both


@dataclass
class Chaos:
    """What the lifecycles and the worker killer share."""

    client: Client
    task_queue: str
    rng: random.Random
    lifecycles: list[Lifecycle]
    progress: int = 0  # state changes seen so far, by any lifecycle
    kill_moments: list[Counter[str]] = field(default_factory=list)
    recoveries: list[float] = field(default_factory=list)

    def seen(self, lifecycle: Lifecycle, status: JobStatus) -> None:
        before = lifecycle.last.state if lifecycle.last else JobState.STARTING
        if status.state is not before:
            self.progress += 1
        lifecycle.last = status

    def done(self) -> bool:
        return all(lc.seconds for lc in self.lifecycles)


def plan(rng: random.Random, jar: Path) -> list[Lifecycle]:
    """LIFECYCLES lifecycles, every engine x kind as evenly as the count allows, in random order."""
    combos = [(engine, kind) for engine in ("FLINK", "DATAFLOW") for kind in KINDS]
    chosen = [combos[i % len(combos)] for i in range(LIFECYCLES)]
    rng.shuffle(chosen)
    return [
        Lifecycle(
            number=n,
            engine=engine,
            kind=kind,
            via=rng.choice(("signal", "update")),
            cancel_early=kind == "cancel" and rng.random() < 0.5,
            job=flink_job_for(kind, rng, jar) if engine == "FLINK" else dataflow_job_for(kind, rng),
        )
        for n, (engine, kind) in enumerate(chosen, 1)
    ]


def flink_job_for(kind: str, rng: random.Random, jar: Path) -> Job:
    args = {
        "finish": ["--mode", "bounded", "--records", str(rng.randint(2_000, 200_000))],
        "fail": ["--mode", "failing", "--restarts", "1", "--fail-after-ms", "1000"],
    }.get(kind, ["--mode", "unbounded", "--checkpoint-interval-ms", "1000"])
    return flink_job(jar, FLINK_TARGET, *args, name=f"chaos-{kind}")


def dataflow_job_for(kind: str, rng: random.Random) -> Job:
    params = {
        "finish": {**BATCH, "jobctl-emulator-run-seconds": str(rng.randint(1, 4))},
        "fail": {**STREAMING, "jobctl-emulator-fail-after-seconds": str(rng.randint(2, 6))},
    }.get(kind, STREAMING)
    return dataflow_job(DATAFLOW_TARGET, params, name=f"chaos-{kind}")


def new_spec(job: Job) -> dict[str, Any]:
    """The update's spec: the same job with one setting changed (a new rate, a new window)."""
    spec = job.spec.model_dump(by_alias=True, mode="json")
    if job.spec.engine == "FLINK":
        spec["artifact"]["mainArgs"] = [*spec["artifact"]["mainArgs"], "--rate", "25"]
    else:
        spec["artifact"]["parameters"] = {**spec["artifact"]["parameters"], "window": "60s"}
    return spec


async def run_lifecycle(chaos: Chaos, lc: Lifecycle, limit: asyncio.Semaphore) -> None:
    async with limit:
        began = time.monotonic()
        try:
            await drive(chaos, lc)
        except (Exception, pytest.fail.Exception) as err:  # reported with the figures at the end
            lc.error = f"{type(err).__name__}: {err}"
        lc.seconds = max(time.monotonic() - began, 1e-3)
        ended = ", ".join(str(final.state) for _, final in lc.jobs if final)
        print(f"  {time.strftime('%H:%M:%S')} {lc.name}: {ended or lc.error} after {lc.seconds:.0f}s")


async def drive(chaos: Chaos, lc: Lifecycle) -> None:
    def seen(status: JobStatus) -> None:
        chaos.seen(lc, status)

    def started(status: JobStatus) -> bool:
        return status.state is JobState.STARTED

    handle = lc.handle = await start(chaos.client, lc.job, chaos.task_queue)
    if lc.kind in ("drain", "update", "cancel"):
        ready = asked_for_resources if lc.cancel_early else started
        await wait_status(handle, ready, "ready for the request", STEP_TIMEOUT, seen)
        body: dict[str, Any] = {"reason": f"chaos {lc.kind}"}
        if lc.kind == "update":
            body["spec"] = new_spec(lc.job)
        await request(handle, lc.kind, body, lc.via)
    lc.final = await wait_status(handle, is_terminal, "a terminal state", STEP_TIMEOUT, seen)
    successor_id = lc.final.links.successor_job_id
    if lc.kind != "update" or not successor_id:
        return
    successor_handle = chaos.client.get_workflow_handle(f"job-{successor_id}")
    await wait_status(successor_handle, started, "the successor STARTED", STEP_TIMEOUT, seen)
    lc.successor = await query_through(successor_handle, "job", Job)
    await request(successor_handle, "cancel", {"reason": "chaos: end the successor"}, lc.via)
    lc.successor_final = await wait_status(successor_handle, is_terminal, "the successor ended", STEP_TIMEOUT, seen)


async def kill_worker_now_and_then(chaos: Chaos, worker: WorkerProcess) -> None:
    """KILLS SIGKILLs at random moments spread over the run: kill k waits for k/(KILLS+1) of the state
    changes the lifecycles go through (at least two each), and every kill waits until the restarted
    worker has moved some Job on (killing a worker that never got going tests nothing new)."""
    for k in range(1, KILLS + 1):
        while not chaos.done() and chaos.progress < k * 2 * LIFECYCLES / (KILLS + 1):
            await asyncio.sleep(0.2)
        await asyncio.sleep(chaos.rng.uniform(0.2, 4))
        if chaos.done():
            return
        chaos.kill_moments.append(
            Counter(str(lc.last.state) for lc in chaos.lifecycles if lc.last and lc.handle and not lc.seconds)
        )
        await worker.kill()
        print(f"  {time.strftime('%H:%M:%S')} SIGKILL {worker.kills}, Jobs in flight: {dict(chaos.kill_moments[-1])}")
        await asyncio.sleep(chaos.rng.uniform(0, 3))  # sometimes no worker at all for a while
        await worker.start()
        since, restarted = chaos.progress, time.monotonic()
        while not chaos.done() and chaos.progress == since:
            await asyncio.sleep(0.2)
        if not chaos.done():
            chaos.recoveries.append(time.monotonic() - restarted)


async def test_job_lifecycles_on_both_engines_survive_worker_kills(
    dev_server: TemporalDevServer,
    client: Client,
    flink_cluster: FlinkCluster,
    emulator: EmulatorServer,
    example_jar: Path,
    tmp_path: Path,
) -> None:
    test_began = time.monotonic()
    targets = write_targets(
        tmp_path / "targets.yaml",
        flink_target(FLINK_TARGET, flink_cluster.rest_url, FLINK_SLOTS, flink_cluster.savepoint_dir),
        dataflow_target(DATAFLOW_TARGET, DATAFLOW_MAX_JOBS),
    )
    task_queue = f"chaos-{uuid.uuid4()}"
    worker = WorkerProcess(dev_server.address, targets, task_queue, tmp_path, DATAFLOW_EMULATOR_HOST=emulator.address)
    rng = random.Random(SEED)
    chaos = Chaos(client, task_queue, rng, plan(rng, example_jar))
    print(f"\nchaos: seed {SEED}, {LIFECYCLES} lifecycles, {KILLS} worker kills; logs in {tmp_path}")
    run_began = time.time()
    await worker.start()
    try:
        limits = {engine: asyncio.Semaphore(IN_FLIGHT) for engine in ("FLINK", "DATAFLOW")}
        killer = asyncio.create_task(kill_worker_now_and_then(chaos, worker))
        await asyncio.gather(*(run_lifecycle(chaos, lc, limits[lc.engine]) for lc in chaos.lifecycles))
        await killer
        lifecycles_took = time.monotonic() - test_began

        problems = [f"{lc.name}: {lc.error}" for lc in chaos.lifecycles if lc.error]
        problems += expected_ends(chaos.lifecycles)
        engine_problems, duplicates, left_running, strays = await engine_jobs(
            chaos.lifecycles, flink_cluster, emulator, run_began
        )
        problems += engine_problems
        recorded, lost, unrecorded = savepoints(chaos.lifecycles, flink_cluster.savepoint_dir)
        problems += lost
        ledgers = await ledgers_once_empty(client, [FLINK_TARGET, DATAFLOW_TARGET], timeout=120)
        leases_left = left_on(ledgers)
        if leases_left:
            problems.append(f"left on the ledgers: {[ledger.model_dump(mode='json') for ledger in ledgers.values()]}")
        wall = time.monotonic() - test_began

        jobs = [(lc, job, final) for lc in chaos.lifecycles for job, final in lc.jobs]
        in_expected_state = sum(1 for lc, job, final in jobs if final and final.state is expected_state(lc, job))
        moments = sum(chaos.kill_moments, Counter())
        durations = [lc.seconds for lc in chaos.lifecycles]
        print(
            "chaos figures:\n"
            f"  lifecycles: {LIFECYCLES} ({dict(Counter(f'{lc.engine} {lc.kind}' for lc in chaos.lifecycles))}),"
            f" {len(jobs)} Jobs with update successors\n"
            f"  worker SIGKILLs: {worker.kills} (worker processes: {worker.incarnations});"
            f" Jobs in flight at the kills, by state: {dict(moments)}\n"
            f"  from a worker's restart to the next state change of a Job: {_spread(chaos.recoveries)}\n"
            f"  Jobs in their expected terminal state: {in_expected_state}/{len(jobs)}"
            f" ({dict(Counter(str(final.state) for _, _, final in jobs if final))})\n"
            f"  duplicate engine jobs: {duplicates}; engine jobs left running: {left_running};"
            f" engine jobs of no Job: {strays}\n"
            f"  savepoints: {recorded} in status, all on disk: {not lost} (lost: {len(lost)});"
            f" savepoint directories of these Jobs not in any status: {unrecorded}\n"
            f"  leases, queued asks and handovers left on the ledgers: {leases_left}\n"
            f"  lifecycle duration: {_spread(durations)}\n"
            f"  wall time: lifecycles {lifecycles_took:.0f}s, with the checks {wall:.0f}s"
        )
        for problem in problems:
            print(f"  PROBLEM {problem}")
        assert not problems, f"{len(problems)} problems (see above); seed {SEED}; worker log:\n{worker.log_tail()}"
        assert duplicates == 0 and left_running == 0 and strays == 0
        assert worker.kills == KILLS, f"the lifecycles ended before all kills ({worker.kills} of {KILLS})"
    finally:
        await worker.stop()


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"median {statistics.median(values):.1f}s, max {max(values):.1f}s (n={len(values)})"


def expected_state(lc: Lifecycle, job: Job) -> JobState:
    if job is lc.successor:
        return JobState.TERMINATED  # cancelled by the test
    return {"finish": JobState.FINISHED, "fail": JobState.FAILED}.get(lc.kind, JobState.TERMINATED)


def expected_ends(lifecycles: list[Lifecycle]) -> list[str]:
    """Each Job's terminal state and what its status says, against what its lifecycle must end in."""
    problems: list[str] = []
    for lc in lifecycles:
        for job, final in lc.jobs:
            if final is not None and final.state is not expected_state(lc, job):
                problems.append(f"{lc.name}: expected {expected_state(lc, job)}, ended {final.state}: {final.events}")
        final = lc.final
        if final is None or final.state is not expected_state(lc, lc.job):
            continue  # reported already
        flink = lc.engine == "FLINK"
        if lc.kind == "drain" and events(final, "DRAIN_FELL_BACK_TO_CANCEL"):
            problems.append(f"{lc.name}: expected a drain, it fell back to cancel: {final.events[-3:]}")
        if lc.kind == "drain" and not flink and observed(final) != "JOB_STATE_DRAINED":
            problems.append(f"{lc.name}: expected JOB_STATE_DRAINED, observed {observed(final)}")
        if lc.kind == "fail" and not (final.failure and final.failure.reason == "ENGINE_JOB_FAILED"):
            problems.append(f"{lc.name}: expected failure ENGINE_JOB_FAILED, got {final.failure}")
        if lc.kind == "update":
            if lc.successor is None or lc.successor_final is None:
                problems.append(f"{lc.name}: expected a successor that ran, links {final.links}")
            elif flink and lc.successor.spec.restore_from_savepoint != (final.savepoint and final.savepoint.location):
                problems.append(f"{lc.name}: expected the successor restored from {final.savepoint}")
            elif not flink and observed(final) != "JOB_STATE_UPDATED":
                problems.append(f"{lc.name}: expected JOB_STATE_UPDATED, observed {observed(final)}")
    return problems


async def engine_jobs(
    lifecycles: list[Lifecycle], cluster: FlinkCluster, emulator: EmulatorServer, since: float
) -> tuple[list[str], int, int, int]:
    """Flink's and the emulator's own job lists against the Jobs: (problems, duplicates, engine jobs
    still running, engine jobs started during the run that belong to no Job)."""
    problems: list[str] = []
    expected = {
        ("FLINK", "drain"): {"FINISHED"},
        ("FLINK", "update"): {"FINISHED"},
        ("FLINK", "cancel"): {"CANCELED"},
        ("FLINK", "finish"): {"FINISHED"},
        ("FLINK", "fail"): {"FAILED"},
        ("DATAFLOW", "drain"): {"JOB_STATE_DRAINED"},
        ("DATAFLOW", "update"): {"JOB_STATE_UPDATED"},
        ("DATAFLOW", "cancel"): {"JOB_STATE_CANCELLED"},
        ("DATAFLOW", "finish"): {"JOB_STATE_DONE"},
        ("DATAFLOW", "fail"): {"JOB_STATE_FAILED"},
    }
    flink_list = await flink_jobs(cluster.rest_url)
    dataflow_ids = [job.metadata.id for lc in lifecycles if lc.engine == "DATAFLOW" for job, _ in lc.jobs]
    by_label = dataflow_jobs_by_label(emulator, dataflow_ids)
    duplicates = left_running = 0
    ours: set[str] = set()
    for lc in lifecycles:
        for index, (job, final) in enumerate(lc.jobs):
            if lc.engine == "FLINK":
                jid = job.metadata.engine_job_id
                ours.add(jid)
                states = [j["state"] for j in flink_list if j["jid"] == jid]
                running = [s for s in states if s not in FLINK_END_STATES]
            else:
                states = by_label[job.metadata.id]
                running = [s for s in states if s not in DATAFLOW_END_STATES]
            duplicates += max(0, len(states) - 1)
            left_running += len(running)
            # A successor is cancelled; a Job cancelled while starting may have ended before any submit.
            allowed = {"CANCELED", "JOB_STATE_CANCELLED"} if index == 1 else expected[(lc.engine, lc.kind)]
            if lc.cancel_early and not states:
                continue
            if final is not None and (len(states) != 1 or states[0] not in allowed):
                problems.append(f"{lc.name}: expected one engine job in {sorted(allowed)}, the engine has {states}")
    strays = [j["jid"] for j in flink_list if j["jid"] not in ours and j["start-time"] >= since * 1000]
    emulator.model.tick()
    mine = set(dataflow_ids)
    strays += [j.id for j in emulator.model.jobs.values() if j.create_time >= since and j.labels.get(LABEL) not in mine]
    if strays:
        problems.append(f"engine jobs started during the run that belong to no Job: {strays}")
    return problems, duplicates, left_running, len(strays)


def savepoints(lifecycles: list[Lifecycle], savepoint_dir: Path) -> tuple[int, list[str], int]:
    """(savepoints in the Jobs' status, problems: a drain or update without its savepoint on disk,
    savepoint directories on disk that no status names)."""
    lost: list[str] = []
    recorded: list[str] = []
    jids: list[str] = []
    for lc in lifecycles:
        if lc.engine != "FLINK" or lc.kind not in ("drain", "update") or lc.final is None:
            continue
        jids.append(lc.job.metadata.engine_job_id)
        savepoint = lc.final.savepoint
        if savepoint is None or not savepoint_on_disk(savepoint.location):
            lost.append(f"{lc.name}: savepoint lost: status says {savepoint}")
            continue
        recorded.append(savepoint.location)
    on_disk = savepoint_dirs(savepoint_dir, jids)
    return len(recorded), lost, max(0, sum(on_disk.values()) - len(recorded))


async def test_engine_jobs_that_end_while_no_worker_runs_end_their_jobs(
    dev_server: TemporalDevServer,
    client: Client,
    flink_cluster: FlinkCluster,
    emulator: EmulatorServer,
    example_jar: Path,
    tmp_path: Path,
) -> None:
    """The only worker is SIGKILLed; while none runs, a Flink job is cancelled from Flink's own API, a
    Dataflow streaming job is cancelled from outside and a Dataflow batch job finishes. Once a worker runs
    again, each Job must show how its engine job ended (the chaos run above once found a Dataflow batch Job
    left STARTED: the watcher then read only active jobs)."""
    targets = write_targets(
        tmp_path / "targets.yaml",
        flink_target("gap-flink", flink_cluster.rest_url, FLINK_SLOTS, flink_cluster.savepoint_dir),
        dataflow_target("gap-dataflow"),
    )
    task_queue = f"gap-{uuid.uuid4()}"
    worker = WorkerProcess(dev_server.address, targets, task_queue, tmp_path, DATAFLOW_EMULATOR_HOST=emulator.address)
    await worker.start()
    try:
        jobs = {
            "flink": flink_job(example_jar, "gap-flink", "--mode", "unbounded", name="gap-flink"),
            "streaming": dataflow_job("gap-dataflow", STREAMING, name="gap-streaming"),
            "batch": dataflow_job("gap-dataflow", {**BATCH, "jobctl-emulator-run-seconds": "20"}, name="gap-batch"),
        }
        handles = {role: await start(client, job, task_queue) for role, job in jobs.items()}
        engine_ids = {}
        for role, handle in handles.items():
            status = await wait_status(handle, lambda s: s.state is JobState.STARTED, "STARTED", 120)
            engine_ids[role] = status.engine_job_id
        await worker.kill()

        async with httpx.AsyncClient(base_url=flink_cluster.rest_url, timeout=10) as http:
            await http.patch(f"/jobs/{engine_ids['flink']}", params={"mode": "cancel"})
        emulator.model.update_job(PROJECT, REGION, engine_ids["streaming"], DataflowState.JOB_STATE_CANCELLED)

        async def ended_outside() -> bool:
            flink = await flink_states(flink_cluster.rest_url, [engine_ids["flink"]])
            model = emulator.model
            dataflow = [model.get_job(PROJECT, REGION, engine_ids[r]).state.name for r in ("streaming", "batch")]
            return [*flink[engine_ids["flink"]], *dataflow] == ["CANCELED", "JOB_STATE_CANCELLED", "JOB_STATE_DONE"]

        await until(ended_outside, "the engine jobs ended", timeout=60)
        await worker.start()

        ends = await asyncio.gather(
            *(wait_status(h, is_terminal, "a terminal state", 60, raise_on_timeout=False) for h in handles.values())
        )
        shown = {role: (str(s.state), observed(s)) if s else None for role, s in zip(handles, ends, strict=True)}
        print(f"\nengine jobs that ended while no worker ran: the Jobs 60s after a worker came back: {shown}")
        assert shown["flink"] == ("TERMINATED", "CANCELED"), shown
        assert shown["streaming"] == ("TERMINATED", "JOB_STATE_CANCELLED"), shown
        assert shown["batch"] == ("FINISHED", "JOB_STATE_DONE"), shown
    finally:
        await worker.stop()
