"""The Flink watcher's survey against a scripted Flink REST API (httpx.MockTransport): what it reports per tick.

Real Flink serves a job's details from a cache that lags its overview by up to 3 s, and the survey has a budget of
engine requests per target; these tests pin how the survey reports a state change under both.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from activities.flink import FlinkEngine, FlinkSurvey
from activities.watch import limiter
from jobctl.states import EnginePhase
from jobctl.targets import FlinkSessionTarget

TARGET = FlinkSessionTarget(name="flink-local", rest_url="http://flink.test:8081", slots=64)


class ScriptedFlink:
    """Overview states and (lagging) detail states per job, and every request the survey made."""

    def __init__(self, jobs: int) -> None:
        self.jids = [uuid.uuid4().hex for _ in range(jobs)]
        self.overview = dict.fromkeys(self.jids, "RUNNING")
        self.details = dict.fromkeys(self.jids, "RUNNING")
        self.requests: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append(path)
        if path == "/jobs/overview":
            rows = [{"jid": j, "state": s, "last-modification": hash(s)} for j, s in self.overview.items()]
            return httpx.Response(200, json={"jobs": rows})
        jid = path.split("/")[2]
        if path.endswith("/metrics"):
            return httpx.Response(200, json=[{"id": "numRestarts", "value": "0"}])
        if path.endswith("/exceptions"):
            return httpx.Response(200, json={"exceptionHistory": {"entries": []}})
        return httpx.Response(200, json={"jid": jid, "state": self.details[jid]})


async def everyone(job_id: str) -> bool:
    return True


def states(sightings: list[Any]) -> dict[str, str]:
    return {s.observation.engine_job_id: s.observation.engine_status for s in sightings}


async def test_a_state_change_is_reported_on_the_next_tick_even_with_lagging_details_and_no_budget_left() -> None:
    flink = ScriptedFlink(jobs=12)
    async with httpx.AsyncClient(transport=httpx.MockTransport(flink.handle)) as http:
        survey = FlinkSurvey(FlinkEngine(http, poll_interval=0.01), TARGET, limiter(1000), max_lookups=2)
        for _ in range(40):  # every job seen and settled: five looks each, two looks per tick
            await survey.tick(everyone)
        assert states(await survey.tick(everyone)) == dict.fromkeys(flink.jids, "RUNNING")

        # All twelve cancelled at once; Flink's cached details still say RUNNING.
        flink.overview = dict.fromkeys(flink.jids, "CANCELED")
        flink.requests.clear()
        reported = await survey.tick(everyone)
        assert states(reported) == dict.fromkeys(flink.jids, "CANCELED")
        assert {s.observation.phase for s in reported} == {EnginePhase.STOPPED}
        assert flink.requests.count("/jobs/overview") == 1
        # Looks whose details lag do not take the state back.
        assert states(await survey.tick(everyone)) == dict.fromkeys(flink.jids, "CANCELED")


async def test_restarts_follow_from_the_look_once_the_details_catch_up() -> None:
    flink = ScriptedFlink(jobs=1)
    (jid,) = flink.jids
    async with httpx.AsyncClient(transport=httpx.MockTransport(flink.handle)) as http:
        survey = FlinkSurvey(FlinkEngine(http, poll_interval=0.01), TARGET, limiter(1000))
        first = await survey.tick(everyone)
        assert first[0].observation.restarts == 0
        flink.overview[jid] = flink.details[jid] = "RESTARTING"
        (seen,) = await survey.tick(everyone)
        assert seen.observation.engine_status == "RESTARTING"
        assert seen.observation.started_fields["observedFlinkJobStatus"] == "RESTARTING"


async def settled(flink: ScriptedFlink, survey: FlinkSurvey) -> None:
    for _ in range(40):  # every job seen and settled, on a budget that never waits
        await survey.tick(everyone)
    assert states(await survey.tick(everyone)) == dict.fromkeys(flink.jids, "RUNNING")


async def test_a_tick_looks_only_as_far_as_the_budget_allows_now_so_new_states_go_out_at_once() -> None:
    flink = ScriptedFlink(jobs=16)
    async with httpx.AsyncClient(transport=httpx.MockTransport(flink.handle)) as http:
        survey = FlinkSurvey(FlinkEngine(http, poll_interval=0.01), TARGET, limiter(1000))
        await settled(flink, survey)
        survey._budget = limiter(4)  # the default budget, full: 4 requests now, 4 more each second

        flink.overview = dict.fromkeys(flink.jids, "CANCELED")
        flink.requests.clear()
        reported = await survey.tick(everyone)
        # Every new state, in a tick that did not wait for budget: the overview and one look (3 requests).
        # Before, it looked at 8 jobs, waiting about 5 s for budget, before the watcher could push anything.
        assert states(reported) == dict.fromkeys(flink.jids, "CANCELED")
        assert flink.requests.count("/jobs/overview") == 1
        assert len(flink.requests) <= 4


async def test_a_budget_below_one_look_still_looks() -> None:
    flink = ScriptedFlink(jobs=1)
    async with httpx.AsyncClient(transport=httpx.MockTransport(flink.handle)) as http:
        # 1 request per second (the lowest JOBCTL_ENGINE_REQUESTS_PER_SECOND), and a look takes 3 at once:
        # this used to fail every tick with aiolimiter's ValueError.
        survey = FlinkSurvey(FlinkEngine(http, poll_interval=0.01), TARGET, limiter(1))
        reported = await survey.tick(everyone)
        assert [(s.observation.engine_status, s.observation.restarts) for s in reported] == [("RUNNING", 0)]
