"""Flink engine: acquire, submit, observe and stop Flink jobs on a session cluster through its REST API.

Every call has a timeout; retries are Temporal's (an exception here fails the attempt, Temporal retries
it). Errors that retrying cannot fix are non-retryable ApplicationErrors with a type the workflow shows.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
from aiolimiter import AsyncLimiter
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.watch import LARGEST_ACQUIRE, EngineUnreachable, Sighting, Wanted
from jobctl.engine import Grant, Observation, ObserveInput, StopInput, StopMode, StopResult, Submission, SubmitInput
from jobctl.models import JobMetadata, JobSpec
from jobctl.states import ENDED_PHASES, EnginePhase, flink_phase
from jobctl.targets import FlinkSessionTarget

GLOBALLY_TERMINAL = {"FINISHED", "FAILED", "CANCELED"}
UNKNOWN = "UNKNOWN"
CLOCK_SLACK_SECONDS = 60  # between this worker's clock and the JobManager's


class FlinkUnreachable(Exception):
    """The Flink REST API could not be read (connection refused, timeout, 5xx)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _flink_job_id(metadata: JobMetadata, engine_job_id: str | None = None) -> str:
    return engine_job_id or metadata.engine_job_id


class FlinkEngine:
    def __init__(self, http: httpx.AsyncClient, poll_interval: float = 2.0) -> None:
        self._http = http
        self._poll_interval = poll_interval

    # --- REST helpers ------------------------------------------------------------------------------

    async def _call(self, target: FlinkSessionTarget, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = f"{target.base_url}{path}"
        try:
            response = await self._http.request(method, url, **kwargs)
        except httpx.HTTPError as err:
            raise FlinkUnreachable(
                f"Flink REST API of Deployment Target {target.name} ({target.base_url}) did not answer "
                f"{method} {path}: {type(err).__name__}: {err}"
            ) from err
        if response.status_code >= 500 and response.status_code not in (500,):
            raise FlinkUnreachable(
                f"Flink REST API of Deployment Target {target.name} answered {method} {path} "
                f"with {response.status_code}"
            )
        return response

    async def _job(self, target: FlinkSessionTarget, jid: str) -> dict[str, Any] | None:
        """GET /jobs/{jid}: the job's details, None if Flink does not know it."""
        response = await self._call(target, "GET", f"/jobs/{jid}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise FlinkUnreachable(
                f"Flink REST API of Deployment Target {target.name} answered GET /jobs/{jid} with "
                f"{response.status_code}: {_errors(response)}"
            )
        return response.json()

    async def _restarts(self, target: FlinkSessionTarget, jid: str, status: str) -> int | None:
        """Flink's restart count. The numRestarts metric is collected lazily (absent on a first look, or
        once the job ended unobserved); the exception history then tells: one entry per failure, and a
        FAILED job's last failure was not followed by a restart."""
        response = await self._call(target, "GET", f"/jobs/{jid}/metrics", params={"get": "numRestarts"})
        if response.status_code == 200:
            for metric in response.json():
                if metric.get("id") == "numRestarts":
                    try:
                        return int(float(metric["value"]))
                    except (KeyError, ValueError):
                        break
        response = await self._call(target, "GET", f"/jobs/{jid}/exceptions", params={"maxExceptions": 1000})
        if response.status_code != 200:
            return None
        history = response.json().get("exceptionHistory") or {}
        if history.get("truncated"):
            return None
        failures = len(history.get("entries") or [])
        return max(0, failures - 1) if status == "FAILED" else failures

    async def _root_cause(self, target: FlinkSessionTarget, jid: str) -> str | None:
        response = await self._call(target, "GET", f"/jobs/{jid}/exceptions", params={"maxExceptions": 1})
        if response.status_code != 200:
            return None
        body = response.json()
        trace = body.get("root-exception")
        entries = (body.get("exceptionHistory") or {}).get("entries") or []
        if not trace and entries:
            trace = entries[0].get("stacktrace") or entries[0].get("exceptionName")
        return summarize_trace(trace) if trace else None

    # --- Deployment Target capacity ---------------------------------------------------------------

    def requirements(self, job_id: str, spec: JobSpec, target: FlinkSessionTarget) -> dict[str, int]:
        return {"slots": spec.parallelism}

    def capacity(self, target: FlinkSessionTarget) -> dict[str, int]:
        return {"slots": target.slots}

    async def engine_free(self, target: FlinkSessionTarget) -> tuple[dict[str, int], str | None]:
        """The slots the cluster itself reports free: a cluster shared with jobs outside jobctl has fewer
        than the ledger thinks. Unreachable: nothing is free (never grant what cannot be verified)."""
        try:
            response = await self._call(target, "GET", "/overview", timeout=5)
            overview = response.json()
            free = int(overview.get("slots-available", 0))
            return {"slots": free}, f"the cluster reports {free} of {overview.get('slots-total')} slots free"
        except (FlinkUnreachable, ValueError) as err:
            return {"slots": 0}, f"the cluster's free slots cannot be read: {err}"

    # --- acquire (kept for Jobs that started before Deployment Target leases) --------------------

    async def acquire(self, job_id: str, spec: JobSpec, target: FlinkSessionTarget) -> Grant:
        if spec.parallelism > target.slots:
            raise ApplicationError(
                f"Job {job_id} needs {spec.parallelism} slots but Deployment Target {target.name} has only "
                f"{target.slots}; lower spec.parallelism or pick a bigger target",
                type="InvalidSpec",
                non_retryable=True,
            )
        try:
            response = await self._call(target, "GET", "/overview")
        except FlinkUnreachable as err:
            raise ApplicationError(str(err), type="EngineUnreachable") from err
        overview = response.json()
        free = int(overview.get("slots-available", 0))
        if free < spec.parallelism:
            # Retryable: Temporal tries again (with backoff) until enough slots are free.
            raise ApplicationError(
                f"waiting for {spec.parallelism} slot(s) on Deployment Target {target.name}: {free} free of "
                f"{overview.get('slots-total')}",
                type="NoCapacity",
            )
        return Grant(
            target=target.name,
            slots=spec.parallelism,
            message=f"{spec.parallelism} slot(s) free on {target.name} ({free} of {overview.get('slots-total')})",
        )

    # --- submit ----------------------------------------------------------------------------------

    async def submit(self, request: SubmitInput, target: FlinkSessionTarget) -> Submission:
        metadata, spec = request.metadata, request.spec
        jid = _flink_job_id(metadata)
        ui = f"{target.ui_url}/#/job/running/{jid}/overview"
        # The Flink job id is fixed up front, so a retried submit finds the job it already created.
        if await self._job(target, jid) is not None:
            return Submission(engine_job_id=jid, engine_ui_url=ui, adopted=True)

        jar_path = _local_jar(spec, metadata)
        jar_id = await self._upload(target, jar_path, metadata)
        try:
            artifact = spec.artifact
            body: dict[str, Any] = {
                "entryClass": getattr(artifact, "entry_class", None),
                "programArgsList": list(getattr(artifact, "main_args", [])),
                "parallelism": spec.parallelism,
                "jobId": jid,
                "flinkConfiguration": dict(spec.flink_configuration),
            }
            if spec.restore_from_savepoint:
                body["savepointPath"] = spec.restore_from_savepoint
                body["allowNonRestoredState"] = False
            if not activity.info().is_local:  # a quick step (local activity) has no heartbeat
                activity.heartbeat("running jar")
            response = await self._call(target, "POST", f"/jars/{jar_id}/run", json=body, timeout=120)
        finally:
            await self._delete_jar(target, jar_id)
        if response.status_code == 200:
            return Submission(engine_job_id=response.json().get("jobid", jid), engine_ui_url=ui)
        # The run may have reached Flink before it failed (a duplicate id, or a timeout on our side).
        if await self._job(target, jid) is not None:
            return Submission(engine_job_id=jid, engine_ui_url=ui, adopted=True)
        raise ApplicationError(
            f"Flink on Deployment Target {target.name} refused to run Job {metadata.id}: {_errors(response)}; "
            "fix the artifact (jar, entryClass, mainArgs) or the savepoint and start the Job again",
            type="SubmitRejected",
            non_retryable=True,
        )

    async def _upload(self, target: FlinkSessionTarget, jar_path: Path, metadata: JobMetadata) -> str:
        with jar_path.open("rb") as jar:
            files = {"jarfile": (jar_path.name, jar, "application/x-java-archive")}
            response = await self._call(target, "POST", "/jars/upload", files=files, timeout=120)
        if response.status_code != 200:
            raise ApplicationError(
                f"Flink on Deployment Target {target.name} refused the jar {jar_path} of Job {metadata.id}: "
                f"{_errors(response)}",
                type="SubmitRejected",
                non_retryable=response.status_code < 500,
            )
        return response.json()["filename"].rsplit("/", 1)[-1]

    async def _delete_jar(self, target: FlinkSessionTarget, jar_id: str) -> None:
        # The uploaded copy is not needed once the job was submitted; leaving it would fill the disk.
        try:
            await self._call(target, "DELETE", f"/jars/{jar_id}")
        except FlinkUnreachable:
            activity.logger.warning("could not delete uploaded jar %s from %s", jar_id, target.name)

    # --- observe ---------------------------------------------------------------------------------

    async def look(self, target: FlinkSessionTarget, jid: str, last: Observation | None) -> Observation:
        """One observation of the Flink job. An unreachable API gives UNKNOWN, never FAILED."""
        last_restarts = last.restarts if last else None
        try:
            details = await self._job(target, jid)
            if details is None:
                return _observation(
                    jid,
                    UNKNOWN,
                    last_restarts,
                    unreachable=f"Flink on Deployment Target {target.name} does not know job {jid} "
                    "(was the cluster restarted without high availability?)",
                )
            status = str(details.get("state", UNKNOWN))
            restarts = await self._restarts(target, jid, status)
            failure = await self._root_cause(target, jid) if status == "FAILED" else None
        except FlinkUnreachable as err:
            return _observation(jid, UNKNOWN, last_restarts, unreachable=str(err))
        return _observation(jid, status, restarts if restarts is not None else last_restarts, failure=failure)

    async def observe(self, request: ObserveInput, target: FlinkSessionTarget) -> Observation:
        deadline = time.monotonic() + request.max_wait_seconds
        while True:
            obs = await self.look(target, request.engine_job_id, request.last)
            if obs.differs_from(request.last) or time.monotonic() >= deadline:
                return obs
            activity.heartbeat(obs.engine_status)
            await asyncio.sleep(self._poll_interval)

    # --- stop ------------------------------------------------------------------------------------

    async def stop(self, request: StopInput, target: FlinkSessionTarget) -> StopResult:
        jid = _flink_job_id(request.metadata, request.engine_job_id)
        if request.mode is StopMode.CANCEL:
            return await self._cancel(target, jid, "cancelled", wait=request.wait_for_end)
        return await self._stop_with_savepoint(request, target, jid)

    async def _cancel(self, target: FlinkSessionTarget, jid: str, why: str, *, wait: bool = True) -> StopResult:
        response = await self._call(target, "PATCH", f"/jobs/{jid}", params={"mode": "cancel"})
        if response.status_code == 404:
            # Never submitted (a cancel during STARTING) or already gone: nothing is left to cancel.
            return _stop_result(
                engine_status="NOT_FOUND",
                message=f"Flink has no job {jid} on {target.name}: nothing left to cancel",
                started_fields={"observedFlinkJobStatus": "NOT_FOUND"},
            )
        if response.status_code not in (200, 202, 409):
            raise FlinkUnreachable(f"cancel of Flink job {jid} answered {response.status_code}: {_errors(response)}")
        if not wait:
            # What Flink reports right after the request (CANCELLING, usually); gone reads as stopped.
            status = _state_of(await self._job(target, jid))
            return StopResult(
                engine_status=status,
                phase=flink_phase(status) if status != "NOT_FOUND" else EnginePhase.STOPPED,
                message=f"Flink job {jid}: cancel requested; it is {status}",
                started_fields={"observedFlinkJobStatus": status},
            )
        status = await self._wait_terminal(target, jid)
        return _stop_result(
            engine_status=status,
            message=f"Flink job {jid} {why}; it ended {status}",
            started_fields={"observedFlinkJobStatus": status},
        )

    async def _wait_terminal(self, target: FlinkSessionTarget, jid: str) -> str:
        while True:
            details = await self._job(target, jid)
            status = _state_of(details)
            if status in GLOBALLY_TERMINAL or details is None:
                return status
            activity.heartbeat({"waiting": status})
            await asyncio.sleep(self._poll_interval)

    async def _stop_with_savepoint(self, request: StopInput, target: FlinkSessionTarget, jid: str) -> StopResult:
        drain = request.mode is StopMode.DRAIN
        # A retried attempt resumes the stop it already triggered instead of triggering a second one, and
        # keeps the original deadline.
        previous = activity.info().heartbeat_details
        state: dict[str, Any] = dict(previous[0]) if previous else {}
        state.setdefault("since", time.time())
        deadline = state["since"] + request.savepoint_timeout_seconds
        why = f"the savepoint did not complete within {request.savepoint_timeout_seconds}s"
        while True:
            if "trigger" not in state:
                # Before each trigger, whether the job already ended: an earlier attempt's stop may have
                # reached Flink though its answer was lost, and Flink accepts a stop of an ended job, only
                # to fail its savepoint (FlinkJobNotFoundException) again and again.
                ended = await self._ended(request, target, jid, state["since"])
                if ended is not None:
                    return ended
                if time.time() >= deadline:
                    return await self._savepoint_failed(request, target, jid, why)
                trigger = await self._trigger_stop(request, target, jid, state["since"])
                if isinstance(trigger, StopResult):
                    return trigger
                state["trigger"] = trigger
                activity.heartbeat(state)
            response = await self._call(target, "GET", f"/jobs/{jid}/savepoints/{state['trigger']}")
            if response.status_code == 404:
                # The JobManager forgot the trigger (restarted?): the job's checkpoint history still knows.
                break
            body = response.json()
            if body.get("status", {}).get("id") == "COMPLETED":
                operation = body.get("operation") or {}
                if operation.get("location"):
                    status = await self._wait_terminal(target, jid)
                    return _stop_result(
                        engine_status=status,
                        savepoint_location=operation["location"],
                        message=f"Flink job {jid} stopped with a savepoint{' after draining' if drain else ''}",
                        started_fields={"observedFlinkJobStatus": status},
                    )
                # A savepoint can fail for passing reasons (tasks still deploying, a checkpoint already
                # running): try again until the deadline, then give up as the mode says.
                cause = summarize_trace(str((operation.get("failure-cause") or {}).get("stack-trace") or operation))
                why = f"the savepoint failed: {cause}"
                activity.logger.info("savepoint of Flink job %s failed, retrying: %s", jid, cause)
                del state["trigger"]
            elif drain and time.time() >= deadline:
                # Cancelling also aborts the savepoint still in flight.
                return await self._savepoint_failed(request, target, jid, why)
            activity.heartbeat(state)
            await asyncio.sleep(self._poll_interval)

        location = await self._latest_savepoint(target, jid)
        status = await self._wait_terminal(target, jid) if location else "UNKNOWN"
        if location:
            return _stop_result(
                engine_status=status,
                savepoint_location=location,
                message=f"Flink job {jid} stopped with a savepoint",
                started_fields={"observedFlinkJobStatus": status},
            )
        return await self._savepoint_failed(request, target, jid, "Flink lost track of the savepoint")

    async def _ended(self, request: StopInput, target: FlinkSessionTarget, jid: str, since: float) -> StopResult | None:
        """The answer if the job has already ended: with the savepoint Flink took since the stop was
        first asked for (by an attempt whose answer was lost), else as it ended. None while it runs."""
        details = await self._job(target, jid)
        status = _state_of(details)
        if details is not None and status not in GLOBALLY_TERMINAL:
            return None
        location = await self._latest_savepoint(target, jid, taken_since=since)
        after = " after draining" if request.mode is StopMode.DRAIN else ""
        if location:
            return _stop_result(
                engine_status=status,
                savepoint_location=location,
                message=f"Flink job {jid} stopped with a savepoint{after} (asked by an earlier attempt whose "
                "answer was lost)",
                started_fields={"observedFlinkJobStatus": status},
            )
        return _stop_result(
            engine_status=status,
            message=f"Flink job {jid} had already ended {status}; no savepoint was needed",
            started_fields={"observedFlinkJobStatus": status},
        )

    async def _trigger_stop(
        self, request: StopInput, target: FlinkSessionTarget, jid: str, since: float
    ) -> str | StopResult:
        """POST /jobs/{jid}/stop: the trigger id, or the final answer if the job had ended meanwhile."""
        body: dict[str, Any] = {"drain": request.mode is StopMode.DRAIN}
        if target.savepoint_dir:
            body["targetDirectory"] = target.savepoint_dir
        response = await self._call(target, "POST", f"/jobs/{jid}/stop", json=body)
        if response.status_code in (200, 202):
            return str(response.json()["request-id"])
        ended = await self._ended(request, target, jid, since)
        if ended is not None:
            return ended
        raise FlinkUnreachable(f"stop of Flink job {jid} answered {response.status_code}: {_errors(response)}")

    async def _savepoint_failed(self, request: StopInput, target: FlinkSessionTarget, jid: str, why: str) -> StopResult:
        # A completed savepoint is never reported as failed: look at the job's own checkpoint history first.
        location = await self._latest_savepoint(target, jid)
        details = await self._job(target, jid)
        status = _state_of(details)
        if location and (status in GLOBALLY_TERMINAL or details is None):
            return _stop_result(
                engine_status=status,
                savepoint_location=location,
                message=f"Flink job {jid} stopped with a savepoint ({why}, but the savepoint is there)",
                started_fields={"observedFlinkJobStatus": status},
            )
        if request.mode is StopMode.DRAIN:
            result = await self._cancel(target, jid, f"cancelled instead of drained because {why}")
            return result.model_copy(
                update={
                    "cancelled_instead": True,
                    "message": f"drain of Flink job {jid} fell back to cancel: {why}",
                }
            )
        return _stop_result(
            engine_status=status,
            message=f"Flink job {jid} was not stopped: {why}; it keeps running",
            started_fields={"observedFlinkJobStatus": status},
        )

    async def _latest_savepoint(self, target: FlinkSessionTarget, jid: str, taken_since: float = 0) -> str | None:
        """The job's latest completed savepoint from its checkpoint history, if triggered after
        `taken_since` (seconds since the epoch; a minute's slack for clocks of other machines)."""
        response = await self._call(target, "GET", f"/jobs/{jid}/checkpoints")
        if response.status_code != 200:
            return None
        latest = (response.json().get("latest") or {}).get("savepoint") or {}
        if (latest.get("trigger_timestamp") or 0) < (taken_since - CLOCK_SLACK_SECONDS) * 1000:
            return None
        return latest.get("external_path") or None


# Looks at a job after its overview row changed: covers Flink's 3 s cache of job details at 1 s per tick.
SETTLE_TICKS = 4
# Requests one look at a job costs: the job, its restarts metric, and (if failed) its exceptions.
LOOK_REQUESTS = LARGEST_ACQUIRE


class FlinkSurvey:
    """All Flink jobs of one session cluster in one GET /jobs/overview per tick; a job's details (restarts,
    root cause) are read only when its overview row changed (state or last-modification: a restart moves
    last-modification too). A Job's Flink job id is its metadata.id without dashes, which says whose it is."""

    def __init__(
        self, flink: FlinkEngine, target: FlinkSessionTarget, budget: AsyncLimiter, max_lookups: int = 8
    ) -> None:
        self._flink = flink
        self._target = target
        self._budget = budget
        self._max_lookups = max_lookups  # per tick, so one tick stays short when many jobs change at once
        self._rows: dict[str, tuple[Any, ...]] = {}  # jid -> the overview row (state, last-modification) last read
        self._seen: dict[str, Sighting] = {}  # jid -> the latest sighting of a Job's Flink job
        self._settling: dict[str, int] = {}  # jid -> looks left after its row changed

    async def tick(self, wanted: Wanted) -> list[Sighting]:
        await self._budget.acquire()
        try:
            response = await self._flink._call(self._target, "GET", "/jobs/overview")
            if response.status_code != 200:
                raise FlinkUnreachable(
                    f"Flink REST API of Deployment Target {self._target.name} answered GET /jobs/overview with "
                    f"{response.status_code}: {_errors(response)}"
                )
            rows = {row["jid"]: row for row in response.json().get("jobs", []) if "jid" in row}
        except (FlinkUnreachable, ValueError) as err:
            raise EngineUnreachable(str(err)) from err
        lookups = 0
        for jid, row in rows.items():
            key = (row.get("state"), row.get("last-modification"))
            job_id = job_id_of(jid)
            if job_id is None:
                continue
            seen = self._seen.get(jid)
            state = str(row.get("state"))
            if seen is not None and seen.observation.engine_status != state:
                # The overview row tells a new state at once; its details (restarts) follow as the budget allows.
                # Waiting for the look instead delayed a change by up to a minute when a dozen jobs changed at
                # once: each costs several looks of 3 requests, at 4 requests per second per target.
                self._seen[jid] = Sighting(job_id, _observation(jid, state, seen.observation.restarts))
            if not self._may_look(lookups):
                continue
            if self._rows.get(jid) == key and not self._settling.get(jid):
                continue
            if jid not in self._seen and not await wanted(job_id):
                self._rows[jid] = key  # not a running Job's (a closed Job, or not jobctl's): never read it
                continue
            if self._rows.get(jid) != key:
                # Flink serves a job's details from a cache (web.refresh-interval, 3 s by default): look again
                # over the next ticks, until the details have caught up with the overview.
                self._settling[jid] = SETTLE_TICKS
            lookups += 1
            obs = await self._look(jid)
            if obs.phase is EnginePhase.UNKNOWN:
                continue  # this one job could not be read just now: the next tick tries again
            self._rows[jid] = key
            if obs.engine_status == state or jid not in self._seen:
                self._seen[jid] = Sighting(job_id, obs)
            if obs.engine_status == state:
                self._settling[jid] -= 1
            # else: the details still lag the overview (Flink's cache); keep the overview's state, look again.
            if self._settling[jid] <= 0:
                del self._settling[jid]
        for jid in [j for j in self._seen if j not in rows]:
            # Gone from the cluster: ended long ago (forget it), or the cluster lost it (say so: UNKNOWN).
            if self._seen[jid].observation.phase in ENDED_PHASES:
                del self._seen[jid]
                self._rows.pop(jid, None)
                self._settling.pop(jid, None)
                continue
            if not self._may_look(lookups):
                continue
            lookups += 1
            self._seen[jid] = Sighting(self._seen[jid].job_id, await self._look(jid))
        return list(self._seen.values())

    def _may_look(self, lookups: int) -> bool:
        """One look per tick, and more only if the budget has room for them now: the watcher pushes what a
        tick found when it returns, so a tick that waited for budget held back the new states the overview
        told (sixteen jobs cancelled together waited 7 s at the median). Looks left over go next tick."""
        return lookups < self._max_lookups and (lookups == 0 or self._budget.has_capacity(LOOK_REQUESTS))

    async def _look(self, jid: str) -> Observation:
        await self._budget.acquire(LOOK_REQUESTS)
        last = self._seen.get(jid)
        return await self._flink.look(self._target, jid, last.observation if last else None)


def job_id_of(flink_job_id: str) -> str | None:
    """The jobctl Job id of a Flink job id jobctl set (metadata.id without dashes), else None."""
    if len(flink_job_id) != 32:
        return None
    try:
        return str(uuid.UUID(hex=flink_job_id))
    except ValueError:
        return None


def _state_of(details: dict[str, Any] | None) -> str:
    """A job's state from its details; NOT_FOUND when Flink does not know it."""
    return str(details.get("state")) if details else "NOT_FOUND"


def _stop_result(engine_status: str, message: str, **fields: Any) -> StopResult:
    # NOT_FOUND (nothing was ever submitted, or it is gone) reads as stopped.
    phase = flink_phase(engine_status) if engine_status in GLOBALLY_TERMINAL else EnginePhase.STOPPED
    return StopResult(engine_status=engine_status, phase=phase, message=message, **fields)


def _observation(
    jid: str,
    status: str,
    restarts: int | None,
    failure: str | None = None,
    unreachable: str | None = None,
) -> Observation:
    return Observation(
        engine_job_id=jid,
        phase=flink_phase(status) if status != UNKNOWN else EnginePhase.UNKNOWN,
        engine_status=status,
        restarts=restarts,
        failure_message=failure,
        unreachable_reason=unreachable,
        observed_at=_now(),
        started_fields={
            "flinkJobId": jid,
            "observedFlinkJobStatus": status,
            "observedFlinkJobRestarts": restarts,
        },
    )


def _local_jar(spec: JobSpec, metadata: JobMetadata) -> Path:
    uri = getattr(spec.artifact, "jar_uri", "")
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise ApplicationError(
            f"Job {metadata.id}: jarUri {uri!r} is not supported; use a file:// URI or a path on the worker's machine",
            type="InvalidArtifact",
            non_retryable=True,
        )
    path = Path(unquote(parsed.path) if parsed.scheme else uri)
    if not path.is_file():
        raise ApplicationError(
            f"Job {metadata.id}: jar {path} does not exist on the worker's machine; "
            "put it there (or on a volume all workers share) and start the Job again",
            type="InvalidArtifact",
            non_retryable=True,
        )
    return path


def _errors(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors")
    except ValueError:
        return response.text[:500]
    if not errors:
        return f"HTTP {response.status_code}"
    return summarize_trace("\n".join(str(e) for e in errors))


def summarize_trace(trace: str, limit: int = 1000) -> str:
    """First line of a Java stack trace plus its deepest 'Caused by', the part a user can act on."""
    lines = [line.strip() for line in trace.splitlines() if line.strip()]
    if not lines:
        return ""
    causes = [line for line in lines if line.startswith("Caused by:")]
    text = lines[0] if not causes else f"{lines[0]} ... {causes[-1]}"
    return text[:limit]
