"""The emulated Dataflow service: jobs, their states, timing and injected faults. Pure: no gRPC, no I/O.

Time comes from an explicit clock (a callable returning epoch seconds). The model is lazy: every public
call first runs `tick()`, which replays, in time order, every service step that has fallen due since the
last call (QUEUED -> PENDING after `queued_seconds`, ...). Each step is stamped with the time it was due,
not the time it was observed, so `current_state_time` is exact whether the caller polls every 10 ms or
once an hour. Tests drive a `ManualClock` and never sleep; the gRPC server passes `time.time`.

Every state change goes through `_transition`, which refuses any pair not in `ALLOWED`: a bug in the
emulator shows up as `IllegalTransition`, never as a job in a state the real service cannot produce.
Requests the real service refuses raise `EmulatorError` with a gRPC status code name instead.

Conventions (a launch has no graph to look at, so the job type and faults come from the launch):
- Job type, first match wins: launch parameter `jobctl-emulator-type: batch|streaming`; Beam's own
  pipeline option parameter `streaming: true|false`; `environment.streaming_mode` set (only streaming
  jobs have one); the template path (flex `container_spec_gcs_path`, classic `gcs_path`) containing
  "streaming" or "batch"; else `EmulatorConfig.default_job_type` (batch, like Beam).
- Faults per job, as launch parameters (all optional, values are strings):
  `jobctl-emulator-fail-after-seconds: "3"`  the service fails the job 3 s after launch (a job still
      QUEUED fails as soon as it reaches PENDING: QUEUED cannot go to FAILED);
  `jobctl-emulator-fail-message: "..."`      the JOB_MESSAGE_ERROR text of that failure;
  `jobctl-emulator-drain-never-completes: "true"`, `jobctl-emulator-cancel-never-completes: "true"`;
  `jobctl-emulator-run-seconds: "5"`         a batch job's running time (overrides the config);
  `jobctl-emulator-queued-seconds: "3600"`   time in QUEUED (overrides the config; a FlexRS job may queue for hours);
  `jobctl-emulator-launch-error: "INVALID_ARGUMENT: bad template"`  the launch itself is refused.
- Faults at run time: `fail_job` (the service fails a job on its own), `set_unavailable` / `clear_unavailable`
  (every API call answers UNAVAILABLE for N seconds or until cleared), `faults` (defaults for new jobs).
"""

from __future__ import annotations

import base64
import heapq
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Literal, TypeVar

from pydantic import BaseModel, Field


class JobState(IntEnum):
    """google.dataflow.v1beta3.JobState, same names and numbers (checked by a test against the client)."""

    JOB_STATE_UNKNOWN = 0
    JOB_STATE_STOPPED = 1
    JOB_STATE_RUNNING = 2
    JOB_STATE_DONE = 3
    JOB_STATE_FAILED = 4
    JOB_STATE_CANCELLED = 5
    JOB_STATE_UPDATED = 6
    JOB_STATE_DRAINING = 7
    JOB_STATE_DRAINED = 8
    JOB_STATE_PENDING = 9
    JOB_STATE_CANCELLING = 10
    JOB_STATE_QUEUED = 11
    JOB_STATE_RESOURCE_CLEANING_UP = 12


class JobType(IntEnum):
    """google.dataflow.v1beta3.JobType."""

    JOB_TYPE_UNKNOWN = 0
    JOB_TYPE_BATCH = 1
    JOB_TYPE_STREAMING = 2


class Importance(IntEnum):
    """google.dataflow.v1beta3.JobMessageImportance (the numbers are not in severity order: see RANK)."""

    JOB_MESSAGE_IMPORTANCE_UNKNOWN = 0
    JOB_MESSAGE_DEBUG = 1
    JOB_MESSAGE_DETAILED = 2
    JOB_MESSAGE_BASIC = 5
    JOB_MESSAGE_WARNING = 3
    JOB_MESSAGE_ERROR = 4


IMPORTANCE_RANK = {i: r for r, i in enumerate(Importance)}  # declaration order = severity order


S = JobState
_T = TypeVar("_T")
# ---------------------------------------------------------------------------------------------------
# The transition table (reference: /work/shared/reference/dataflow.md). from -> states it may go to.
# fmt: off
ALLOWED: dict[JobState, frozenset[JobState]] = {
    S.JOB_STATE_QUEUED:     frozenset({S.JOB_STATE_PENDING, S.JOB_STATE_CANCELLED}),  # a cancel is immediate
    S.JOB_STATE_STOPPED:    frozenset({S.JOB_STATE_RUNNING}),  # not started yet (CreateJob)
    S.JOB_STATE_PENDING:    frozenset({S.JOB_STATE_RUNNING, S.JOB_STATE_FAILED}),
    S.JOB_STATE_RUNNING:    frozenset({S.JOB_STATE_DONE, S.JOB_STATE_FAILED, S.JOB_STATE_UPDATED,  # service
                                       S.JOB_STATE_DRAINING, S.JOB_STATE_CANCELLING,  # requested (UpdateJob)
                                       S.JOB_STATE_RESOURCE_CLEANING_UP}),  # opt-in, successful batch job
    S.JOB_STATE_RESOURCE_CLEANING_UP: frozenset({S.JOB_STATE_DONE, S.JOB_STATE_FAILED}),
    S.JOB_STATE_DRAINING:   frozenset({S.JOB_STATE_DRAINED, S.JOB_STATE_CANCELLED, S.JOB_STATE_FAILED}),
    S.JOB_STATE_CANCELLING: frozenset({S.JOB_STATE_CANCELLED, S.JOB_STATE_FAILED}),
    S.JOB_STATE_DONE:       frozenset(),
    S.JOB_STATE_FAILED:     frozenset(),
    S.JOB_STATE_CANCELLED:  frozenset(),
    S.JOB_STATE_UPDATED:    frozenset(),
    S.JOB_STATE_DRAINED:    frozenset(),
}
# fmt: on
TERMINAL: frozenset[JobState] = frozenset(s for s, nxt in ALLOWED.items() if not nxt)
INITIAL: frozenset[JobState] = frozenset({S.JOB_STATE_QUEUED, S.JOB_STATE_STOPPED})  # states a job is born in
# ---------------------------------------------------------------------------------------------------

# The real service's job-name rule: lower-case letters, digits and dashes, starting with a letter.
JOB_NAME_RE = re.compile(r"[a-z]([-a-z0-9]{0,1022}[a-z0-9])?")
PARAM_PREFIX = "jobctl-emulator-"
FAIL_MESSAGE = "Workflow failed. Causes: the Dataflow emulator failed this job (injected fault)."


class Code(StrEnum):
    """gRPC status code names (the server maps them onto grpc.StatusCode)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNAVAILABLE = "UNAVAILABLE"


class EmulatorError(Exception):
    """A request the (real) service refuses; carries the gRPC status code name."""

    def __init__(self, code: Code | str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = Code(code)
        self.message = message


class IllegalTransition(AssertionError):
    """A state change outside ALLOWED: always an emulator bug, never a refusal."""


# ------------------------------------------------------------------------------------------ config
class Faults(BaseModel):
    """Fault defaults. Given at start (EmulatorConfig.faults) and changeable at run time (model.faults)."""

    unavailable_seconds: float | None = Field(
        None, description="answer UNAVAILABLE to every call for this long after start (inf = until cleared)"
    )
    fail_after_seconds: float | None = Field(None, description="every new job fails this long after launch")
    fail_message: str = FAIL_MESSAGE
    drain_never_completes: bool = False
    cancel_never_completes: bool = False


class EmulatorConfig(BaseModel):
    """Timing in seconds. The defaults are short so a local stack feels alive without waiting."""

    queued_seconds: float = Field(1.0, ge=0, description="QUEUED (flex launcher / FlexRS) before PENDING")
    pending_seconds: float = Field(2.0, ge=0, description="PENDING (or STOPPED) before RUNNING")
    batch_running_seconds: float = Field(10.0, ge=0, description="a batch job's RUNNING time before it succeeds")
    resource_cleaning_up: bool = Field(False, description="batch jobs pass RESOURCE_CLEANING_UP before DONE")
    resource_cleaning_up_seconds: float = Field(1.0, ge=0)
    draining_seconds: float = Field(2.0, ge=0)
    cancelling_seconds: float = Field(1.0, ge=0)
    force_cancel_after_seconds: float = Field(
        1800.0, ge=0, description="a force cancel (label force_cancel_job=true) needs a cancel this much older"
    )
    default_job_type: Literal["batch", "streaming"] = "batch"
    default_location: str | None = Field(
        "us-central1",
        description="the location used when a request has none (the real service's silent "
        "default); None refuses such requests with INVALID_ARGUMENT",
    )
    max_page_size: int = Field(100, ge=1)
    faults: Faults = Field(default_factory=Faults)


# ------------------------------------------------------------------------------------------- state
class ManualClock:
    """A clock for tests: time moves only when told to."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "time does not go backwards"
        self.now += seconds


@dataclass(frozen=True)
class Transition:
    job_id: str
    src: JobState  # JOB_STATE_UNKNOWN for a job's creation
    dst: JobState
    at: float


@dataclass
class Message:
    id: str
    time: float
    text: str
    importance: Importance


@dataclass
class EmulatedJob:
    id: str
    project_id: str
    location: str
    name: str
    kind: Literal["flex", "classic", "create"]
    intended_type: JobType  # what the job turns out to be; `type` shows it once the job leaves QUEUED
    type: JobType
    state: JobState
    state_time: float
    create_time: float
    start_time: float | None
    client_request_id: str
    labels: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    template_path: str = ""
    transform_name_mapping: dict[str, str] = field(default_factory=dict)
    requested_state: JobState = S.JOB_STATE_UNKNOWN
    replace_job_id: str = ""
    replaced_by_job_id: str = ""
    # service behaviour of this job
    queued_seconds: float = 0.0
    run_seconds: float = 0.0
    fail_at: float | None = None
    fail_message: str = FAIL_MESSAGE
    drain_never_completes: bool = False
    cancel_never_completes: bool = False
    cancel_requested_at: float | None = None
    messages: list[Message] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.project_id, self.location, self.name)


@dataclass
class _Event:
    at: float
    dst: JobState
    text: str
    importance: Importance = Importance.JOB_MESSAGE_BASIC


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


class DataflowModel:
    """The emulated service state for every project and location."""

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        clock: Callable[[], float] | None = None,
        on_transition: Callable[[EmulatedJob, Transition], None] | None = None,
    ) -> None:
        import time

        self.config = config or EmulatorConfig()
        self.clock = clock or time.time
        self.faults = self.config.faults.model_copy(deep=True)
        self.on_transition = on_transition
        self.jobs: dict[str, EmulatedJob] = {}  # every job ever, by id (ids are globally unique)
        self.transitions: list[Transition] = []  # every state change, in order (tests read it)
        self._active: dict[tuple[str, str, str], str] = {}  # (project, location, name) -> id of the active job
        # (when, order, job id) of each job's next service step, earliest first. A job's entry is added whenever
        # what its next step depends on changes (its state, a failure injected); an entry that no longer matches
        # the job's next step is dropped when it comes up. Scanning every active job instead on each API call
        # made a call cost O(jobs): at 10,000 jobs the emulator alone took most of a core.
        self._timers: list[tuple[float, int, str]] = []
        self._timer_order = 0
        self._seq = 0
        self._now = self.clock()
        u = self.faults.unavailable_seconds
        self._unavailable_until: float | None = None if u is None else self._now + u

    # ----------------------------------------------------------------------------------- clock
    def now(self) -> float:
        # Never let time run backwards (a wall clock can be adjusted); events are ordered by it.
        self._now = max(self._now, self.clock())
        return self._now

    def tick(self) -> None:
        """Apply every service step that is due by now, earliest first (across all jobs)."""
        now = self.now()
        while self._timers and self._timers[0][0] <= now:
            at, _, job_id = heapq.heappop(self._timers)
            job = self.jobs[job_id]
            ev = self._next_event(job)
            if ev is None or ev.at != at:
                continue  # stale: the job changed since (its current step has an entry of its own)
            self._transition(job, ev.dst, ev.at, ev.text, ev.importance)
            if ev.dst == S.JOB_STATE_RUNNING:
                self._apply_deferred_request(job, ev.at)

    def _schedule(self, job: EmulatedJob) -> None:
        """Note the job's next service step; call after anything its next step depends on changed."""
        ev = self._next_event(job)
        if ev is not None:
            self._timer_order += 1
            heapq.heappush(self._timers, (ev.at, self._timer_order, job.id))

    def _next_event(self, job: EmulatedJob) -> _Event | None:
        """The next step the service takes on its own for this job, if any (the job's 'timer')."""
        c, st = self.config, job.state
        candidates: list[_Event] = []
        if job.fail_at is not None and S.JOB_STATE_FAILED in ALLOWED[st]:
            candidates.append(
                _Event(
                    max(job.fail_at, job.state_time), S.JOB_STATE_FAILED, job.fail_message, Importance.JOB_MESSAGE_ERROR
                )
            )
        if st == S.JOB_STATE_QUEUED:
            candidates.append(_Event(job.state_time + job.queued_seconds, S.JOB_STATE_PENDING, "Job is starting."))
        elif st in (S.JOB_STATE_PENDING, S.JOB_STATE_STOPPED):
            candidates.append(
                _Event(job.state_time + c.pending_seconds, S.JOB_STATE_RUNNING, "Workers have started successfully.")
            )
        elif st == S.JOB_STATE_RUNNING and job.type == JobType.JOB_TYPE_BATCH:
            dst = S.JOB_STATE_RESOURCE_CLEANING_UP if c.resource_cleaning_up else S.JOB_STATE_DONE
            candidates.append(_Event(job.state_time + job.run_seconds, dst, "Workflow completed successfully."))
        elif st == S.JOB_STATE_RESOURCE_CLEANING_UP:
            candidates.append(
                _Event(job.state_time + c.resource_cleaning_up_seconds, S.JOB_STATE_DONE, "Cleaned up resources.")
            )
        elif st == S.JOB_STATE_DRAINING and not job.drain_never_completes:
            candidates.append(_Event(job.state_time + c.draining_seconds, S.JOB_STATE_DRAINED, "Job drained."))
        elif st == S.JOB_STATE_CANCELLING and not job.cancel_never_completes:
            candidates.append(_Event(job.state_time + c.cancelling_seconds, S.JOB_STATE_CANCELLED, "Job cancelled."))
        # On a tie the failure wins: it was scheduled explicitly.
        return min(candidates, key=lambda e: e.at, default=None)

    # ------------------------------------------------------------------------ the one state change
    def _transition(
        self,
        job: EmulatedJob,
        dst: JobState,
        at: float,
        text: str = "",
        importance: Importance = Importance.JOB_MESSAGE_BASIC,
    ) -> None:
        if dst not in ALLOWED[job.state]:
            raise IllegalTransition(f"job {job.id}: {job.state.name} -> {dst.name} is not in the table")
        t = Transition(job.id, job.state, dst, at)
        if job.state == S.JOB_STATE_QUEUED:
            job.type = job.intended_type  # the flex launcher has built the graph: the type is known now
            if job.start_time is None:
                job.start_time = at  # FlexRS: start_time is set when the job goes PENDING
        job.state, job.state_time = dst, at
        if dst in TERMINAL:
            self._active.pop(job.key, None)
        self._message(job, at, text or f"Job state changed to {dst.name}.", importance)
        self._schedule(job)
        self.transitions.append(t)
        if self.on_transition is not None:
            self.on_transition(job, t)

    def _message(self, job: EmulatedJob, at: float, text: str, importance: Importance) -> None:
        job.messages.append(Message(f"{len(job.messages) + 1}", at, text, importance))

    # ---------------------------------------------------------------------------------- faults
    def is_unavailable(self) -> bool:
        return self._unavailable_until is not None and self.now() < self._unavailable_until

    def set_unavailable(self, seconds: float | None = None) -> None:
        """Every API call answers UNAVAILABLE for `seconds` (None: until `clear_unavailable`)."""
        self._unavailable_until = math.inf if seconds is None else self.now() + seconds

    def clear_unavailable(self) -> None:
        self._unavailable_until = None

    def fail_job(self, project_id: str, location: str, job_id: str, message: str | None = None) -> EmulatedJob:
        """The service fails a job on its own (now, or as soon as it leaves QUEUED, which cannot fail)."""
        job = self._get(project_id, location, job_id)
        if job.terminal:
            raise EmulatorError(Code.FAILED_PRECONDITION, f"job {job_id} is already {job.state.name}")
        job.fail_at = self.now()
        job.fail_message = message or self.faults.fail_message
        self._schedule(job)
        self.tick()
        return job

    # -------------------------------------------------------------------------------- requests
    def _location(self, project_id: str, location: str) -> str:
        if not project_id:
            raise EmulatorError(Code.INVALID_ARGUMENT, "project_id is required")
        if location:
            return location
        if not self.config.default_location:
            raise EmulatorError(Code.INVALID_ARGUMENT, "location is required")
        return self.config.default_location

    def _get(self, project_id: str, location: str, job_id: str) -> EmulatedJob:
        location = self._location(project_id, location)
        job = self.jobs.get(job_id)
        # A job in another project or region does not exist as far as this request is concerned.
        if job is None or job.project_id != project_id or job.location != location:
            raise EmulatorError(
                Code.NOT_FOUND,
                f"(emulator): Requested job with id {job_id} not found in project {project_id} location {location}.",
            )
        return job

    def get_job(self, project_id: str, location: str, job_id: str) -> EmulatedJob:
        self.tick()
        return self._get(project_id, location, job_id)

    def launch(
        self,
        project_id: str,
        location: str,
        job_name: str,
        *,
        kind: Literal["flex", "classic", "create"] = "flex",
        template_path: str = "",
        parameters: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        update: bool = False,
        replace_job_id: str = "",
        transform_name_mapping: dict[str, str] | None = None,
        streaming_mode: bool = False,
        flexrs: bool = False,
        job_type: JobType = JobType.JOB_TYPE_UNKNOWN,
        client_request_id: str = "",
        validate_only: bool = False,
    ) -> EmulatedJob:
        """LaunchFlexTemplate / LaunchTemplate / CreateJob. `update` replaces the active streaming job of
        that name (CreateJob: a non-empty `replace_job_id`)."""
        self.tick()
        location = self._location(project_id, location)
        params = dict(parameters or {})
        if not JOB_NAME_RE.fullmatch(job_name or ""):
            raise EmulatorError(
                Code.INVALID_ARGUMENT,
                f"(emulator): invalid job name {job_name!r}: it must match [a-z]([-a-z0-9]{{0,1022}}[a-z0-9])?",
            )
        if err := params.get(PARAM_PREFIX + "launch-error"):
            code, _, msg = err.partition(":")
            raise EmulatorError(
                code.strip() if code.strip() in Code.__members__ else Code.INVALID_ARGUMENT, msg.strip() or err
            )
        intended = self._job_type(params, template_path, streaming_mode, job_type)
        update = update or bool(replace_job_id)

        old: EmulatedJob | None = None
        active_id = self._active.get((project_id, location, job_name))
        if update:
            old = self._check_update(project_id, location, job_name, active_id, replace_job_id, intended)
            intended = JobType.JOB_TYPE_STREAMING
        elif active_id is not None:
            raise EmulatorError(
                Code.ALREADY_EXISTS,
                f"(emulator): The workflow could not be created. Causes: "
                f"There is already an active job named {job_name} (id {active_id}). If you "
                "want to submit a second job, try again by setting a different name.",
            )

        now = self.now()
        fail_after = self._param_float(params, "fail-after-seconds", self.faults.fail_after_seconds)
        run_seconds = self._param_float(params, "run-seconds", self.config.batch_running_seconds)
        queued_seconds = self._param_float(params, "queued-seconds", self.config.queued_seconds)
        self._seq += 1
        job = EmulatedJob(
            id=self._job_id(now),
            project_id=project_id,
            location=location,
            name=job_name,
            kind=kind,
            intended_type=intended,
            # A flex launch knows its type only once the launcher has run (the job leaves QUEUED).
            type=JobType.JOB_TYPE_UNKNOWN if kind == "flex" else intended,
            state=S.JOB_STATE_STOPPED if kind == "create" else S.JOB_STATE_QUEUED,
            state_time=now,
            create_time=now,
            start_time=None if flexrs else now,
            client_request_id=client_request_id or f"{self._stamp(now)}_{self._seq}",
            labels=dict(labels or {}),
            parameters=params,
            template_path=template_path,
            transform_name_mapping=dict(transform_name_mapping or {}),
            replace_job_id=old.id if old else "",
            run_seconds=run_seconds if run_seconds is not None else self.config.batch_running_seconds,
            queued_seconds=queued_seconds if queued_seconds is not None else self.config.queued_seconds,
            fail_at=None if fail_after is None else now + fail_after,
            fail_message=params.get(PARAM_PREFIX + "fail-message") or self.faults.fail_message,
            drain_never_completes=self._param_bool(params, "drain-never-completes", self.faults.drain_never_completes),
            cancel_never_completes=self._param_bool(
                params, "cancel-never-completes", self.faults.cancel_never_completes
            ),
        )
        if validate_only:
            return job  # checked, not created
        if old is not None:
            # The replacement takes over at once, so there is never more than one active job per name.
            old.replaced_by_job_id = job.id
            self._transition(old, S.JOB_STATE_UPDATED, now, f"Job replaced by job {job.id} (update).")
        self.jobs[job.id] = job
        self._active[job.key] = job.id
        self.transitions.append(Transition(job.id, S.JOB_STATE_UNKNOWN, job.state, now))
        self._message(job, now, f"Job {job.id} created ({job.state.name}).", Importance.JOB_MESSAGE_BASIC)
        self._schedule(job)
        if self.on_transition is not None:
            self.on_transition(job, self.transitions[-1])
        self.tick()  # a zero-second timing or fault applies at once
        return job

    def _check_update(
        self, project_id: str, location: str, name: str, active_id: str | None, replace_job_id: str, intended: JobType
    ) -> EmulatedJob:
        if active_id is None:
            raise EmulatorError(
                Code.FAILED_PRECONDITION,
                f"(emulator): Could not update job {name}: there is no active job with this name to update.",
            )
        old = self.jobs[active_id]
        if replace_job_id and replace_job_id != old.id:
            raise EmulatorError(
                Code.FAILED_PRECONDITION,
                f"(emulator): job {replace_job_id} is not the active job named {name} (that is {old.id}).",
            )
        if (
            old.type == JobType.JOB_TYPE_BATCH
            or old.intended_type == JobType.JOB_TYPE_BATCH
            or intended == JobType.JOB_TYPE_BATCH
        ):
            raise EmulatorError(
                Code.INVALID_ARGUMENT, f"(emulator): Could not update job {name}: only streaming jobs can be updated."
            )
        # Only RUNNING -> UPDATED is in the table: a job still starting, or already draining or cancelling,
        # is the active job of that name (a plain launch gets ALREADY_EXISTS) but cannot be replaced.
        if old.state != S.JOB_STATE_RUNNING:
            raise EmulatorError(
                Code.FAILED_PRECONDITION,
                f"(emulator): Could not update job {name} ({old.id}): "
                f"it is {old.state.name}; only a RUNNING job can be updated.",
            )
        return old

    def update_job(
        self,
        project_id: str,
        location: str,
        job_id: str,
        requested_state: JobState,
        labels: dict[str, str] | None = None,
    ) -> EmulatedJob:
        """UpdateJob with a requested_state: JOB_STATE_CANCELLED, JOB_STATE_DRAINED or JOB_STATE_DONE.
        `labels` are the labels on the request's job (a force cancel is `force_cancel_job=true`)."""
        self.tick()
        job = self._get(project_id, location, job_id)
        now, st = self.now(), job.state
        if requested_state not in (S.JOB_STATE_CANCELLED, S.JOB_STATE_DRAINED, S.JOB_STATE_DONE):
            raise EmulatorError(
                Code.INVALID_ARGUMENT,
                f"(emulator): requested state {requested_state.name} "
                "is not supported; use JOB_STATE_CANCELLED, JOB_STATE_DRAINED or JOB_STATE_DONE.",
            )
        if job.terminal:
            raise EmulatorError(
                Code.FAILED_PRECONDITION,
                f"(emulator): Workflow modification failed. Could not "
                f"modify job {job_id}: it is already in a terminal state ({st.name}).",
            )
        if requested_state == S.JOB_STATE_DRAINED:
            return self._drain(job, now)
        if requested_state == S.JOB_STATE_CANCELLED:
            return self._cancel(job, now, force=(labels or {}).get("force_cancel_job") == "true")
        # JOB_STATE_DONE: stop a running job now; a starting job stops when it reaches RUNNING; a job
        # already stopping (draining, cancelling, cleaning up) just finishes what it is doing.
        if st == S.JOB_STATE_RUNNING:
            job.requested_state = requested_state
            self._transition(job, S.JOB_STATE_DONE, now, "Job stopped on request (JOB_STATE_DONE).")
        elif st in (S.JOB_STATE_QUEUED, S.JOB_STATE_PENDING, S.JOB_STATE_STOPPED):
            job.requested_state = requested_state
        return job

    def _cancel(self, job: EmulatedJob, now: float, force: bool) -> EmulatedJob:
        st = job.state
        if force:
            # gcloud's force cancel: only for a job whose normal cancel is at least 30 min old.
            if (
                job.cancel_requested_at is None
                or now - job.cancel_requested_at < self.config.force_cancel_after_seconds
            ):
                raise EmulatorError(
                    Code.FAILED_PRECONDITION,
                    "(emulator): a force cancel needs a normal cancel "
                    f"requested at least {self.config.force_cancel_after_seconds:g} s earlier.",
                )
            if st == S.JOB_STATE_CANCELLING:
                self._transition(job, S.JOB_STATE_CANCELLED, now, "Job force-cancelled.")
                return job
        job.requested_state = S.JOB_STATE_CANCELLED
        if job.cancel_requested_at is None:
            job.cancel_requested_at = now
        if st == S.JOB_STATE_QUEUED:
            self._transition(job, S.JOB_STATE_CANCELLED, now, "Job cancelled before it started.")
        elif st == S.JOB_STATE_RUNNING:
            self._transition(job, S.JOB_STATE_CANCELLING, now, "Cancel requested.")
        elif st == S.JOB_STATE_DRAINING:
            self._transition(job, S.JOB_STATE_CANCELLED, now, "Drain interrupted by a cancel.")
        # PENDING / STOPPED: applied when the job reaches RUNNING (neither may go to CANCELLED directly).
        # CANCELLING: already on its way. RESOURCE_CLEANING_UP: the work is done, it ends DONE.
        return job

    def _drain(self, job: EmulatedJob, now: float) -> EmulatedJob:
        st = job.state
        if job.type == JobType.JOB_TYPE_BATCH:
            raise EmulatorError(
                Code.INVALID_ARGUMENT,
                f"(emulator): Could not drain job {job.id}: drain is supported only for streaming jobs.",
            )
        if job.type == JobType.JOB_TYPE_UNKNOWN:  # still QUEUED after a flex launch
            raise EmulatorError(
                Code.FAILED_PRECONDITION,
                f"(emulator): Could not drain job {job.id}: it has not started yet (cancel it instead).",
            )
        if st == S.JOB_STATE_DRAINING:
            return job  # idempotent
        if st == S.JOB_STATE_CANCELLING or job.requested_state == S.JOB_STATE_CANCELLED:
            raise EmulatorError(
                Code.FAILED_PRECONDITION, f"(emulator): Could not drain job {job.id}: it is being cancelled."
            )
        job.requested_state = S.JOB_STATE_DRAINED
        if st == S.JOB_STATE_RUNNING:
            self._transition(job, S.JOB_STATE_DRAINING, now, "Drain requested.")
        # QUEUED (classic, type known) / PENDING / STOPPED: applied when the job reaches RUNNING.
        return job

    def _apply_deferred_request(self, job: EmulatedJob, at: float) -> None:
        """A stop requested while the job was starting takes effect as soon as it runs."""
        target = {
            S.JOB_STATE_CANCELLED: S.JOB_STATE_CANCELLING,
            S.JOB_STATE_DRAINED: S.JOB_STATE_DRAINING,
            S.JOB_STATE_DONE: S.JOB_STATE_DONE,
        }.get(job.requested_state)
        if target is not None and job.state == S.JOB_STATE_RUNNING:
            self._transition(job, target, at, f"Applying requested state {job.requested_state.name}.")

    def set_labels(self, project_id: str, location: str, job_id: str, labels: dict[str, str]) -> EmulatedJob:
        """UpdateJob with update_mask `labels`."""
        self.tick()
        job = self._get(project_id, location, job_id)
        if job.terminal:
            raise EmulatorError(Code.FAILED_PRECONDITION, f"(emulator): job {job_id} is in a terminal state.")
        job.labels = dict(labels)
        return job

    def list_jobs(
        self,
        project_id: str,
        location: str | None,
        *,
        filter: str = "ALL",
        name: str | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[EmulatedJob], str]:
        """ListJobs (location None: every location, i.e. AggregatedListJobs). filter: UNKNOWN, ALL, ACTIVE,
        TERMINATED. Returns (page, next_page_token)."""
        self.tick()
        if location is not None:
            location = self._location(project_id, location)
        elif not project_id:
            raise EmulatorError(Code.INVALID_ARGUMENT, "project_id is required")
        jobs = [
            j
            for j in self.jobs.values()
            if j.project_id == project_id
            and (location is None or j.location == location)
            and (name is None or j.name == name)
        ]
        active = sorted((j for j in jobs if not j.terminal), key=lambda j: (j.create_time, j.id))
        done = sorted((j for j in jobs if j.terminal), key=lambda j: (j.state_time, j.id), reverse=True)
        if filter == "ACTIVE":
            jobs = active
        elif filter == "TERMINATED":
            jobs = done
        elif filter == "ALL":  # the documented order: active by creation, then terminated by termination
            jobs = active + done
        else:  # UNKNOWN: all, newest first
            jobs = sorted(jobs, key=lambda j: (j.create_time, j.id), reverse=True)
        return self._page(jobs, page_size, page_token)

    def list_messages(
        self,
        project_id: str,
        location: str,
        job_id: str,
        *,
        minimum_importance: Importance = Importance.JOB_MESSAGE_IMPORTANCE_UNKNOWN,
        start_time: float | None = None,
        end_time: float | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[Message], str]:
        self.tick()
        job = self._get(project_id, location, job_id)
        floor = IMPORTANCE_RANK[minimum_importance]
        msgs = [
            m
            for m in job.messages
            if IMPORTANCE_RANK[m.importance] >= floor
            and (start_time is None or m.time >= start_time)
            and (end_time is None or m.time < end_time)
        ]
        return self._page(msgs, page_size, page_token)

    # -------------------------------------------------------------------------------- helpers
    def _page(self, items: list[_T], page_size: int, page_token: str) -> tuple[list[_T], str]:
        size = min(page_size or self.config.max_page_size, self.config.max_page_size)
        start = 0
        if page_token:
            try:
                start = int(base64.urlsafe_b64decode(page_token.encode()).decode().removeprefix("offset:"))
            except ValueError as e:
                raise EmulatorError(Code.INVALID_ARGUMENT, f"invalid page_token {page_token!r}") from e
        page = items[start : start + size]
        nxt = start + size
        token = base64.urlsafe_b64encode(f"offset:{nxt}".encode()).decode() if nxt < len(items) else ""
        return page, token

    def _job_type(self, params: dict[str, str], path: str, streaming_mode: bool, job_type: JobType) -> JobType:
        """The convention in the module docstring."""
        explicit = params.get(PARAM_PREFIX + "type", "").strip().lower()
        if explicit in ("batch", "streaming"):
            return JobType.JOB_TYPE_STREAMING if explicit == "streaming" else JobType.JOB_TYPE_BATCH
        if explicit:
            raise EmulatorError(
                Code.INVALID_ARGUMENT, f"{PARAM_PREFIX}type must be batch or streaming, not {explicit!r}"
            )
        if job_type != JobType.JOB_TYPE_UNKNOWN:
            return job_type
        if "streaming" in params:
            return JobType.JOB_TYPE_STREAMING if _truthy(params["streaming"]) else JobType.JOB_TYPE_BATCH
        if streaming_mode:
            return JobType.JOB_TYPE_STREAMING
        lowered = path.lower()
        if "streaming" in lowered:
            return JobType.JOB_TYPE_STREAMING
        if "batch" in lowered:
            return JobType.JOB_TYPE_BATCH
        return JobType.JOB_TYPE_STREAMING if self.config.default_job_type == "streaming" else JobType.JOB_TYPE_BATCH

    @staticmethod
    def _param_float(params: dict[str, str], name: str, default: float | None) -> float | None:
        raw = params.get(PARAM_PREFIX + name)
        if raw is None or raw == "":
            return default
        try:
            value = float(raw)
        except ValueError as e:
            raise EmulatorError(Code.INVALID_ARGUMENT, f"{PARAM_PREFIX}{name} must be a number, not {raw!r}") from e
        if value < 0 or math.isnan(value):
            raise EmulatorError(Code.INVALID_ARGUMENT, f"{PARAM_PREFIX}{name} must be >= 0")
        return value

    @staticmethod
    def _param_bool(params: dict[str, str], name: str, default: bool) -> bool:
        raw = params.get(PARAM_PREFIX + name)
        return default if raw is None else _truthy(raw)

    @staticmethod
    def _stamp(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d_%H_%M_%S")

    def _job_id(self, now: float) -> str:
        # Shaped like a real id (2024-01-15_08_30_00-1234567890123456789). The multiplier is coprime with
        # 10**19, so distinct sequence numbers give distinct suffixes: unique without randomness.
        return f"{self._stamp(now)}-{(self._seq * 2654435761 + 12345) % 10**19:019d}"

    # ---------------------------------------------------------------------------- inspection
    def active_jobs(self) -> Iterable[EmulatedJob]:
        return (self.jobs[i] for i in self._active.values())
