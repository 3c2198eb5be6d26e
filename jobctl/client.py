"""Starting Jobs from a client (jobctl's CLI, the local stack): one place that sets what users see."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import TypedSearchAttributes

from jobctl.models import Job
from jobctl.states import JobState


async def start_job(client: Client, job: Job, task_queue: str, summary: str | None = None) -> WorkflowHandle[Any, Job]:
    """Start the Job's workflow (id job-<metadata.id>) with its search attributes and web UI summary."""
    from workflows.job import search_attributes_for

    return await client.start_workflow(
        "JobWorkflow",
        job,
        id=job.workflow_id,
        task_queue=task_queue,
        result_type=Job,
        search_attributes=TypedSearchAttributes(search_attributes_for(job, JobState.STARTING)),
        static_summary=summary
        or f"{job.spec.engine} Job {job.metadata.name or job.metadata.id} on {job.spec.deployment_target_name}",
        static_details=f"Deployment **{job.metadata.deployment_name or '-'}**, Job id `{job.metadata.id}`",
    )
