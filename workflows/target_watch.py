"""DeploymentTargetWatchWorkflow: keeps one watcher running per Deployment Target (workflow id
watch-deployment-target-<name>).

The watcher is a single long-running activity (activities/watch.py) that surveys the target and signals each
Job whose engine job changed. Temporal runs exactly one attempt at a time and, should its worker die, starts
it again on another worker after the heartbeat timeout; retries of the same activity add no history events,
so this workflow's history stays a handful of events for as long as it runs.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from jobctl import engine
    from jobctl.engine import WatchInput

# A dead worker's watcher is started elsewhere after this long without a heartbeat.
HEARTBEAT_TIMEOUT = timedelta(seconds=15)
# Each attempt ends after a day and starts afresh (as a retry: no history events), so nothing it keeps in
# memory grows without bound.
ATTEMPT = timedelta(days=1)
_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10))


def watch_workflow_id(target: str) -> str:
    # Not "deployment-target-...": that prefix belongs to the targets' ledgers, whatever a target is named.
    return f"watch-deployment-target-{target}"


@workflow.defn(name="DeploymentTargetWatchWorkflow")
class DeploymentTargetWatchWorkflow:
    @workflow.run
    async def run(self, request: WatchInput) -> None:
        workflow.set_current_details(
            f"Watches the engine jobs of Deployment Target **{request.target}** and tells each Job when its "
            "engine job changes."
        )
        try:
            await workflow.execute_activity(
                engine.WATCH,
                request,
                start_to_close_timeout=ATTEMPT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=_RETRY,
                summary=f"watch Deployment Target {request.target}",
            )
        except ActivityError as err:
            # Only a non-retryable error ends the activity: the target is no longer declared.
            workflow.logger.warning("the watcher of Deployment Target %s stopped: %s", request.target, err.cause)
