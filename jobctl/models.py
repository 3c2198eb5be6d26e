"""The Job resource, Ververica-shaped, and the requests users send to a Job.

JSON keys are camelCase (as in Ververica Platform); Python attributes are snake_case; either spelling is
accepted on input. These models are the payloads of the workflow, its signals, updates and queries, so a
plain JSON document from the `temporal` CLI or the web UI validates into them.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from jobctl.states import JobState


class Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


class Input(Model):
    """What users write: unknown keys are an error, so a typo is caught instead of ignored.

    Validation errors never repeat the input: they end up in workflow failures and events (history), and
    the input may hold secret parameters."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class Engine(StrEnum):
    FLINK = "FLINK"
    DATAFLOW = "DATAFLOW"


class JarArtifact(Input):
    kind: Literal["JAR"] = "JAR"
    jar_uri: str = Field(min_length=1, description="file:///abs/path/job.jar or a path on the worker's machine")
    entry_class: str | None = None
    main_args: list[str] = Field(default_factory=list)


# What a secret value is replaced by wherever it is shown (queries, `jobctl get`, the web UI).
REDACTED = "***"


class TemplateParameters(Input):
    """Parameters of a Dataflow template; `secretParameters` are passwords, tokens and keys.

    Secret values travel only encrypted (jobctl.codec: every Temporal payload that carries one is encrypted
    with JOBCTL_CODEC_KEY), are shown as "***", and join `parameters` only in the launch request itself.
    """

    if TYPE_CHECKING:  # declared by each artifact, so its JSON keys keep their order
        parameters: dict[str, str]
        secret_parameters: dict[str, str]

    @model_validator(mode="after")
    def _secret_names_are_not_plain_names(self) -> TemplateParameters:
        both = sorted(set(self.parameters) & set(self.secret_parameters))
        if both:
            raise ValueError(f"{', '.join(both)} given both in parameters and in secretParameters: keep one")
        return self

    def launch_parameters(self) -> dict[str, str]:
        """What the engine receives: the plain parameters and the secret ones."""
        return {**self.parameters, **self.secret_parameters}


class FlexTemplateArtifact(TemplateParameters):
    kind: Literal["FLEX_TEMPLATE"] = "FLEX_TEMPLATE"
    job_name: str = Field(min_length=1)
    container_spec_gcs_path: str = Field(min_length=1)
    parameters: dict[str, str] = Field(default_factory=dict)
    secret_parameters: dict[str, str] = Field(default_factory=dict)
    environment: dict[str, Any] = Field(default_factory=dict)


class ClassicTemplateArtifact(TemplateParameters):
    kind: Literal["CLASSIC_TEMPLATE"] = "CLASSIC_TEMPLATE"
    job_name: str = Field(min_length=1)
    gcs_path: str = Field(min_length=1)
    parameters: dict[str, str] = Field(default_factory=dict)
    secret_parameters: dict[str, str] = Field(default_factory=dict)
    environment: dict[str, Any] = Field(default_factory=dict)


Artifact = Annotated[JarArtifact | FlexTemplateArtifact | ClassicTemplateArtifact, Field(discriminator="kind")]

_ARTIFACTS_BY_ENGINE = {Engine.FLINK: ("JAR",), Engine.DATAFLOW: ("FLEX_TEMPLATE", "CLASSIC_TEMPLATE")}


class JobSpec(Input):
    engine: Engine
    # As long as a Deployment Target's name may be; it is also a search attribute, whose values Temporal limits.
    deployment_target_name: str = Field(min_length=1, max_length=63)
    parallelism: int = Field(default=1, ge=1, le=100_000)
    artifact: Artifact
    flink_configuration: dict[str, str] = Field(default_factory=dict)
    restore_from_savepoint: str | None = Field(
        default=None, description="savepoint location the engine job starts from (Flink)"
    )
    # Dataflow: the target's project and region are used unless the spec names its own.
    project: str | None = None
    region: str | None = None
    # How long a savepoint (drain, update) may take before jobctl gives up on it: a drain then cancels
    # the engine job instead and says so; an update is not carried out and the job keeps running.
    savepoint_timeout_seconds: int = Field(default=600, ge=1, le=7 * 24 * 3600)

    @model_validator(mode="after")
    def _artifact_fits_engine(self) -> JobSpec:
        allowed = _ARTIFACTS_BY_ENGINE[self.engine]
        if self.artifact.kind not in allowed:
            raise ValueError(
                f"engine {self.engine} runs artifacts of kind {' or '.join(allowed)}, not {self.artifact.kind}"
            )
        return self

    @property
    def secret_values(self) -> dict[str, str]:
        """The secret parameters (name: value), if the artifact has any."""
        return dict(getattr(self.artifact, "secret_parameters", {}))

    def unusable_secrets(self) -> list[str]:
        """Secret parameters whose value is the redaction mark: never sent encrypted (jobctl.codec then
        redacts them on arrival) or copied from what `jobctl get` shows. Launching with them would be wrong."""
        return sorted(name for name, value in self.secret_values.items() if value == REDACTED)

    def redacted(self) -> JobSpec:
        """This spec with every secret value replaced by "***": what queries and the CLI show."""
        if not self.secret_values:
            return self
        hidden = {name: REDACTED for name in self.secret_values}
        return self.model_copy(update={"artifact": self.artifact.model_copy(update={"secret_parameters": hidden})})


_LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.\-/]{0,61}[A-Za-z0-9])?$")


class JobMetadata(Input):
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    name: str = Field(default="", max_length=253)
    deployment_name: str | None = Field(default=None, max_length=253)
    labels: dict[str, str] = Field(default_factory=dict)
    created_at: datetime | None = None
    terminated_at: datetime | None = None

    @field_validator("id")
    @classmethod
    def _id_is_uuid(cls, value: str) -> str:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(f"metadata.id must be a UUID such as {uuid.uuid4()}, got {value!r}") from None

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _LABEL_KEY.match(key):
                raise ValueError(f"label key {key!r} must be 1-63 letters, digits, '-', '_', '.' or '/'")
        return value

    @property
    def engine_job_id(self) -> str:
        """The Flink job id: metadata.id without dashes, fixed before submitting so retries find it."""
        return self.id.replace("-", "")


class StartedStatus(Model):
    """Ververica's `status.started`, plus the engine-neutral fields every engine fills."""

    flink_job_id: str | None = None
    transition_time: datetime | None = None
    last_update_time: datetime | None = None
    observed_flink_job_restarts: int | None = None
    observed_flink_job_status: str | None = None
    # Dataflow jobs report their own observed fields.
    dataflow_job_id: str | None = None
    observed_dataflow_job_state: str | None = None
    observed_dataflow_job_type: str | None = None
    observed_dataflow_current_state_time: datetime | None = None
    replace_job_id: str | None = None
    replaced_by_job_id: str | None = None


class Failure(Model):
    reason: str
    message: str
    failed_at: datetime | None = None


class SavepointStatus(Model):
    """A savepoint taken by jobctl. Its location is never forgotten once the engine reported it."""

    location: str
    taken_for: Literal["DRAIN", "UPDATE"]
    completed_at: datetime | None = None


class TerminatingStatus(Model):
    request: Literal["CANCEL", "DRAIN", "UPDATE"]
    reason: str | None = None
    requested_at: datetime | None = None


class JobEvent(Model):
    time: datetime
    kind: str
    message: str


class JobLinks(Model):
    predecessor_job_id: str | None = None
    successor_job_id: str | None = None
    # The predecessor's engine job that this Job replaces in place (Dataflow updates).
    replaces_engine_job_id: str | None = None


class LeaseStatus(Model):
    """What the Job holds on its Deployment Target (released when the Job ends)."""

    target: str
    resources: dict[str, int]
    granted_at: datetime | None = None
    ledger_workflow_id: str


class JobStatus(Model):
    state: JobState = JobState.STARTING
    # Engine-neutral: the id the engine knows this Job by (Flink job id, Dataflow job id).
    engine_job_id: str | None = None
    engine_ui_url: str | None = None
    # The Deployment Target's watcher (a workflow id) that tells this Job about each change of its engine
    # job; None while the Job observes its engine job by itself.
    watched_by: str | None = None
    # Why the Job is still STARTING (e.g. waiting for the Deployment Target).
    starting_message: str | None = None
    started: StartedStatus | None = None
    terminating: TerminatingStatus | None = None
    failure: Failure | None = None
    savepoint: SavepointStatus | None = None
    lease: LeaseStatus | None = None
    links: JobLinks = Field(default_factory=JobLinks)
    # The most recent events (newest last), including requests that were rejected and why.
    events: list[JobEvent] = Field(default_factory=list)


class Job(Input):
    kind: Literal["Job"] = "Job"
    api_version: str = "v1"
    metadata: JobMetadata = Field(default_factory=JobMetadata)
    spec: JobSpec
    status: JobStatus | None = None

    @property
    def workflow_id(self) -> str:
        return workflow_id_for(self.metadata.id)

    def redacted(self) -> Job:
        """This Job with every secret value replaced by "***" (for the `job` query and `jobctl get`)."""
        return self.model_copy(update={"spec": self.spec.redacted()})


def workflow_id_for(job_id: str) -> str:
    return f"job-{job_id}"


# --- Requests (signals and updates): one JSON object each ---------------------------------------


class CancelRequest(Input):
    reason: str | None = Field(default=None, max_length=2000)


class DrainRequest(Input):
    reason: str | None = Field(default=None, max_length=2000)
    # Overrides spec.savepointTimeoutSeconds for this drain.
    savepoint_timeout_seconds: int | None = Field(default=None, ge=1, le=7 * 24 * 3600)


class UpdateRequest(Input):
    spec: JobSpec
    reason: str | None = Field(default=None, max_length=2000)


class RequestAnswer(Model):
    """What an update (the answered form of a request) returns."""

    job_id: str
    accepted: bool
    state: JobState
    message: str
