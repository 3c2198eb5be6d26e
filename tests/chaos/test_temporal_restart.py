"""A restart of the Temporal server mid-lifecycle: the dev server (SQLite file) is stopped while Jobs of
both engines are STARTING, STARTED and TERMINATING, stays down for a while (the engines keep running),
and starts again on the same file and port. The `jobctl worker` process is left alone: it must reconnect
by itself, and every Job must go on to its expected end with one engine job each, its savepoint on disk,
and nothing left on the Deployment Targets' ledgers.

The dev server is this test's own (the session's is shared with other tests). Longer downtime:
JOBCTL_RESTART_DOWN_SECONDS=120 pytest tests/chaos/test_temporal_restart.py -s
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter

from jobctl.dataflow_emulator import EmulatorServer
from jobctl.flink_cluster import FlinkCluster
from jobctl.models import Job, JobStatus
from jobctl.states import JobState
from jobctl.temporal_server import TemporalDevServer, free_port
from tests.chaos.support import (
    BATCH,
    STREAMING,
    WorkerProcess,
    dataflow_job,
    dataflow_jobs_by_label,
    dataflow_target,
    env_number,
    flink_job,
    flink_states,
    flink_target,
    is_terminal,
    ledgers_once_empty,
    left_on,
    observed,
    request,
    savepoint_on_disk,
    start,
    status_of,
    wait_status,
    write_targets,
)
from tests.waiting import asked_for_resources, wait_for

DOWN = env_number("JOBCTL_RESTART_DOWN_SECONDS", 10)
FLINK, DATAFLOW = "restart-flink", "restart-dataflow"
STEP_TIMEOUT = 240

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(max(600, DOWN + 480))]


def started(status: JobStatus) -> bool:
    return status.state is JobState.STARTED and observed(status) not in (None, "UNKNOWN")


def terminating(status: JobStatus) -> bool:
    return status.state is JobState.TERMINATING


def waiting_in_queue(status: JobStatus) -> bool:
    return status.state is JobState.STARTING and "waiting" in (status.starting_message or "")


def queued_in_dataflow(status: JobStatus) -> bool:
    return status.state is JobState.STARTING and "JOB_STATE_QUEUED" in (status.starting_message or "")


async def test_jobs_continue_to_their_end_across_a_temporal_server_restart(
    flink_cluster: FlinkCluster, emulator: EmulatorServer, example_jar: Path, tmp_path: Path
) -> None:
    server = TemporalDevServer(tmp_path / "temporal.db", port=free_port(), ui_port=None)
    await server.start()
    client = await Client.connect(server.address, data_converter=pydantic_data_converter)
    targets = write_targets(
        tmp_path / "targets.yaml",
        # Two slots of the cluster's four: the third Flink Job waits in the queue across the restart.
        flink_target(FLINK, flink_cluster.rest_url, 2, flink_cluster.savepoint_dir),
        dataflow_target(DATAFLOW),
    )
    task_queue = f"restart-{uuid.uuid4()}"
    worker = WorkerProcess(server.address, targets, task_queue, tmp_path, DATAFLOW_EMULATOR_HOST=emulator.address)
    await worker.start()
    unbounded = ["--mode", "unbounded", "--checkpoint-interval-ms", "1000"]
    # Each Job, the state it is in when the server stops, and its end.
    jobs: dict[str, Job] = {
        "flink-started": flink_job(example_jar, FLINK, *unbounded, name="restart-started"),
        "flink-draining": flink_job(example_jar, FLINK, *unbounded, name="restart-draining"),
        "flink-queued": flink_job(example_jar, FLINK, *unbounded, name="restart-queued"),
        "dataflow-started": dataflow_job(DATAFLOW, STREAMING, name="restart-started"),
        "dataflow-queued": dataflow_job(
            DATAFLOW, {**STREAMING, "jobctl-emulator-queued-seconds": str(DOWN + 5)}, name="restart-queued"
        ),
        "dataflow-cancelling": dataflow_job(DATAFLOW, STREAMING, name="restart-cancelling"),
        "dataflow-batch": dataflow_job(
            DATAFLOW, {**BATCH, "jobctl-emulator-run-seconds": str(DOWN + 5)}, name="restart-batch"
        ),
    }
    try:
        handles: dict[str, WorkflowHandle] = {}
        for role, job in jobs.items():
            handles[role] = await start(client, job, task_queue)
            # One after the other, so that the Flink queue order is the start order.
            await wait_for(handles[role], asked_for_resources, "asked", timeout=120)
        for role in ("flink-started", "flink-draining", "dataflow-started", "dataflow-cancelling", "dataflow-batch"):
            await wait_for(handles[role], started, "STARTED", timeout=120)
        await wait_for(handles["flink-queued"], waiting_in_queue, "waiting for a slot")
        await wait_for(handles["dataflow-queued"], queued_in_dataflow, "QUEUED in Dataflow")
        await handles["flink-draining"].signal("drain", {"reason": "drain across a Temporal restart"})
        await handles["dataflow-cancelling"].signal("cancel", {"reason": "cancel across a Temporal restart"})
        for role in ("flink-draining", "dataflow-cancelling"):
            await wait_for(handles[role], terminating, "TERMINATING", every=0.05)

        at_stop = {role: str((await status_of(h)).state) for role, h in handles.items()}  # type: ignore[union-attr]
        await server.stop()
        stopped = time.monotonic()
        flink_during = await flink_states(flink_cluster.rest_url, [jobs["flink-started"].metadata.engine_job_id])
        await asyncio.sleep(DOWN)  # the engines and the worker go on without Temporal
        worker_alive_while_down = worker.alive
        await server.start()
        back = time.monotonic()
        first = await wait_status(handles["flink-started"], started, "an answer after the restart", STEP_TIMEOUT)
        answered = time.monotonic() - back
        assert first.state is JobState.STARTED

        ends: dict[str, JobStatus] = {}

        async def follow(role: str, then: str | None = None, body: dict[str, Any] | None = None) -> None:
            """Wait for the Job's end, or first for STARTED and then send it `then` (drain, cancel)."""
            handle = handles[role]
            if then:
                await wait_status(handle, started, "STARTED", STEP_TIMEOUT)
                await request(handle, then, body or {}, "update")
            ends[role] = await wait_status(handle, is_terminal, "a terminal state", STEP_TIMEOUT)

        await asyncio.gather(
            follow("flink-draining"),
            follow("dataflow-cancelling"),
            follow("dataflow-batch"),
            follow("flink-queued", "drain", {"reason": "drain after the restart"}),
            follow("flink-started", "cancel"),
            follow("dataflow-started", "drain"),
            follow("dataflow-queued", "cancel"),
        )
        all_ended = time.monotonic() - back

        expected = {
            "flink-started": JobState.TERMINATED,
            "flink-draining": JobState.TERMINATED,
            "flink-queued": JobState.TERMINATED,
            "dataflow-started": JobState.TERMINATED,
            "dataflow-queued": JobState.TERMINATED,
            "dataflow-cancelling": JobState.TERMINATED,
            "dataflow-batch": JobState.FINISHED,
        }
        assert {role: s.state for role, s in ends.items()} == expected, ends
        for role in ("flink-draining", "flink-queued"):
            savepoint = ends[role].savepoint
            assert savepoint and savepoint.taken_for == "DRAIN" and savepoint_on_disk(savepoint.location), ends[role]
        assert observed(ends["dataflow-started"]) == "JOB_STATE_DRAINED"
        flink_jids = {role: job.metadata.engine_job_id for role, job in jobs.items() if role.startswith("flink")}
        flink_after = await flink_states(flink_cluster.rest_url, list(flink_jids.values()))
        dataflow_ids = [job.metadata.id for role, job in jobs.items() if role.startswith("dataflow")]
        dataflow_after = dataflow_jobs_by_label(emulator, dataflow_ids)
        assert sorted(flink_after.values()) == [["CANCELED"], ["FINISHED"], ["FINISHED"]], flink_after
        assert sorted(dataflow_after.values()) == [
            ["JOB_STATE_CANCELLED"],
            ["JOB_STATE_CANCELLED"],
            ["JOB_STATE_DONE"],
            ["JOB_STATE_DRAINED"],
        ], dataflow_after
        left = left_on(await ledgers_once_empty(client, [FLINK, DATAFLOW]))
        print(
            f"\nTemporal dev server restart (same SQLite file and port), down for {back - stopped:.0f}s:\n"
            f"  Job states when it stopped: {at_stop}\n"
            f"  while it was down: Flink still ran {flink_during}; worker process alive: {worker_alive_while_down}\n"
            f"  after it was back: the first status query answered in {answered:.1f}s; every Job ended within "
            f"{all_ended:.0f}s: { {role: str(s.state) for role, s in ends.items()} }\n"
            f"  the same worker process throughout (incarnations: {worker.incarnations}, alive: {worker.alive})\n"
            f"  engine jobs per Job: Flink {flink_after}, Dataflow {dataflow_after}; leases left: {left}"
        )
        assert worker.incarnations == 1 and worker.alive, f"the worker did not survive:\n{worker.log_tail()}"
        assert left == 0
    finally:
        await worker.stop()
        await server.stop()
