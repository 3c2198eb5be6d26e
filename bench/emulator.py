"""How the Dataflow emulator's own cost grows with the number of jobs it holds.

    python bench/emulator.py            # 1,000 / 10,000 jobs
    python bench/emulator.py --jobs 20000

The emulator stands in for the cloud in the tests and in bench/run.py, on the same machine as Temporal and the
worker: whatever CPU it burns is taken from what bench/run.py measures. Every API call first applies the service
steps that are due (QUEUED -> PENDING -> RUNNING ...), so that step must not cost a look at every job. Prints one
table: launches per second, and the time of a GetJob and of a watcher's ListJobs page (1,000 jobs of one project)
with all jobs RUNNING, in the model and as the protobuf answer the gRPC handler returns (gRPC itself left out).
"""

from __future__ import annotations

import argparse
import time

from google.cloud import dataflow_v1beta3 as df

from jobctl.dataflow_emulator.model import EmulatorConfig
from jobctl.dataflow_emulator.server import EmulatorServer

PROJECTS = 10
LOCATION = "us-central1"


def measure(jobs: int) -> tuple[float, float, float, float]:
    server = EmulatorServer(EmulatorConfig(queued_seconds=0.05, pending_seconds=0.05))
    model = server.model
    started = time.perf_counter()
    for i in range(jobs):
        model.launch(f"project-{i % PROJECTS}", LOCATION, f"job-{i}", parameters={"jobctl-emulator-type": "streaming"})
    launches = jobs / (time.perf_counter() - started)
    time.sleep(0.2)  # every job's steps to RUNNING are now due
    model.tick()
    states = {job.state.name for job in model.jobs.values()}
    assert states == {"JOB_STATE_RUNNING"}, f"the jobs should all be RUNNING, not {states}"
    some = next(iter(model.jobs.values()))
    started = time.perf_counter()
    for _ in range(200):
        model.get_job(some.project_id, LOCATION, some.id)
    get_ms = (time.perf_counter() - started) / 200 * 1000
    started = time.perf_counter()
    for _ in range(50):
        page, _ = model.list_jobs("project-0", LOCATION, filter="ACTIVE", page_size=1000)
    list_ms = (time.perf_counter() - started) / 50 * 1000
    request = df.ListJobsRequest(project_id="project-0", location=LOCATION, filter="ACTIVE", page_size=1000)
    started = time.perf_counter()
    for _ in range(50):
        answer = server._list_jobs(request)  # what the gRPC handler returns, protobuf messages built
    answer_ms = (time.perf_counter() - started) / 50 * 1000
    assert len(answer.jobs) == min(1000, jobs // PROJECTS)
    return launches, get_ms, list_ms, answer_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="*", default=[1_000, 10_000])
    args = parser.parse_args()
    print("| jobs held | launches/s | GetJob | ListJobs page (1,000 jobs): model | ... answered as protobuf |")
    print("|---|---|---|---|---|")
    for jobs in args.jobs:
        launches, get_ms, list_ms, answer_ms = measure(jobs)
        print(f"| {jobs:,} | {launches:,.0f} | {get_ms:.3f} ms | {list_ms:.1f} ms | {answer_ms:.1f} ms |")


if __name__ == "__main__":
    main()
