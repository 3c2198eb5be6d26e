"""Jobs the tests (and bench/) start: the example Flink job from its jar, and Dataflow Flex Template jobs on
the emulator."""

from __future__ import annotations

import uuid
from pathlib import Path

from jobctl.models import Job

# Dataflow template parameters the emulator reads: what kind of job it launches.
STREAMING = {"jobctl-emulator-type": "streaming"}
BATCH = {"jobctl-emulator-type": "batch"}


def flink_job(
    jar: Path, target: str, *args: str, name: str = "it", parallelism: int = 1, savepoint_timeout: int = 600
) -> Job:
    """The example Flink job (examples/flink-job) with `args` as its main arguments."""
    return Job.model_validate(
        {
            "metadata": {"id": str(uuid.uuid4()), "name": name, "deploymentName": f"{name}-deployment"},
            "spec": {
                "engine": "FLINK",
                "deploymentTargetName": target,
                "parallelism": parallelism,
                "artifact": {
                    "kind": "JAR",
                    "jarUri": jar.as_uri(),
                    "entryClass": "example.Job",
                    "mainArgs": list(args),
                },
                "savepointTimeoutSeconds": savepoint_timeout,
            },
        }
    )


def dataflow_job(
    target: str, params: dict[str, str], name: str = "it", savepoint_timeout: int = 600, job_id: str | None = None
) -> Job:
    """A Flex Template job whose template `params` tell the emulator what to run."""
    job_id = job_id or str(uuid.uuid4())
    return Job.model_validate(
        {
            "metadata": {"id": job_id, "name": name, "deploymentName": f"{name}-deployment"},
            "spec": {
                "engine": "DATAFLOW",
                "deploymentTargetName": target,
                "artifact": {
                    "kind": "FLEX_TEMPLATE",
                    # The emulator allows one active job per name: unique per Job.
                    "jobName": f"{name}-{job_id[:8]}",
                    "containerSpecGcsPath": "gs://bucket/templates/app.json",
                    "parameters": params,
                },
                "savepointTimeoutSeconds": savepoint_timeout,
            },
        }
    )
