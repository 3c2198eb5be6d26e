"""The jobctl worker: connects to Temporal, reads the Deployment Targets, runs JobWorkflow and the Job
activities on the task queue. Stateless: run as many as you like, on as many machines as you like."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence

from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities.job import JobActivities
from jobctl.codec import data_converter
from jobctl.secret_scrubber import SecretScrubber
from jobctl.settings import Settings
from jobctl.targets import DeploymentTargets
from workflows.deployment_target import DeploymentTargetWorkflow, ledger_task_queue
from workflows.job import JobWorkflow
from workflows.target_watch import DeploymentTargetWatchWorkflow

log = logging.getLogger("jobctl.worker")

WORKFLOWS: Sequence[type] = (JobWorkflow, DeploymentTargetWorkflow, DeploymentTargetWatchWorkflow)


async def connect(settings: Settings | None = None) -> Client:
    """A Temporal client from the standard environment (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, profiles) that
    encrypts secret parameters with JOBCTL_CODEC_KEY (jobctl/codec.py)."""
    settings = settings or Settings()
    config = ClientConfig.load_client_connect_config()
    config.setdefault("target_host", "localhost:7233")
    return await Client.connect(**config, data_converter=data_converter(settings.codec_keys()))


def keep_bytecode() -> None:
    """Let Python keep the bytecode it compiles, in a private directory of this process.

    The workflow sandbox imports a workflow's module afresh for every workflow it runs (a new Job, or one
    evicted from the cache). Where no bytecode is on disk (PYTHONDONTWRITEBYTECODE with a source checkout),
    each of those imports compiled workflows/job.py from source: about a tenth of a busy worker's CPU in the
    bench. Installed packages have their bytecode already; the private directory (removed at exit) leaves the
    checkout as the user wants it, free of __pycache__.
    """
    if not sys.dont_write_bytecode or sys.pycache_prefix is not None:
        return
    cache = tempfile.mkdtemp(prefix="jobctl-bytecode-")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    sys.pycache_prefix = cache
    sys.dont_write_bytecode = False


@contextlib.asynccontextmanager
async def build_worker(
    client: Client,
    activities: JobActivities,
    task_queue: str,
    cache_size: int = 1000,
    sandbox: bool = False,
) -> AsyncIterator[None]:
    """The Temporal workers of one jobctl worker process, running while in `async with`: the Jobs' task queue
    (every workflow and activity), and the Deployment Target ledgers' own queue."""
    if sandbox:
        keep_bytecode()  # outside the sandbox each module is imported once: nothing to keep
    runner = SandboxedWorkflowRunner() if sandbox else UnsandboxedWorkflowRunner()
    # Activity errors and results never carry a secret parameter or a target's credentials into history.
    scrubber = SecretScrubber(activities.targets)
    jobs = Worker(
        client,
        task_queue=task_queue,
        workflows=list(WORKFLOWS),
        activities=activities.all(),
        interceptors=[scrubber],
        # Observe activities are long-polls that mostly sleep: many may run at once on one worker.
        max_concurrent_activities=2_000,
        max_cached_workflows=cache_size,
        workflow_runner=runner,
    )
    ledgers = Worker(
        client,
        task_queue=ledger_task_queue(task_queue),
        workflows=[DeploymentTargetWorkflow],
        activities=activities.ledger_activities(),
        workflow_runner=runner,
        interceptors=[scrubber],
    )
    async with jobs, ledgers:
        yield


async def run(settings: Settings | None = None, stop: asyncio.Event | None = None) -> None:
    settings = settings or Settings()
    targets = DeploymentTargets.load(settings.targets)
    client = await connect(settings)
    activities = JobActivities(targets, settings)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    worker = build_worker(
        client, activities, settings.task_queue, settings.workflow_cache_size, settings.workflow_sandbox
    )
    log.info(
        "jobctl worker on task queue %s, namespace %s, targets %s",
        settings.task_queue,
        client.namespace,
        ", ".join(t.name for t in targets.all()) or "none",
    )
    try:
        async with worker:
            await stop.wait()
    finally:
        await activities.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One line per engine request would drown what matters (watchers send several per second per target).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(run())


if __name__ == "__main__":
    main()
