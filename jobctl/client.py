"""Starting Jobs from a client (jobctl's CLI, the local stack): one place that sets what users see."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import TypedSearchAttributes
from temporalio.converter import DataConverter

from jobctl.codec import HOW_TO_GET_A_KEY, SecretsNotEncrypted, can_encrypt
from jobctl.models import Job, JobSpec
from jobctl.states import JobState


async def start_job(client: Client, job: Job, task_queue: str, summary: str | None = None) -> WorkflowHandle[Any, Job]:
    """Start the Job's workflow (id job-<metadata.id>) with its search attributes and web UI summary.

    A Job with secret parameters starts only through a client that encrypts them (jobctl.codec). A Job that
    is not valid raises pydantic's ValidationError here, naming the fields, and nothing starts."""
    from workflows.job import search_attributes_for

    # pydantic does not validate assignments: a Job changed after it was built (job.spec.parallelism = 0)
    # would otherwise reach the workflow, which can only fail. Say so to the caller instead.
    job = Job.model_validate(job.model_dump(by_alias=True, warnings=False))
    check_secrets(job, client.data_converter)

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


def check_secrets(job: Job | JobSpec, converter: DataConverter) -> None:
    """Refuse, before anything reaches Temporal, secrets that would be stored in plaintext or are unusable."""
    spec = job.spec if isinstance(job, Job) else job
    if not spec.secret_values:
        return
    if names := spec.unusable_secrets():
        raise SecretsNotEncrypted(
            f'secret parameter(s) {", ".join(names)} hold "***" (as `jobctl get` shows them), not a value: '
            "give their real values"
        )
    if not can_encrypt(converter):
        raise SecretsNotEncrypted(
            "this Job has secret parameters (spec.artifact.secretParameters), which are stored only encrypted, "
            "but this client cannot encrypt them: JOBCTL_CODEC_KEY is not set (or the client does not use "
            "jobctl.codec.data_converter); " + HOW_TO_GET_A_KEY
        )
