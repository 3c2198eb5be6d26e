"""The Job state machine, walked exhaustively."""

from __future__ import annotations

import itertools

import pytest

from jobctl.states import (
    ALLOWED,
    DATAFLOW_PHASES,
    FLINK_PHASES,
    TERMINAL,
    EnginePhase,
    IllegalTransition,
    JobState,
    can_transition,
    dataflow_phase,
    flink_phase,
    next_state,
    path_to,
    transition,
)

# The Ververica Platform Job lifecycle, written out independently of the module's table.
EXPECTED = {
    ("STARTING", "STARTED"),
    ("STARTING", "TERMINATING"),
    ("STARTING", "FAILED"),
    ("STARTING", "FINISHED"),
    ("STARTED", "TERMINATING"),
    ("STARTED", "FAILED"),
    ("STARTED", "FINISHED"),
    ("TERMINATING", "TERMINATED"),
    ("TERMINATING", "FAILED"),
}


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(JobState, JobState)))
def test_every_pair(src: JobState, dst: JobState) -> None:
    allowed = (src.value, dst.value) in EXPECTED
    assert can_transition(src, dst) is allowed
    if allowed:
        assert transition(src, dst) is dst
    else:
        with pytest.raises(IllegalTransition) as err:
            transition(src, dst)
        assert f"{src} -> {dst}" in str(err.value)


def test_terminal_states_have_no_way_out() -> None:
    assert TERMINAL == {JobState.TERMINATED, JobState.FAILED, JobState.FINISHED}
    for state in TERMINAL:
        assert ALLOWED[state] == frozenset()


@pytest.mark.parametrize(("state", "phase"), list(itertools.product(JobState, EnginePhase)))
def test_next_state_only_ever_proposes_allowed_transitions(state: JobState, phase: EnginePhase) -> None:
    nxt = next_state(state, phase)
    if nxt is not None:
        assert can_transition(state, nxt)


def test_unknown_never_changes_the_state() -> None:
    for state in JobState:
        assert next_state(state, EnginePhase.UNKNOWN) is None


def test_what_engine_phases_mean_for_a_job() -> None:
    assert next_state(JobState.STARTING, EnginePhase.RUNNING) is JobState.STARTED
    assert next_state(JobState.STARTED, EnginePhase.FINISHED) is JobState.FINISHED
    assert next_state(JobState.STARTED, EnginePhase.FAILED) is JobState.FAILED
    # A drained Flink job reports FINISHED: the stop we asked for.
    assert next_state(JobState.TERMINATING, EnginePhase.FINISHED) is JobState.TERMINATED
    assert next_state(JobState.TERMINATING, EnginePhase.STOPPED) is JobState.TERMINATED
    # Stopped from outside jobctl (Dataflow console, Flink UI): TERMINATING, then TERMINATED.
    assert path_to(JobState.STARTED, EnginePhase.STOPPED) == [JobState.TERMINATING, JobState.TERMINATED]
    assert path_to(JobState.STARTED, EnginePhase.STOPPING) == [JobState.TERMINATING]
    assert path_to(JobState.STARTING, EnginePhase.RUNNING) == [JobState.STARTED]
    assert path_to(JobState.STARTED, EnginePhase.PENDING) == []


def test_flink_statuses() -> None:
    assert set(FLINK_PHASES) == {
        "INITIALIZING", "CREATED", "RUNNING", "FAILING", "FAILED", "CANCELLING", "CANCELED",
        "FINISHED", "RESTARTING", "SUSPENDED", "RECONCILING",
    }  # fmt: skip
    assert flink_phase("RESTARTING") is EnginePhase.RUNNING
    assert flink_phase("SUSPENDED") is EnginePhase.UNKNOWN
    assert flink_phase("SOMETHING_NEW") is EnginePhase.UNKNOWN


def test_every_dataflow_state_is_mapped() -> None:
    from google.cloud.dataflow_v1beta3 import JobState as DataflowJobState

    for state in DataflowJobState:
        assert state.name.removeprefix("JOB_STATE_") in DATAFLOW_PHASES, state.name
    assert dataflow_phase("JOB_STATE_DRAINED") is EnginePhase.STOPPED
    assert dataflow_phase("JOB_STATE_FROM_THE_FUTURE") is EnginePhase.UNKNOWN
