"""Dataflow engine: acquire, submit, observe and stop Google Cloud Dataflow jobs through the official async
clients (google-cloud-dataflow-client, gRPC).

With DATAFLOW_EMULATOR_HOST=host:port every call goes over a plaintext channel to that address (the
convention of Google's own emulators); otherwise to the official endpoints with Application Default
Credentials. Nothing else differs between the two.

Every call has a timeout; retries are Temporal's (an exception here fails the attempt, Temporal retries
it). Errors that retrying cannot fix are non-retryable ApplicationErrors with a type the workflow shows.

How a Job finds its Dataflow job again: every job jobctl launches carries the label
`jobctl-job-id: <metadata.id>`. Dataflow has no idempotency key for launches, and allows only one ACTIVE
job per name per project+region, so a retried submit (whose first answer was lost) looks for a job of
that name with our label before launching, and a launch answered ALREADY_EXISTS looks again.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiolimiter import AsyncLimiter
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud import dataflow_v1beta3 as df
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.watch import EngineUnreachable, Sighting, Wanted
from jobctl.dataflow_emulator.client import emulator_clients, emulator_host
from jobctl.engine import Grant, Observation, ObserveInput, StopInput, StopMode, StopResult, Submission, SubmitInput
from jobctl.models import ClassicTemplateArtifact, FlexTemplateArtifact, JobSpec
from jobctl.states import ENDED_PHASES, EnginePhase, dataflow_phase
from jobctl.targets import DataflowTarget

LABEL = "jobctl-job-id"
UNKNOWN = "UNKNOWN"
NOT_FOUND = "NOT_FOUND"
# The service's own job-name rule; checked here so a bad name fails with a message about the spec.
JOB_NAME = re.compile(r"[a-z]([-a-z0-9]{0,1022}[a-z0-9])?")

S = df.JobState
TERMINAL = frozenset(
    {S.JOB_STATE_DONE, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED, S.JOB_STATE_UPDATED, S.JOB_STATE_DRAINED}
)
ACTIVE = df.ListJobsRequest.Filter.ACTIVE
ALL = df.ListJobsRequest.Filter.ALL

# Errors that say nothing about the job, only that the API could not be read right now: an outage, a
# timeout, a quota, a credential refresh that failed. Retrying (or looking again) can fix them.
TRANSIENT: tuple[type[BaseException], ...] = (
    gexc.ServerError,  # UNAVAILABLE (also: connection refused), DEADLINE_EXCEEDED, INTERNAL, UNKNOWN
    gexc.TooManyRequests,  # RESOURCE_EXHAUSTED
    gexc.Aborted,
    gexc.Cancelled,
    auth_exc.TransportError,
    auth_exc.RefreshError,
    asyncio.TimeoutError,
    OSError,
)


@dataclass(frozen=True)
class Where:
    """The project and region a Job's Dataflow job lives in."""

    project: str
    region: str

    def __str__(self) -> str:
        return f"{self.project}/{self.region}"


@dataclass
class _Clients:
    jobs: df.JobsV1Beta3AsyncClient
    flex_templates: df.FlexTemplatesServiceAsyncClient
    templates: df.TemplatesServiceAsyncClient
    messages: df.MessagesV1Beta3AsyncClient
    loop: asyncio.AbstractEventLoop
    close: Callable[[], Awaitable[None]]


def _now() -> datetime:
    return datetime.now(UTC)


def where_of(spec: JobSpec, target: DataflowTarget) -> Where:
    # The target requires both (see DataflowTarget); a spec may override either. Never a silent default:
    # a wrong region is a 404 on every call.
    return Where(project=spec.project or target.project, region=spec.region or target.region)


def console_url(where: Where, job_id: str) -> str:
    return f"https://console.cloud.google.com/dataflow/jobs/{where.region}/{job_id}?project={where.project}"


def state_name(value: Any) -> str:
    """The JobState name; an integer this client does not know yet (a newer API) is shown, never a crash."""
    try:
        return S(value).name
    except ValueError:
        return f"JOB_STATE_UNKNOWN_{int(value)}"


def type_name(value: Any) -> str:
    try:
        return df.JobType(value).name
    except ValueError:
        return f"JOB_TYPE_UNKNOWN_{int(value)}"


def is_terminal(job: df.Job) -> bool:
    return job.current_state in TERMINAL


def is_batch(job: df.Job) -> bool:
    return job.type_ == df.JobType.JOB_TYPE_BATCH


def started_fields(job: df.Job) -> dict[str, str | int | None]:
    """The Dataflow job's observed fields for status.started (JSON names)."""
    when = job.current_state_time
    return {
        "dataflowJobId": job.id,
        "observedDataflowJobState": state_name(job.current_state),
        "observedDataflowJobType": type_name(job.type_),
        "observedDataflowCurrentStateTime": when.isoformat() if when else None,
        "replaceJobId": job.replace_job_id or None,
        "replacedByJobId": job.replaced_by_job_id or None,
    }


def refusals(job: df.Job) -> dict[str, str]:
    """Requests this job cannot take. Right after a flex launch the type is still UNKNOWN: refuse nothing
    then (the refusal appears with the next observation, once the launcher has built the graph)."""
    if not is_batch(job):
        return {}
    return {
        "DRAIN": f"Dataflow job {job.id} is a batch job: batch jobs cannot be drained; cancel it instead",
        "UPDATE": f"Dataflow job {job.id} is a batch job: batch jobs cannot be updated in place; "
        "cancel it and start a new Job with the new spec",
    }


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _error_text(err: BaseException) -> str:
    if isinstance(err, gexc.GoogleAPICallError):
        return f"{type(err).__name__}: {err.message}"
    return f"{type(err).__name__}: {err}"


class DataflowEngine:
    def __init__(self, timeout: float = 30.0, poll_interval: float = 2.0) -> None:
        self._timeout = timeout
        self._poll_interval = poll_interval
        self._c: _Clients | None = None

    # --- clients ---------------------------------------------------------------------------------

    def _clients(self) -> _Clients:
        """The four official async clients, built on first use inside the running loop (a grpc.aio
        channel belongs to the loop that created it) and reused."""
        loop = asyncio.get_running_loop()
        if self._c is not None and self._c.loop is loop:
            return self._c
        address = emulator_host()
        if address:
            clients = emulator_clients(address)
            self._c = _Clients(
                clients.jobs, clients.flex_templates, clients.templates, clients.messages, loop, clients.close
            )
            return self._c
        try:
            jobs = df.JobsV1Beta3AsyncClient()
            flex = df.FlexTemplatesServiceAsyncClient()
            templates = df.TemplatesServiceAsyncClient()
            messages = df.MessagesV1Beta3AsyncClient()
        except auth_exc.DefaultCredentialsError as err:
            # A worker set-up problem, not the Job's: retryable, so Jobs proceed once it is fixed.
            raise ApplicationError(
                f"the jobctl worker has no Google Cloud credentials for Dataflow ({err}); run "
                "`gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS on the worker, "
                "or set DATAFLOW_EMULATOR_HOST to use an emulator",
                type="EngineCredentials",
            ) from err

        async def close() -> None:
            for client in (jobs, flex, templates, messages):
                await client.transport.close()

        self._c = _Clients(jobs, flex, templates, messages, loop, close)
        return self._c

    async def close(self) -> None:
        if self._c is not None:
            clients, self._c = self._c, None
            await clients.close()

    # --- API helpers -----------------------------------------------------------------------------

    async def _get(self, where: Where, jid: str, view: df.JobView = df.JobView.JOB_VIEW_SUMMARY) -> df.Job:
        return await self._clients().jobs.get_job(
            request={"project_id": where.project, "location": where.region, "job_id": jid, "view": view},
            timeout=self._timeout,
        )

    async def _request_state(self, where: Where, jid: str, state: df.JobState) -> df.Job:
        return await self._clients().jobs.update_job(
            request={
                "project_id": where.project,
                "location": where.region,
                "job_id": jid,
                "job": {"requested_state": state},
            },
            timeout=self._timeout,
        )

    async def _list(
        self, where: Where, filter: df.ListJobsRequest.Filter, name: str | None = None
    ) -> AsyncIterator[df.Job]:
        request: dict[str, Any] = {"project_id": where.project, "location": where.region, "filter": filter}
        if name:
            request["name"] = name
        pager = await self._clients().jobs.list_jobs(request=request, timeout=self._timeout)
        async for job in pager:  # further pages use the same timeout
            # Filtered here too: the name filter is recent in the API.
            if name is None or job.name == name:
                yield job

    async def _labels(self, where: Where, job: df.Job) -> dict[str, str]:
        # ListJobs answers with summaries only, which may leave out labels: GetJob's DESCRIPTION view has them.
        if job.labels:
            return dict(job.labels)
        full = await self._get(where, job.id, df.JobView.JOB_VIEW_DESCRIPTION)
        return dict(full.labels)

    async def _own_job(self, where: Where, name: str, job_id: str, filter: df.ListJobsRequest.Filter) -> df.Job | None:
        """The Dataflow job named `name` that carries this Job's label (ACTIVE ones come first in ALL)."""
        async for job in self._list(where, filter, name):
            if (await self._labels(where, job)).get(LABEL) == job_id:
                return job
        return None

    # --- acquire ---------------------------------------------------------------------------------

    def requirements(self, job_id: str, spec: JobSpec, target: DataflowTarget) -> dict[str, int]:
        """What the Job needs from the target's ledger: one concurrent job, and its max workers when the
        target caps workers. Checks the artifact now, so a Job that can never launch does not wait first."""
        artifact = _artifact(spec, job_id)
        _check_job_name(artifact.job_name, job_id)
        env = _environment(spec, target, job_id)
        needs = {"jobs": 1}
        if target.max_workers is not None:
            needs["workers"] = int(env.get("max_workers") or target.max_workers)
        return needs

    def capacity(self, target: DataflowTarget) -> dict[str, int]:
        capacity = {"jobs": target.max_concurrent_jobs}
        if target.max_workers is not None:
            capacity["workers"] = target.max_workers
        return capacity

    async def engine_free(self, target: DataflowTarget) -> tuple[dict[str, int] | None, str | None]:
        # The ledger's own count of concurrent jobs is the limit: jobs jobctl did not launch do not
        # share the target's quota, so there is nothing the engine could add.
        return None, None

    async def acquire(self, job_id: str, spec: JobSpec, target: DataflowTarget) -> Grant:
        # spec.parallelism means nothing to Dataflow (it autoscales workers); maxWorkers is what a target caps.
        where = where_of(spec, target)
        artifact = _artifact(spec, job_id)
        _check_job_name(artifact.job_name, job_id)
        _environment(spec, target, job_id)  # fail now, not after waiting for capacity
        active = 0
        try:
            async for job in self._list(where, ACTIVE):
                labels = await self._labels(where, job)
                # Jobs launched by jobctl count; this Job's own job (an adopted one) does not.
                if LABEL in labels and labels[LABEL] != job_id:
                    active += 1
        except TRANSIENT as err:
            raise ApplicationError(
                f"Dataflow API for Deployment Target {target.name} ({where}) did not answer while counting "
                f"its active jobs for Job {job_id}: {_error_text(err)}",
                type="EngineUnreachable",
            ) from err
        except gexc.GoogleAPICallError as err:
            raise ApplicationError(
                f"Dataflow refused to list the jobs of {where} for Job {job_id} (Deployment Target {target.name}): "
                f"{_error_text(err)}; check the project, region and the worker's permissions (roles/dataflow.viewer)",
                type="EngineRefused",
            ) from err
        limit = target.max_concurrent_jobs
        if active >= limit:
            # Retryable: Temporal tries again (with backoff) until a job of this target has ended.
            raise ApplicationError(
                f"waiting for a free Dataflow job slot on Deployment Target {target.name}: {active} of "
                f"{limit} concurrent jobs launched by jobctl are active in {where}",
                type="NoCapacity",
            )
        return Grant(
            target=target.name,
            slots=1,
            message=f"1 of {limit} concurrent Dataflow jobs on {target.name} ({active} active in {where})",
        )

    # --- submit ----------------------------------------------------------------------------------

    async def submit(self, request: SubmitInput, target: DataflowTarget) -> Submission:
        metadata, spec = request.metadata, request.spec
        where = where_of(spec, target)
        artifact = _artifact(spec, metadata.id)
        name = artifact.job_name
        _check_job_name(name, metadata.id)
        try:
            # A retried submit whose launch went through: take that job over (in any state: a job that
            # already ended is still this Job's job, and the next observation says how it ended).
            own = await self._own_job(where, name, metadata.id, ALL)
            if own is not None:
                return _submission(where, own, adopted=True)
            if request.replaces_engine_job_id:
                return await self._submit_update(request, target, where, name, request.replaces_engine_job_id)
            try:
                job = await self._launch(request, target, where, update=False)
            except gexc.AlreadyExists as err:
                # Another launch of this Job got there first (a retry racing a slow answer), or someone
                # else's job holds the name.
                own = await self._own_job(where, name, metadata.id, ACTIVE)
                if own is not None:
                    return _submission(where, own, adopted=True)
                raise ApplicationError(
                    f"a Dataflow job named {name} is already active in {where} and was not started by Job "
                    f"{metadata.id}; stop that job, or give this Job another artifact.jobName, and start the "
                    f"Job again ({err.message})",
                    type="SubmitRejected",
                    non_retryable=True,
                ) from err
        except TRANSIENT as err:
            raise ApplicationError(
                f"Dataflow API ({where}) did not answer while submitting Job {metadata.id} "
                f"(job {name}): {_error_text(err)}",
                type="EngineUnreachable",
            ) from err
        except gexc.GoogleAPICallError as err:
            raise ApplicationError(
                f"Dataflow refused to launch job {name} of Job {metadata.id} in {where}: {_error_text(err)}; "
                "fix the artifact (template path, parameters, environment) or the worker's permissions and "
                "start the Job again",
                type="SubmitRejected",
                non_retryable=True,
            ) from err
        return _submission(where, job, adopted=False)

    async def _submit_update(
        self, request: SubmitInput, target: DataflowTarget, where: Where, name: str, old_id: str
    ) -> Submission:
        """The successor of an update: Dataflow replaces a streaming job in place when a job with the SAME
        name is launched with update=true. The new job (new id, replace_job_id = the old one) is this Job's;
        the old one ends JOB_STATE_UPDATED by itself."""
        job_id = request.metadata.id
        try:
            old = await self._get(where, old_id)
        except gexc.NotFound as err:
            raise ApplicationError(
                f"Job {job_id} should replace Dataflow job {old_id}, but {where} has no such job; "
                "start the Job again without an update",
                type="SubmitRejected",
                non_retryable=True,
            ) from err
        if old.name != name:
            raise ApplicationError(
                f"Job {job_id} should replace Dataflow job {old_id} in place, which needs the same job name, but "
                f"artifact.jobName is {name!r} and the running job is named {old.name!r}; keep the job name "
                "in an update",
                type="InvalidSpec",
                non_retryable=True,
            )
        if is_terminal(old):
            raise ApplicationError(
                f"Job {job_id} should replace Dataflow job {old_id}, but that job already ended "
                f"{state_name(old.current_state)}: there is nothing to update in place; start the Job again "
                "without an update",
                type="SubmitRejected",
                non_retryable=True,
            )
        job = await self._launch(request, target, where, update=True)
        if job.replace_job_id and job.replace_job_id != old_id:
            # Someone else's launch replaced the old job between our look and our launch.
            activity.logger.warning(
                "Dataflow job %s of Job %s replaced job %s, not %s", job.id, job_id, job.replace_job_id, old_id
            )
        return _submission(where, job, adopted=False)

    async def _launch(self, request: SubmitInput, target: DataflowTarget, where: Where, update: bool) -> df.Job:
        metadata, spec = request.metadata, request.spec
        artifact = _artifact(spec, metadata.id)
        environment = _environment(spec, target, metadata.id)
        if not activity.info().is_local:  # a quick step (local activity) has no heartbeat
            activity.heartbeat("launching")
        clients = self._clients()
        if isinstance(artifact, FlexTemplateArtifact):
            response = await clients.flex_templates.launch_flex_template(
                request={
                    "project_id": where.project,
                    "location": where.region,
                    "launch_parameter": {
                        "job_name": artifact.job_name,
                        "container_spec_gcs_path": artifact.container_spec_gcs_path,
                        "parameters": artifact.launch_parameters(),  # secret parameters join only here
                        "environment": environment,
                        "update": update,
                    },
                },
                timeout=self._timeout,
            )
        else:
            response = await clients.templates.launch_template(
                request={
                    "project_id": where.project,
                    "location": where.region,
                    "gcs_path": artifact.gcs_path,
                    "launch_parameters": {
                        "job_name": artifact.job_name,
                        "parameters": artifact.launch_parameters(),  # secret parameters join only here
                        "environment": environment,
                        "update": update,
                    },
                },
                timeout=self._timeout,
            )
        return response.job

    # --- observe ---------------------------------------------------------------------------------

    async def look(self, where: Where, jid: str, last: Observation | None) -> Observation:
        """One observation of the Dataflow job. An unreadable API gives UNKNOWN, never FAILED."""
        try:
            job = await self._get(where, jid)
            failure = await self._failure_message(where, job) if job.current_state == S.JOB_STATE_FAILED else None
        except gexc.NotFound as err:
            return _unknown(jid, last, f"Dataflow has no job {jid} in {where} ({err.message})")
        except (*TRANSIENT, gexc.GoogleAPICallError) as err:
            # PERMISSION_DENIED and the like are unknowns too: a credentials problem is not a job failure.
            return _unknown(jid, last, f"Dataflow API ({where}) did not answer for job {jid}: {_error_text(err)}")
        return observation_of(job, failure)

    async def _failure_message(self, where: Where, job: df.Job, keep: int = 3, scan: int = 1000) -> str:
        """The newest JOB_MESSAGE_ERROR texts of a failed job (newest first); Dataflow's own summary
        ("Workflow failed. Causes: ...") is usually among them."""
        pager = await self._clients().messages.list_job_messages(
            request={
                "project_id": where.project,
                "location": where.region,
                "job_id": job.id,
                "minimum_importance": df.JobMessageImportance.JOB_MESSAGE_ERROR,
            },
            timeout=self._timeout,
        )
        texts: list[str] = []
        async for message in pager:
            text = message.message_text.strip()
            if text and (message.message_importance == df.JobMessageImportance.JOB_MESSAGE_ERROR):
                texts.append(text)
            if len(texts) >= scan:  # a job with thousands of errors: the first ones are enough
                break
        newest: list[str] = []
        for text in reversed(texts):
            if text not in newest:
                newest.append(text)
            if len(newest) == keep:
                break
        if not newest:
            return f"Dataflow job {job.id} failed without an error message; see {console_url(where, job.id)}"
        return "\n".join(newest)[:4000]

    async def observe(self, request: ObserveInput, target: DataflowTarget) -> Observation:
        where = where_of(request.spec, target)
        deadline = time.monotonic() + request.max_wait_seconds
        while True:
            obs = await self.look(where, request.engine_job_id, request.last)
            if obs.differs_from(request.last) or time.monotonic() >= deadline:
                return obs
            activity.heartbeat(obs.engine_status)
            await asyncio.sleep(self._poll_interval)

    # --- stop ------------------------------------------------------------------------------------

    async def stop(self, request: StopInput, target: DataflowTarget) -> StopResult:
        where = where_of(request.spec, target)
        try:
            jid = request.engine_job_id or await self._find_for_stop(request, where)
            if jid is None:
                return StopResult(
                    engine_status=NOT_FOUND,
                    message=f"no Dataflow job of Job {request.metadata.id} exists in {where}: nothing to stop",
                    started_fields={"observedDataflowJobState": NOT_FOUND},
                )
            if request.mode is StopMode.CANCEL:
                return await self._cancel(where, jid, "cancelled", wait=request.wait_for_end)
            if request.mode is StopMode.SUSPEND:
                return await self._replace_in_place(where, jid)
            return await self._drain(request, where, jid)
        except gexc.NotFound as err:
            return StopResult(
                engine_status=NOT_FOUND,
                message=f"Dataflow has no job {request.engine_job_id} in {where}: nothing to stop ({err.message})",
                started_fields={"observedDataflowJobState": NOT_FOUND},
            )
        except TRANSIENT as err:
            raise ApplicationError(
                f"Dataflow API ({where}) did not answer while stopping Job {request.metadata.id}: {_error_text(err)}",
                type="EngineUnreachable",
            ) from err

    async def _find_for_stop(self, request: StopInput, where: Where) -> str | None:
        # A cancel while the submit's answer is not known yet: look the job up by the Job's label, so
        # nothing launched is left running (and billing).
        artifact = _artifact(request.spec, request.metadata.id)
        own = await self._own_job(where, artifact.job_name, request.metadata.id, ALL)
        return own.id if own else None

    async def _replace_in_place(self, where: Where, jid: str) -> StopResult:
        job = await self._get(where, jid)
        if is_batch(job):
            # The workflow refuses this first (Observation.refuses); never launch an update over a batch job.
            raise ApplicationError(refusals(job)["UPDATE"], type="RequestRejected", non_retryable=True)
        return StopResult(
            engine_status=state_name(job.current_state),
            replaced_in_place=True,
            message=f"Dataflow updates a streaming job in place: the successor's launch replaces job {jid}",
            started_fields=started_fields(job),
        )

    async def _cancel(
        self, where: Where, jid: str, why: str, progress: dict[str, Any] | None = None, *, wait: bool = True
    ) -> StopResult:
        job = await self._get(where, jid)
        if is_terminal(job):
            return _stopped(
                job, f"Dataflow job {jid} had already ended {state_name(job.current_state)}: nothing to cancel"
            )
        try:
            # A QUEUED job ends CANCELLED at once; a running one goes through CANCELLING.
            await self._request_state(where, jid, S.JOB_STATE_CANCELLED)
        except gexc.FailedPrecondition:
            # It ended between our look and the request; anything else is raised again.
            if not is_terminal(await self._get(where, jid)):
                raise
        if not wait:
            job = await self._get(where, jid)
            return _stopped(job, f"Dataflow job {jid}: cancel requested; it is {state_name(job.current_state)}")
        job = await self._wait_terminal(where, jid, progress or {})
        return _stopped(job, f"Dataflow job {jid} {why}; it ended {state_name(job.current_state)}")

    async def _wait_terminal(self, where: Where, jid: str, progress: dict[str, Any]) -> df.Job:
        """Poll until the job is terminal. An API outage meanwhile is waited out (the activity's
        start-to-close timeout bounds the wait; a retried attempt asks again)."""
        while True:
            try:
                job = await self._get(where, jid)
                if is_terminal(job):
                    return job
                activity.heartbeat({**progress, "waiting": state_name(job.current_state)})
            except TRANSIENT as err:
                activity.heartbeat({**progress, "waiting": UNKNOWN})
                activity.logger.info("Dataflow job %s: waiting out an API error: %s", jid, _error_text(err))
            await asyncio.sleep(self._poll_interval)

    async def _drain(self, request: StopInput, where: Where, jid: str) -> StopResult:
        # savepointTimeoutSeconds counts from the first attempt that reached Dataflow, as for Flink: the
        # start time is kept (heartbeat) only once Dataflow answered, so an API outage before that never
        # turns a drain into a cancel; a retried attempt keeps it, so the deadline does not move.
        previous = activity.info().heartbeat_details
        progress: dict[str, Any] = dict(previous[0]) if previous and isinstance(previous[0], dict) else {}
        progress.setdefault("since", time.time())
        deadline = progress["since"] + request.savepoint_timeout_seconds
        job = await self._get(where, jid)
        activity.heartbeat(progress)
        if is_batch(job):
            # The workflow refuses this first (Observation.refuses); double-checked: never send it.
            raise ApplicationError(refusals(job)["DRAIN"], type="RequestRejected", non_retryable=True)
        while not is_terminal(job):
            if time.time() >= deadline:
                why = f"the drain did not complete within {request.savepoint_timeout_seconds}s"
                result = await self._cancel(where, jid, f"cancelled instead of drained because {why}", progress)
                return result.model_copy(
                    update={
                        "cancelled_instead": True,
                        "message": f"drain of Dataflow job {jid} fell back to cancel: {why}; it ended "
                        f"{result.engine_status} (data in flight was not drained)",
                    }
                )
            if job.current_state != S.JOB_STATE_DRAINING and job.requested_state != S.JOB_STATE_DRAINED:
                try:
                    job = await self._request_state(where, jid, S.JOB_STATE_DRAINED)
                except gexc.InvalidArgument as err:
                    raise ApplicationError(
                        f"Dataflow refused to drain job {jid} of Job {request.metadata.id}: {err.message}; "
                        "cancel the Job instead",
                        type="RequestRejected",
                        non_retryable=True,
                    ) from err
                except gexc.FailedPrecondition as err:
                    # Not startable yet (a flex job still QUEUED), or it just ended: look again until the deadline.
                    activity.logger.info("drain of Dataflow job %s not accepted yet: %s", jid, err.message)
            activity.heartbeat({**progress, "waiting": state_name(job.current_state)})
            await asyncio.sleep(self._poll_interval)
            try:
                job = await self._get(where, jid)
            except TRANSIENT as err:
                activity.logger.info("Dataflow job %s: waiting out an API error: %s", jid, _error_text(err))
        if job.current_state == S.JOB_STATE_DRAINED:
            return _stopped(job, f"Dataflow job {jid} drained")
        # Failed while draining (phase FAILED: the Job fails), or cancelled from outside meanwhile.
        return _stopped(job, f"Dataflow job {jid} ended {state_name(job.current_state)} while draining")


def _stopped(job: df.Job, message: str) -> StopResult:
    """The result of a stop: the job's JobState and its engine-neutral reading (DRAINED/CANCELLED/UPDATED:
    STOPPED, DONE: FINISHED, FAILED: FAILED; CANCELLING, for a cancel that was not waited for: STOPPING)."""
    state = state_name(job.current_state)
    return StopResult(
        engine_status=state, phase=dataflow_phase(state), message=message, started_fields=started_fields(job)
    )


def observation_of(job: df.Job, failure: str | None = None) -> Observation:
    state = state_name(job.current_state)
    phase = dataflow_phase(state)
    unreachable = None
    if phase is EnginePhase.UNKNOWN:
        unreachable = f"Dataflow reports job {job.id} in state {state}, which jobctl does not know how to read"
    return Observation(
        engine_job_id=job.id,
        phase=phase,
        engine_status=state,
        failure_message=failure,
        unreachable_reason=unreachable,
        observed_at=_now(),
        started_fields=started_fields(job),
        refuses=refusals(job),
    )


# The protobuf message under df.Job: the survey reads thousands of jobs per tick, and wraps only those it reports.
RawJob = Any

# How far back a watcher looks for jobs that ended unseen (a watcher restarting after its worker died).
RECENTLY_ENDED = timedelta(minutes=15)
# Ended jobs read per tick (one request): more than end between two ticks on a busy target.
ENDED_PAGE_SIZE = 200


class DataflowSurvey:
    """All active Dataflow jobs of one target (project and region) in one ListJobs per tick (a page per
    thousand or so jobs). The list carries each job's state, so no per-job call is needed while jobs run;
    a job that left the active list has ended, and one GetJob tells how (with the error messages of a
    failed one). Whose job it is comes from the label jobctl-job-id."""

    def __init__(
        self, dataflow: DataflowEngine, target: DataflowTarget, budget: AsyncLimiter, max_lookups: int = 8
    ) -> None:
        self._dataflow = dataflow
        self._where = Where(project=target.project, region=target.region)
        self._budget = budget
        self._max_lookups = max_lookups
        self._keys: dict[str, tuple[Any, ...]] = {}  # Dataflow job id -> (state, state time, type) last read
        self._owners: dict[str, str | None] = {}  # Dataflow job id -> jobctl Job id (None: not jobctl's)
        self._seen: dict[str, Sighting] = {}  # Dataflow job id -> the latest sighting of a Job's job
        self._ended: dict[str, datetime] = {}  # Dataflow job id -> when it ended, for jobs already reported ended

    async def tick(self, wanted: Wanted) -> list[Sighting]:
        # Raw protobuf messages, not proto-plus ones: at a thousand jobs a target, reading every job's state
        # through proto-plus took about 70 ms of CPU per tick, most of a core for ten targets.
        active = await self._active()
        # The newest ended jobs, read every tick (one request): they tell how most jobs that left the active
        # list ended, and which jobs ended while no watcher saw them.
        ended_page = await self._ended_page()
        lookups = 0
        for job in active:
            if job.id not in self._owners:
                if not job.labels and lookups >= self._max_lookups:
                    continue
                lookups += 0 if job.labels else 1
                owner = (await self._dataflow._labels(self._where, df.Job.wrap(job))).get(LABEL)
                self._owners[job.id] = owner if owner and await wanted(owner) else None
            owner = self._owners[job.id]
            when = job.current_state_time
            key = (job.current_state, when.seconds, when.nanos, job.type_)
            if owner is None or self._keys.get(job.id) == key:
                continue
            self._keys[job.id] = key
            self._seen[job.id] = Sighting(owner, observation_of(df.Job.wrap(job)))
        ids = {job.id for job in active}
        for jid in [j for j in self._seen if j not in ids]:
            # Left the active list: it ended. Told once, then forgotten.
            if self._seen[jid].observation.phase in ENDED_PHASES:
                del self._seen[jid]
                self._keys.pop(jid, None)
                self._owners.pop(jid, None)
                continue
            if jid in ended_page:
                # How it ended is on the page; a failed Job reads the error messages with a look of its own.
                self._seen[jid] = Sighting(self._seen[jid].job_id, observation_of(df.Job.wrap(ended_page[jid])))
                continue
            if lookups >= self._max_lookups:
                continue
            lookups += 1
            await self._budget.acquire(2)  # the job, and the messages of a failed one
            obs = await self._dataflow.look(self._where, jid, self._seen[jid].observation)
            if obs.phase is EnginePhase.UNKNOWN:
                continue  # could not be read just now: the next tick asks again
            self._seen[jid] = Sighting(self._seen[jid].job_id, obs)
        sightings = list(self._seen.values())
        for jid, sighting in self._seen.items():
            if sighting.observation.phase in ENDED_PHASES:
                self._ended[jid] = _now()
        return sightings + await self._recently_ended(wanted, ids, ended_page)

    async def _ended_page(self) -> dict[str, RawJob]:
        """The newest page of ended jobs, by Dataflow job id."""
        request = {
            "project_id": self._where.project,
            "location": self._where.region,
            "filter": df.ListJobsRequest.Filter.TERMINATED,
            "page_size": ENDED_PAGE_SIZE,
        }
        try:
            await self._budget.acquire()
            response = await self._dataflow._clients().jobs.list_jobs(request=request, timeout=self._dataflow._timeout)
        except (*TRANSIENT, gexc.GoogleAPICallError) as err:
            raise EngineUnreachable(f"Dataflow API ({self._where}) did not list jobs: {_error_text(err)}") from err
        async for page in response.pages:  # the first page only: it is already fetched, no request more
            return {job.id: job for job in df.ListJobsResponse.pb(page).jobs}
        return {}

    async def _recently_ended(self, wanted: Wanted, active: set[str], ended_page: dict[str, RawJob]) -> list[Sighting]:
        """Jobs that ended while no watcher saw them: while the watcher was restarting (its worker died), or
        between two surveys right after launch."""
        horizon = _now() - RECENTLY_ENDED
        for jid in [j for j, when in self._ended.items() if when < horizon]:
            del self._ended[jid]
        found = []
        for job in ended_page.values():
            if job.id in active or job.id in self._seen or job.id in self._ended:
                continue
            if job.HasField("current_state_time") and job.current_state_time.ToDatetime(tzinfo=UTC) < horizon:
                continue
            self._ended[job.id] = _now()
            owner = job.labels.get(LABEL)  # a summary without labels: the Job's own check finds it
            if owner and await wanted(owner):
                found.append(Sighting(owner, observation_of(df.Job.wrap(job))))
        return found

    async def _active(self) -> list[RawJob]:
        # As many jobs per page as the service gives (its own limit applies): each page is one request.
        request = {
            "project_id": self._where.project,
            "location": self._where.region,
            "filter": ACTIVE,
            "page_size": 1000,
        }
        try:
            await self._budget.acquire()
            pager = await self._dataflow._clients().jobs.list_jobs(request=request, timeout=self._dataflow._timeout)
            jobs: list[RawJob] = []
            async for page in pager.pages:
                jobs.extend(df.ListJobsResponse.pb(page).jobs)
                if page.next_page_token:
                    await self._budget.acquire()  # the next page is the next request
            return jobs
        except (*TRANSIENT, gexc.GoogleAPICallError) as err:
            raise EngineUnreachable(f"Dataflow API ({self._where}) did not list jobs: {_error_text(err)}") from err


def _submission(where: Where, job: df.Job, adopted: bool) -> Submission:
    return Submission(engine_job_id=job.id, engine_ui_url=console_url(where, job.id), adopted=adopted)


def _unknown(jid: str, last: Observation | None, reason: str) -> Observation:
    """The API could not be read: UNKNOWN, keeping what the last observation knew (type, refusals)."""
    fields = dict(last.started_fields) if last else {}
    fields.update({"dataflowJobId": jid, "observedDataflowJobState": UNKNOWN})
    return Observation(
        engine_job_id=jid,
        phase=EnginePhase.UNKNOWN,
        engine_status=UNKNOWN,
        unreachable_reason=reason,
        observed_at=_now(),
        started_fields=fields,
        refuses=dict(last.refuses) if last else {},
    )


def _artifact(spec: JobSpec, job_id: str) -> FlexTemplateArtifact | ClassicTemplateArtifact:
    artifact = spec.artifact
    if not isinstance(artifact, FlexTemplateArtifact | ClassicTemplateArtifact):
        raise ApplicationError(
            f"Job {job_id}: Dataflow runs FLEX_TEMPLATE or CLASSIC_TEMPLATE artifacts, not {artifact.kind}",
            type="InvalidSpec",
            non_retryable=True,
        )
    return artifact


def _check_job_name(name: str, job_id: str) -> None:
    if not JOB_NAME.fullmatch(name):
        raise ApplicationError(
            f"Job {job_id}: artifact.jobName {name!r} is not a valid Dataflow job name (lower-case letters, "
            "digits and dashes, starting with a letter, not ending with a dash); fix it and start the Job again",
            type="InvalidSpec",
            non_retryable=True,
        )


def _environment(spec: JobSpec, target: DataflowTarget, job_id: str) -> dict[str, Any]:
    """The launch's runtime environment: the artifact's (camelCase or snake_case keys), capped by the
    target's maxWorkers, with this Job's label (how a retried submit finds its job)."""
    artifact = _artifact(spec, job_id)
    env = {_snake(k): v for k, v in artifact.environment.items()}
    labels = dict(env.get("additional_user_labels") or {})
    labels[LABEL] = job_id  # lower-case, 36 chars: a valid label value
    env["additional_user_labels"] = labels
    if target.max_workers is not None:
        wanted = env.get("max_workers")
        if wanted is not None and int(wanted) > target.max_workers:
            raise ApplicationError(
                f"Job {job_id} asks for maxWorkers {wanted} but Deployment Target {target.name} allows at most "
                f"{target.max_workers}; lower artifact.environment.maxWorkers or pick another target",
                type="InvalidSpec",
                non_retryable=True,
            )
        env.setdefault("max_workers", target.max_workers)
    env_type = (
        df.FlexTemplateRuntimeEnvironment if isinstance(artifact, FlexTemplateArtifact) else df.RuntimeEnvironment
    )
    try:
        env_type(env)  # the proto type checks field names and value types
    except (ValueError, TypeError, KeyError) as err:
        raise ApplicationError(
            f"Job {job_id}: artifact.environment is not a valid Dataflow {env_type.__name__}: {err}",
            type="InvalidSpec",
            non_retryable=True,
        ) from err
    return env
