"""What a Job tells its Deployment Target's ledger, as an activity: the workflow runs it as a local activity,
recorded in the Job's own workflow task, where an external signal would cost the Job a workflow task more."""

from __future__ import annotations

from temporalio import activity
from temporalio.service import RPCError, RPCStatusCode

from jobctl import engine
from jobctl.engine import JobRef, LedgerMessage


@activity.defn(name=engine.TELL_LEDGER)
async def tell_ledger(message: LedgerMessage) -> None:
    """Signal the ledger; telling it twice (an attempt retried with its workflow task) changes nothing."""
    try:
        await (
            activity.client()
            .get_workflow_handle(message.ledger_workflow_id)
            .signal(message.signal, JobRef(job_id=message.job_id))
        )
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        # The ledger is gone (an operator terminated it): it holds nothing of this Job's.
        activity.logger.warning(
            "Job %s could not %s its lease: ledger %s is gone",
            message.job_id,
            message.signal,
            message.ledger_workflow_id,
        )
