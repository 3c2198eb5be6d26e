"""The engine interface: inputs and outputs of the few activities every engine implements.

The workflow only ever calls acquire, submit, observe and stop, with these models; the activities pick
the engine (Flink, Dataflow) from the Job spec. So the workflow never branches on the engine.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from jobctl.models import JobMetadata, JobSpec, Model
from jobctl.states import EnginePhase

# Activity names: the workflow calls activities by name, so workflow code never imports engine clients.
ACQUIRE = "acquire_deployment_target"
SUBMIT = "submit_job"
OBSERVE = "observe_job"
STOP = "stop_job"
ASK = "ask_deployment_target"
TARGET_CAPACITY = "deployment_target_capacity"
CLOSED_HOLDERS = "closed_lease_holders"
WATCH = "watch_deployment_target"
TELL_LEDGER = "tell_deployment_target"
# The signal a Deployment Target's watcher sends a Job workflow when its engine job changed.
OBSERVED = "engine_observed"


class AcquireInput(Model):
    job_id: str
    spec: JobSpec


class Grant(Model):
    """What the Deployment Target granted the Job."""

    target: str
    slots: int
    message: str


class SubmitInput(Model):
    metadata: JobMetadata
    spec: JobSpec
    # Set for the successor of an update on an engine that replaces jobs in place (Dataflow: launch with
    # the same job name and update=true): the engine job this submit replaces.
    replaces_engine_job_id: str | None = None


class Submission(Model):
    engine_job_id: str
    engine_ui_url: str | None = None
    # True when a retried or repeated submit found the engine job already there and took it over.
    adopted: bool = False
    # The workflow id of the Deployment Target's watcher that will signal this Job each change of its
    # engine job (None: the engine job lies outside what the watcher surveys, so the Job observes it itself).
    watched_by: str | None = None


class Observation(Model):
    """One look at the engine job. `phase` is the engine-neutral reading of `engine_status`."""

    engine_job_id: str
    phase: EnginePhase
    # The engine's own word for the job's status, or UNKNOWN when the engine API could not be read.
    engine_status: str
    restarts: int | None = None
    failure_message: str | None = None
    # Why the engine could not be read, while phase is UNKNOWN.
    unreachable_reason: str | None = None
    observed_at: datetime
    # The engine's own observed fields for `status.started`, keyed by their JSON names
    # (Flink: flinkJobId, observedFlinkJobStatus, observedFlinkJobRestarts; Dataflow: dataflowJobId,
    # observedDataflowJobState, ...). The workflow merges them without knowing which engine it is.
    started_fields: dict[str, str | int | None] = Field(default_factory=dict)
    # Requests this engine job cannot take, with the reason, e.g. {"DRAIN": "a Dataflow batch job cannot be
    # drained; cancel it instead"}. The workflow rejects such requests before anything is sent.
    refuses: dict[str, str] = Field(default_factory=dict)

    def differs_from(self, other: Observation | None) -> bool:
        """True if this observation is news for the Job's status (timestamps alone are not)."""
        if other is None:
            return True
        if other is self:  # a watcher's survey hands back the same observation while a job is unchanged
            return False
        keys = ("engine_job_id", "phase", "engine_status", "restarts", "failure_message", "started_fields", "refuses")
        return any(getattr(self, k) != getattr(other, k) for k in keys)


class ObserveInput(Model):
    metadata: JobMetadata
    spec: JobSpec
    engine_job_id: str
    # The last observation the workflow holds: the activity returns as soon as what it sees differs.
    last: Observation | None = None
    # Return even without news after this long, so the workflow's lastUpdateTime moves on.
    max_wait_seconds: float = 3600.0


class WatchInput(Model):
    """What a Deployment Target's watcher surveys: one target, all its engine jobs, in one or a few calls."""

    target: str


class StopMode(StrEnum):
    CANCEL = "CANCEL"  # stop now, no savepoint
    DRAIN = "DRAIN"  # stop with a savepoint after draining all in-flight data (end of stream)
    SUSPEND = "SUSPEND"  # stop with a savepoint, no drain: the state a successor resumes from


class StopInput(Model):
    metadata: JobMetadata
    spec: JobSpec
    # None while the submit's answer is not known (a cancel during STARTING): the engine then looks the
    # job up by the Job's own identity, so nothing submitted is left behind.
    engine_job_id: str | None = None
    mode: StopMode
    # How long a savepoint may take before the stop falls back to a cancel (DRAIN) or gives up (SUSPEND).
    savepoint_timeout_seconds: int = 600
    # False (a cancel only): request the stop and return what the engine reports right after, ended or not;
    # the Job learns of the end from its Deployment Target's watcher.
    wait_for_end: bool = True


class StopResult(Model):
    engine_status: str
    # The engine-neutral reading of engine_status once the stop is over (FINISHED for a drained Flink job,
    # STOPPED for a cancelled one, FAILED if the job failed while stopping).
    phase: EnginePhase = EnginePhase.STOPPED
    savepoint_location: str | None = None
    # True when the savepoint did not complete in time and the job was cancelled instead.
    cancelled_instead: bool = False
    message: str
    # The engine's observed fields after the stop, merged into status.started (see Observation).
    started_fields: dict[str, str | int | None] = Field(default_factory=dict)
    # SUSPEND on an engine that updates jobs in place (Dataflow): nothing was stopped; the successor's
    # submit replaces this engine job, which then ends by itself (Dataflow: JOB_STATE_UPDATED).
    replaced_in_place: bool = False


# --- Deployment Target leases (see jobctl/ledger.py and workflows/deployment_target.py) -------------


class AskInput(Model):
    job_id: str
    holder: str  # the Job's workflow id
    spec: JobSpec
    # The predecessor whose lease this Job takes over (the successor of an update).
    takes_over: str | None = None


class AskReceipt(Model):
    ledger_workflow_id: str
    resources: dict[str, int]
    # The ledger's answer to the ask, when it was asked by update (older receipts: none; the answer came
    # by signal). A queued Job still gets its grant by signal later.
    answer: LeaseAnswer | None = None


class LedgerMessage(Model):
    """A Job telling its Deployment Target's ledger something (signal `confirm` or `release`)."""

    ledger_workflow_id: str
    signal: str
    job_id: str


class CapacitySnapshot(Model):
    """A target's declared capacity and, when the engine can tell, what it really has free."""

    capacity: dict[str, int]
    engine_free: dict[str, int] | None = None
    engine_note: str | None = None


class LeaseGrant(Model):
    target: str
    resources: dict[str, int]
    granted_at: datetime
    message: str
    # Whether the Job must confirm once its engine job runs: only where the ledger also checks the engine's
    # own free capacity (Flink), or the lease was taken over from a predecessor.
    confirm: bool = True


class LeaseNotice(Model):
    """The ledger tells a waiting Job where it stands, or why it will never be granted."""

    message: str
    refused: bool = False


class LeaseAnswer(Model):
    """The ledger's answer to an ask sent as an update: granted now, queued (where), or refused."""

    grant: LeaseGrant | None = None
    waiting: LeaseNotice | None = None
    refused: LeaseNotice | None = None


class JobRef(Model):
    job_id: str


class HolderList(Model):
    holders: list[str]
