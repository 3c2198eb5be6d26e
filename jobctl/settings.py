"""Worker and CLI settings from the environment (the Temporal connection itself comes from
temporalio.envconfig: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS_*, profiles)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobctl.codec import parse_keys


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JOBCTL_", extra="ignore")

    task_queue: str = "jobctl"
    targets: str = Field(default="targets.yaml", description="path of the Deployment Targets file")
    # How often a Job that observes its engine job by itself looks at it (Jobs outside what their
    # Deployment Target's watcher surveys, and Jobs started before watchers existed).
    poll_interval_seconds: float = Field(default=2.0, gt=0)
    # How often a Deployment Target's watcher surveys all its engine jobs: the delay between a change in
    # the engine and the Job's status is at most about this plus a second.
    watch_interval_seconds: float = Field(default=1.0, gt=0)
    # The most engine API requests per second a watcher sends to one Deployment Target, whatever its number
    # of jobs (per worker process that runs the watcher; Temporal runs one watcher per target).
    engine_requests_per_second: float = Field(default=4.0, ge=1)
    # How often a Deployment Target's ledger looks for leases held by Jobs that closed without releasing
    # them (an operator's `temporal workflow terminate`): the bound on how long a leaked lease lives.
    lease_reclaim_interval_seconds: float = Field(default=60.0, gt=0)
    # Asks a worker has waiting on one Deployment Target's ledger by update at once (each is answered in the
    # ledger's next round); the rest of a burst waits up to 5 s for a turn, then asks by signal (and hears
    # back by signal, which costs more). Temporal holds 10 updates in flight per workflow by default
    # (history.maxInFlightUpdates): keep workers x this within it, or an ask beyond it fails and is retried.
    # 0: every Job asks by signal.
    asks_by_update_per_target: int = Field(default=5, ge=0)
    # Job workflows a worker keeps in memory between their workflow tasks; one not kept is replayed from
    # its history on its next task (a change in its engine job, a request). Memory grows with it.
    workflow_cache_size: int = Field(default=1000, ge=0)
    # Run the workflows in the Temporal SDK's sandbox. The sandbox re-imports a workflow's module for every
    # workflow instance it builds and swaps the import machinery on every workflow task, which cost a busy
    # worker a fifth of its CPU. jobctl's workflows are its own code: the tests run them sandboxed (which
    # catches a non-deterministic call) and replay recorded histories, so the worker runs them unsandboxed.
    workflow_sandbox: bool = False
    # Timeout of one engine API call.
    engine_timeout_seconds: float = Field(default=30.0, gt=0)
    # Fernet keys (comma-separated, the first encrypts) for secret parameters: see jobctl/codec.py.
    codec_key: SecretStr | None = None

    def codec_keys(self) -> list[str]:
        return parse_keys(self.codec_key.get_secret_value() if self.codec_key else None)
