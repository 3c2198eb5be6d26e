"""The pure emulator model: the transition table, refusals, timing and faults, on a manual clock."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from jobctl.dataflow_emulator.model import (
    ALLOWED,
    TERMINAL,
    DataflowModel,
    EmulatorConfig,
    EmulatorError,
    Faults,
    Importance,
    JobState,
    JobType,
    ManualClock,
)

S = JobState
P, L = "demo-project", "europe-west1"

# The reference table (/work/shared/reference/dataflow.md), written out independently of the model.
REFERENCE: dict[str, set[str]] = {
    "QUEUED": {"PENDING", "CANCELLED"},
    "PENDING": {"RUNNING", "FAILED"},
    "STOPPED": {"RUNNING"},
    "RUNNING": {"DONE", "FAILED", "UPDATED", "DRAINING", "CANCELLING", "RESOURCE_CLEANING_UP"},
    "RESOURCE_CLEANING_UP": {"DONE", "FAILED"},  # opt-in cleanup phase of a successful batch job
    "DRAINING": {"DRAINED", "CANCELLED", "FAILED"},
    "CANCELLING": {"CANCELLED", "FAILED"},
    "DONE": set(),
    "FAILED": set(),
    "CANCELLED": set(),
    "UPDATED": set(),
    "DRAINED": set(),
}


def short(s: JobState) -> str:
    return s.name.removeprefix("JOB_STATE_")


def make(**cfg) -> tuple[DataflowModel, ManualClock]:
    clock = ManualClock()
    base = dict(queued_seconds=1, pending_seconds=2, batch_running_seconds=10, draining_seconds=3, cancelling_seconds=1)
    return DataflowModel(EmulatorConfig(**{**base, **cfg}), clock=clock), clock


def streaming(**extra: str) -> dict[str, str]:
    return {"jobctl-emulator-type": "streaming", **extra}


def test_table_matches_reference_and_client_enums():
    assert {short(k): {short(v) for v in vs} for k, vs in ALLOWED.items()} == REFERENCE
    assert {short(s) for s in TERMINAL} == {"DONE", "FAILED", "CANCELLED", "UPDATED", "DRAINED"}
    from google.cloud import dataflow_v1beta3 as df

    for s in JobState:
        assert df.JobState[s.name].value == s.value
    for t in JobType:
        assert df.JobType[t.name].value == t.value
    for i in Importance:
        assert df.JobMessageImportance[i.name].value == i.value


def test_flex_batch_lifecycle_with_exact_state_times():
    m, clock = make(resource_cleaning_up=True, resource_cleaning_up_seconds=1)
    job = m.launch(P, L, "wordcount", template_path="gs://b/templates/batch/wc.json", labels={"jobctl-job": "x"})
    t0 = job.create_time
    assert (job.state, job.type, job.labels) == (S.JOB_STATE_QUEUED, JobType.JOB_TYPE_UNKNOWN, {"jobctl-job": "x"})
    clock.advance(100)  # observed long after: every step is replayed at the time it was due
    m.tick()
    steps = [(short(t.src), short(t.dst), t.at - t0) for t in m.transitions if t.job_id == job.id]
    assert steps == [
        ("UNKNOWN", "QUEUED", 0),
        ("QUEUED", "PENDING", 1),
        ("PENDING", "RUNNING", 3),
        ("RUNNING", "RESOURCE_CLEANING_UP", 13),
        ("RESOURCE_CLEANING_UP", "DONE", 14),
    ]
    assert job.type == JobType.JOB_TYPE_BATCH and job.start_time == t0


def test_type_known_only_after_queued_for_flex_but_at_launch_for_classic():
    m, clock = make()
    flex = m.launch(P, L, "a", parameters=streaming())
    classic = m.launch(P, L, "b", kind="classic", template_path="gs://b/streaming-template")
    assert flex.type == JobType.JOB_TYPE_UNKNOWN and classic.type == JobType.JOB_TYPE_STREAMING
    clock.advance(1)
    m.tick()
    assert flex.type == JobType.JOB_TYPE_STREAMING and flex.state == S.JOB_STATE_PENDING


@pytest.mark.parametrize(
    ("params", "path", "expected"),
    [
        ({"jobctl-emulator-type": "batch"}, "gs://b/streaming.json", JobType.JOB_TYPE_BATCH),
        ({"streaming": "true"}, "", JobType.JOB_TYPE_STREAMING),
        ({"streaming": "false"}, "gs://b/streaming.json", JobType.JOB_TYPE_BATCH),
        ({}, "gs://b/templates/streaming/x.json", JobType.JOB_TYPE_STREAMING),
        ({}, "gs://b/templates/x.json", JobType.JOB_TYPE_BATCH),  # the default, like Beam
    ],
)
def test_job_type_convention(params, path, expected):
    m, _ = make()
    assert m.launch(P, L, "j", kind="classic", parameters=params, template_path=path).type == expected


def test_one_active_job_per_name_per_project_and_region():
    m, clock = make()
    first = m.launch(P, L, "etl")
    with pytest.raises(EmulatorError) as e:
        m.launch(P, L, "etl")
    assert e.value.code == "ALREADY_EXISTS"
    m.launch(P, "us-east1", "etl")  # another region: fine
    m.launch("other-project", L, "etl")  # another project: fine
    m.update_job(P, L, first.id, S.JOB_STATE_CANCELLED)
    assert first.state == S.JOB_STATE_CANCELLED
    assert m.launch(P, L, "etl").id != first.id  # the name is free again


def test_project_and_region_are_honoured():
    m, _ = make()
    job = m.launch(P, L, "etl")
    for project, loc in (("other", L), (P, "us-central1"), (P, "")):  # "" = the us-central1 default
        with pytest.raises(EmulatorError) as e:
            m.get_job(project, loc, job.id)
        assert e.value.code == "NOT_FOUND"
    m2, _ = make(default_location=None)
    with pytest.raises(EmulatorError) as e:
        m2.get_job(P, "", "x")
    assert e.value.code == "INVALID_ARGUMENT"


def test_cancel_queued_is_immediate_and_cancel_running_goes_through_cancelling():
    m, clock = make()
    q = m.launch(P, L, "q")
    m.update_job(P, L, q.id, S.JOB_STATE_CANCELLED)
    assert q.state == S.JOB_STATE_CANCELLED and q.requested_state == S.JOB_STATE_CANCELLED
    r = m.launch(P, L, "r")
    clock.advance(3)
    m.tick()
    assert r.state == S.JOB_STATE_RUNNING
    m.update_job(P, L, r.id, S.JOB_STATE_CANCELLED)
    assert r.state == S.JOB_STATE_CANCELLING
    clock.advance(1)
    assert m.get_job(P, L, r.id).state == S.JOB_STATE_CANCELLED


def test_cancel_while_pending_applies_when_running():
    m, clock = make()
    job = m.launch(P, L, "p")
    clock.advance(1.5)
    m.update_job(P, L, job.id, S.JOB_STATE_CANCELLED)
    assert job.state == S.JOB_STATE_PENDING
    clock.advance(10)
    m.tick()
    assert [short(t.dst) for t in m.transitions if t.job_id == job.id][-3:] == ["RUNNING", "CANCELLING", "CANCELLED"]


def test_drain_streaming_and_refusals():
    m, clock = make()
    s = m.launch(P, L, "s", parameters=streaming())
    with pytest.raises(EmulatorError) as e:  # still QUEUED: type unknown, nothing to drain
        m.update_job(P, L, s.id, S.JOB_STATE_DRAINED)
    assert e.value.code == "FAILED_PRECONDITION"
    clock.advance(3)
    m.update_job(P, L, s.id, S.JOB_STATE_DRAINED)
    assert s.state == S.JOB_STATE_DRAINING
    with pytest.raises(EmulatorError) as e:  # the name is still taken while draining
        m.launch(P, L, "s", parameters=streaming())
    assert e.value.code == "ALREADY_EXISTS"
    clock.advance(3)
    assert m.get_job(P, L, s.id).state == S.JOB_STATE_DRAINED
    for requested in (S.JOB_STATE_CANCELLED, S.JOB_STATE_DRAINED, S.JOB_STATE_DONE):
        with pytest.raises(EmulatorError) as e:  # terminal: nothing more
            m.update_job(P, L, s.id, requested)
        assert e.value.code == "FAILED_PRECONDITION"

    b = m.launch(P, L, "b", parameters={"jobctl-emulator-type": "batch"})
    clock.advance(3)
    with pytest.raises(EmulatorError) as e:
        m.update_job(P, L, b.id, S.JOB_STATE_DRAINED)
    assert e.value.code == "INVALID_ARGUMENT"
    with pytest.raises(EmulatorError) as e:
        m.update_job(P, L, b.id, S.JOB_STATE_RUNNING)
    assert e.value.code == "INVALID_ARGUMENT"


def test_cancel_interrupts_a_drain_that_never_completes():
    m, clock = make()
    s = m.launch(P, L, "s", parameters=streaming(**{"jobctl-emulator-drain-never-completes": "true"}))
    clock.advance(3)
    m.update_job(P, L, s.id, S.JOB_STATE_DRAINED)
    clock.advance(3600)
    assert m.get_job(P, L, s.id).state == S.JOB_STATE_DRAINING
    m.update_job(P, L, s.id, S.JOB_STATE_CANCELLED)
    assert s.state == S.JOB_STATE_CANCELLED


def test_force_cancel_needs_an_old_cancel():
    m, clock = make(force_cancel_after_seconds=60)
    s = m.launch(P, L, "s", parameters=streaming(**{"jobctl-emulator-cancel-never-completes": "true"}))
    clock.advance(3)
    m.update_job(P, L, s.id, S.JOB_STATE_CANCELLED)
    force = {"force_cancel_job": "true"}
    with pytest.raises(EmulatorError) as e:
        m.update_job(P, L, s.id, S.JOB_STATE_CANCELLED, labels=force)
    assert e.value.code == "FAILED_PRECONDITION"
    clock.advance(60)
    assert m.update_job(P, L, s.id, S.JOB_STATE_CANCELLED, labels=force).state == S.JOB_STATE_CANCELLED


def test_update_replaces_a_running_streaming_job():
    m, clock = make()
    old = m.launch(P, L, "s", parameters=streaming())
    with pytest.raises(EmulatorError) as e:  # not running yet
        m.launch(P, L, "s", parameters=streaming(), update=True)
    assert e.value.code == "FAILED_PRECONDITION"
    clock.advance(3)
    new = m.launch(P, L, "s", parameters=streaming(), update=True, transform_name_mapping={"a": "b"})
    assert (old.state, old.replaced_by_job_id) == (S.JOB_STATE_UPDATED, new.id)
    assert (new.state, new.replace_job_id, new.transform_name_mapping) == (S.JOB_STATE_QUEUED, old.id, {"a": "b"})
    with pytest.raises(EmulatorError) as e:  # no active job of that name
        m.launch(P, L, "nothing", parameters=streaming(), update=True)
    assert e.value.code == "FAILED_PRECONDITION"
    b = m.launch(P, L, "b", parameters={"jobctl-emulator-type": "batch"})
    clock.advance(3)
    with pytest.raises(EmulatorError) as e:
        m.launch(P, L, "b", update=True)
    assert e.value.code == "INVALID_ARGUMENT" and b.state == S.JOB_STATE_RUNNING


def test_update_of_a_draining_job_is_refused():
    m, clock = make()
    s = m.launch(P, L, "s", parameters=streaming())
    clock.advance(3)
    m.update_job(P, L, s.id, S.JOB_STATE_DRAINED)
    with pytest.raises(EmulatorError) as e:
        m.launch(P, L, "s", parameters=streaming(), update=True)
    assert e.value.code == "FAILED_PRECONDITION" and "DRAINING" in e.value.message


def test_fail_after_seconds_and_fail_job_leave_error_messages():
    m, clock = make()
    j = m.launch(
        P,
        L,
        "f",
        parameters={"jobctl-emulator-fail-after-seconds": "0.5", "jobctl-emulator-fail-message": "boom: bad input"},
    )
    clock.advance(1)  # due at 0.5 while QUEUED, which cannot fail: it fails on reaching PENDING at 1
    m.tick()
    assert j.state == S.JOB_STATE_FAILED
    assert [short(t.dst) for t in m.transitions if t.job_id == j.id] == ["QUEUED", "PENDING", "FAILED"]
    errors, _ = m.list_messages(P, L, j.id, minimum_importance=Importance.JOB_MESSAGE_ERROR)
    assert [e.text for e in errors] == ["boom: bad input"]

    s = m.launch(P, L, "s", parameters=streaming())
    clock.advance(3)
    m.fail_job(P, L, s.id, "worker pool lost")
    assert s.state == S.JOB_STATE_FAILED
    assert m.list_messages(P, L, s.id, minimum_importance=Importance.JOB_MESSAGE_ERROR)[0][0].text == "worker pool lost"


def test_global_faults_and_unavailable_switch():
    m, clock = make(faults=Faults(unavailable_seconds=5, fail_after_seconds=4))
    assert m.is_unavailable()
    clock.advance(5)
    assert not m.is_unavailable()
    m.set_unavailable()  # until cleared
    clock.advance(10**6)
    assert m.is_unavailable()
    m.clear_unavailable()
    assert not m.is_unavailable()
    j = m.launch(P, L, "j", parameters=streaming())
    clock.advance(4)
    assert m.get_job(P, L, j.id).state == S.JOB_STATE_FAILED


def test_launch_error_parameter_and_invalid_names():
    m, _ = make()
    with pytest.raises(EmulatorError) as e:
        m.launch(P, L, "j", parameters={"jobctl-emulator-launch-error": "NOT_FOUND: no such template"})
    assert (e.value.code, e.value.message) == ("NOT_FOUND", "no such template")
    for bad in ("Upper", "under_score", "-x", "x-", ""):
        with pytest.raises(EmulatorError) as e:
            m.launch(P, L, bad)
        assert e.value.code == "INVALID_ARGUMENT"


def test_list_filters_name_and_paging():
    m, clock = make()
    ids = [m.launch(P, L, f"job-{i}").id for i in range(5)]
    m.update_job(P, L, ids[0], S.JOB_STATE_CANCELLED)
    m.launch(P, "us-east1", "elsewhere")
    assert len(m.list_jobs(P, L, filter="ACTIVE")[0]) == 4
    assert [j.id for j in m.list_jobs(P, L, filter="TERMINATED")[0]] == [ids[0]]
    assert [j.id for j in m.list_jobs(P, L, filter="ALL")[0]] == ids[1:] + ids[:1]
    assert [j.id for j in m.list_jobs(P, L, name="job-3")[0]] == [ids[3]]
    assert len(m.list_jobs(P, None)[0]) == 6  # aggregated: every region
    seen, token = [], ""
    while True:
        page, token = m.list_jobs(P, L, filter="ALL", page_size=2, page_token=token)
        seen += [j.id for j in page]
        if not token:
            break
    assert seen == ids[1:] + ids[:1]
    with pytest.raises(EmulatorError):
        m.list_jobs(P, L, page_token="not-a-token")


# ------------------------------------------------------------------------------- property test
NAMES = ("alpha", "beta")
LOCS = ("europe-west1", "us-east1")


class EmulatorMachine(RuleBasedStateMachine):
    """Random requests and service steps. Refusals (EmulatorError) are fine; anything else is a bug."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.model = DataflowModel(
            EmulatorConfig(
                queued_seconds=1,
                pending_seconds=1,
                batch_running_seconds=3,
                draining_seconds=2,
                cancelling_seconds=1,
                resource_cleaning_up=True,
                resource_cleaning_up_seconds=0.5,
                force_cancel_after_seconds=5,
            ),
            clock=self.clock,
        )
        self.terminal_seen: dict[str, JobState] = {}

    def _job(self, idx: int):
        jobs = list(self.model.jobs.values())
        return jobs[idx % len(jobs)]

    @rule(
        name=st.sampled_from(NAMES),
        loc=st.sampled_from(LOCS),
        kind=st.sampled_from(["flex", "classic", "create"]),
        jtype=st.sampled_from(["batch", "streaming", ""]),
        update=st.booleans(),
        fail_after=st.none() | st.floats(0, 6),
        drain_never=st.booleans(),
        cancel_never=st.booleans(),
    )
    def launch(self, name, loc, kind, jtype, update, fail_after, drain_never, cancel_never):
        params = {"jobctl-emulator-type": jtype} if jtype else {}
        if fail_after is not None:
            params["jobctl-emulator-fail-after-seconds"] = str(fail_after)
        params["jobctl-emulator-drain-never-completes"] = str(drain_never).lower()
        params["jobctl-emulator-cancel-never-completes"] = str(cancel_never).lower()
        try:
            self.model.launch(P, loc, name, kind=kind, parameters=params, update=update)
        except EmulatorError:
            pass

    @precondition(lambda self: self.model.jobs)
    @rule(
        idx=st.integers(0, 50),
        requested=st.sampled_from([S.JOB_STATE_CANCELLED, S.JOB_STATE_DRAINED, S.JOB_STATE_DONE, S.JOB_STATE_RUNNING]),
        force=st.booleans(),
    )
    def request_state(self, idx, requested, force):
        job = self._job(idx)
        try:
            self.model.update_job(
                job.project_id, job.location, job.id, requested, labels={"force_cancel_job": "true"} if force else None
            )
        except EmulatorError:
            pass

    @precondition(lambda self: self.model.jobs)
    @rule(idx=st.integers(0, 50))
    def service_fails_job(self, idx):
        job = self._job(idx)
        try:
            self.model.fail_job(job.project_id, job.location, job.id, "injected")
        except EmulatorError:
            pass

    @rule(seconds=st.floats(0, 4))
    def advance(self, seconds):
        self.clock.advance(seconds)
        self.model.tick()

    @rule(seconds=st.none() | st.floats(0, 3), clear=st.booleans())
    def unavailable(self, seconds, clear):
        self.model.clear_unavailable() if clear else self.model.set_unavailable(seconds)

    @invariant()
    def transitions_are_in_the_table(self):
        for t in self.model.transitions:
            if t.src == S.JOB_STATE_UNKNOWN:
                assert short(t.dst) in ("QUEUED", "STOPPED")
            else:
                assert short(t.dst) in REFERENCE[short(t.src)], t

    @invariant()
    def one_active_job_per_name(self):
        active = [j.key for j in self.model.jobs.values() if j.state not in TERMINAL]
        assert len(active) == len(set(active))
        assert sorted(active) == sorted(j.key for j in self.model.active_jobs())

    @invariant()
    def terminal_stays_terminal(self):
        for job in self.model.jobs.values():
            if job.id in self.terminal_seen:
                assert job.state == self.terminal_seen[job.id]
            elif job.state in TERMINAL:
                self.terminal_seen[job.id] = job.state
        last = {}
        for t in self.model.transitions:
            assert last.get(t.job_id) not in TERMINAL
            last[t.job_id] = t.dst
            assert t.at <= self.clock.now

    @invariant()
    def replacements_are_consistent(self):
        for job in self.model.jobs.values():
            if job.replaced_by_job_id:
                assert job.state == S.JOB_STATE_UPDATED
                new = self.model.jobs[job.replaced_by_job_id]
                assert new.replace_job_id == job.id and new.name == job.name
                assert new.intended_type == job.type == JobType.JOB_TYPE_STREAMING


EmulatorMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestEmulatorModelProperties = EmulatorMachine.TestCase
