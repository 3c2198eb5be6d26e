"""The Job state machine: one pure module, no I/O, no Temporal.

Job states are the Ververica Platform Job states. A Job starts in STARTING (acquire the Deployment
Target's resources, submit), runs in STARTED, stops through TERMINATING, and ends in exactly one of
TERMINATED, FAILED or FINISHED. Engines report their own job status; each engine's status maps onto
one engine-neutral `EnginePhase`, and `next_state` decides what that means for the Job. Workflows call
`transition` for every state change, so a change the table does not allow cannot happen: it raises.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    STARTING = "STARTING"
    STARTED = "STARTED"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    FAILED = "FAILED"
    FINISHED = "FINISHED"


TERMINAL: frozenset[JobState] = frozenset({JobState.TERMINATED, JobState.FAILED, JobState.FINISHED})

# from -> the states it may go to. Everything else is illegal.
ALLOWED: dict[JobState, frozenset[JobState]] = {
    # A short bounded job can finish before it was ever seen running, hence STARTING -> FINISHED.
    JobState.STARTING: frozenset({JobState.STARTED, JobState.TERMINATING, JobState.FAILED, JobState.FINISHED}),
    JobState.STARTED: frozenset({JobState.TERMINATING, JobState.FAILED, JobState.FINISHED}),
    # A stop that goes wrong (the engine job fails while stopping) ends FAILED, never silently TERMINATED.
    JobState.TERMINATING: frozenset({JobState.TERMINATED, JobState.FAILED}),
    JobState.TERMINATED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.FINISHED: frozenset(),
}


class IllegalTransition(ValueError):
    """Raised for a state change the Job state machine does not allow."""

    def __init__(self, src: JobState, dst: JobState) -> None:
        allowed = ", ".join(sorted(ALLOWED[src])) or "nothing (terminal)"
        super().__init__(f"illegal Job state transition {src} -> {dst}; from {src} a Job may go to {allowed}")
        self.src = src
        self.dst = dst


def can_transition(src: JobState, dst: JobState) -> bool:
    return dst in ALLOWED[src]


def transition(src: JobState, dst: JobState) -> JobState:
    """Return `dst` if the Job may go there from `src`, else raise IllegalTransition."""
    if not can_transition(src, dst):
        raise IllegalTransition(src, dst)
    return dst


def is_terminal(state: JobState) -> bool:
    return state in TERMINAL


class EnginePhase(StrEnum):
    """What an observation of the engine says about its job, in engine-neutral words."""

    PENDING = "PENDING"  # accepted by the engine, not running yet
    RUNNING = "RUNNING"  # running, including while it restarts after a failure
    STOPPING = "STOPPING"  # being cancelled or drained
    FINISHED = "FINISHED"  # ended by itself, successfully
    STOPPED = "STOPPED"  # ended because someone stopped it (cancelled, drained, replaced by an update)
    FAILED = "FAILED"  # ended with an error
    UNKNOWN = "UNKNOWN"  # the engine API is unreachable, or does not answer for this job


# Phases after which the engine job does nothing more.
ENDED_PHASES = frozenset({EnginePhase.FINISHED, EnginePhase.STOPPED, EnginePhase.FAILED})


# Flink JobStatus -> phase. SUSPENDED is only locally terminal (the JobManager lost leadership and
# another one will take over), and FAILING/RESTARTING are part of a running job's life: none of them
# ends the Job.
FLINK_PHASES: dict[str, EnginePhase] = {
    "INITIALIZING": EnginePhase.PENDING,
    "CREATED": EnginePhase.PENDING,
    "RUNNING": EnginePhase.RUNNING,
    "FAILING": EnginePhase.RUNNING,
    "RESTARTING": EnginePhase.RUNNING,
    "RECONCILING": EnginePhase.RUNNING,
    "SUSPENDED": EnginePhase.UNKNOWN,
    "CANCELLING": EnginePhase.STOPPING,
    "CANCELED": EnginePhase.STOPPED,
    "FINISHED": EnginePhase.FINISHED,
    "FAILED": EnginePhase.FAILED,
}

# Dataflow JobState (without the JOB_STATE_ prefix) -> phase. A STOPPED job has not started yet.
DATAFLOW_PHASES: dict[str, EnginePhase] = {
    "UNKNOWN": EnginePhase.UNKNOWN,
    "STOPPED": EnginePhase.PENDING,
    "RUNNING": EnginePhase.RUNNING,
    "DONE": EnginePhase.FINISHED,
    "FAILED": EnginePhase.FAILED,
    "CANCELLED": EnginePhase.STOPPED,
    "UPDATED": EnginePhase.STOPPED,
    "DRAINING": EnginePhase.STOPPING,
    "DRAINED": EnginePhase.STOPPED,
    "PENDING": EnginePhase.PENDING,
    "CANCELLING": EnginePhase.STOPPING,
    "QUEUED": EnginePhase.PENDING,
    # A batch job cleaning up after success is not DONE yet.
    "RESOURCE_CLEANING_UP": EnginePhase.RUNNING,
    "PAUSING": EnginePhase.RUNNING,
    "PAUSED": EnginePhase.RUNNING,
}


def flink_phase(status: str) -> EnginePhase:
    # An unknown future status is shown as it is, and changes nothing.
    return FLINK_PHASES.get(status.upper(), EnginePhase.UNKNOWN)


def dataflow_phase(state: str) -> EnginePhase:
    return DATAFLOW_PHASES.get(state.upper().removeprefix("JOB_STATE_"), EnginePhase.UNKNOWN)


def next_state(current: JobState, phase: EnginePhase) -> JobState | None:
    """The next Job state an observed engine phase leads to, or None if the Job stays where it is.

    Apply it until it answers None: an engine job stopped from outside jobctl walks STARTED ->
    TERMINATING -> TERMINATED, as the seed maps Dataflow's DRAINED, CANCELLED and UPDATED.
    UNKNOWN never changes anything: an engine outage must not turn a running Job into FAILED.
    """
    if is_terminal(current) or phase in (EnginePhase.UNKNOWN, EnginePhase.PENDING):
        return None
    if phase is EnginePhase.FAILED:
        return JobState.FAILED
    if current is JobState.TERMINATING:
        # A drained Flink job reports FINISHED; a cancelled one CANCELED: both are the stop we asked for.
        return JobState.TERMINATED if phase in (EnginePhase.FINISHED, EnginePhase.STOPPED) else None
    if phase in (EnginePhase.STOPPING, EnginePhase.STOPPED):
        return JobState.TERMINATING
    if phase is EnginePhase.RUNNING:
        return JobState.STARTED if current is JobState.STARTING else None
    return JobState.FINISHED  # phase FINISHED


def path_to(current: JobState, phase: EnginePhase) -> list[JobState]:
    """Every state the Job passes through for an observed phase, in order (often none or one)."""
    path: list[JobState] = []
    while (nxt := next_state(current, phase)) is not None:
        path.append(nxt)
        current = nxt
    return path
