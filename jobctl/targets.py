"""Deployment Targets: where Jobs run, declared once in a YAML file (JOBCTL_TARGETS).

targets:
  - {name: local, kind: flink-session, restUrl: "http://localhost:8081", slots: 4}
  - {name: dataflow-local, kind: dataflow, project: demo-project, region: us-central1, maxConcurrentJobs: 25}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import httpx
import yaml
from pydantic import Field, HttpUrl, SecretStr, ValidationError, field_validator, model_validator

from jobctl.models import Input


class FlinkSessionTarget(Input):
    name: str = Field(min_length=1, max_length=63)
    kind: Literal["flink-session"] = "flink-session"
    rest_url: HttpUrl
    slots: int = Field(ge=1, le=1_000_000, description="slots jobctl may use on this cluster")
    # Where savepoints go; unset: the cluster's execution.checkpointing.savepoint-dir.
    savepoint_dir: str | None = None
    # The Flink web UI address users can open (defaults to restUrl, where Flink serves it too).
    web_ui_url: HttpUrl | None = None
    # HTTP headers sent with every REST call, e.g. {Authorization: "Bearer ..."} for a cluster behind an
    # authenticating proxy. They live only here, in the worker's targets file: activities add them on the
    # wire (see DeploymentTargets.add_credentials), so no Job, activity input or result ever holds them.
    headers: dict[str, SecretStr] = Field(default_factory=dict)

    @field_validator("rest_url", "web_ui_url")
    @classmethod
    def _no_credentials_in_url(cls, url: HttpUrl | None) -> HttpUrl | None:
        # URLs appear in status (engine UI link) and in error messages: a password or token in one would too.
        if url is not None and (url.username or url.password or url.query):
            raise ValueError("must not hold a user, password or query string; put credentials in `headers`")
        return url

    @property
    def base_url(self) -> str:
        return str(self.rest_url).rstrip("/")

    @property
    def ui_url(self) -> str:
        return str(self.web_ui_url or self.rest_url).rstrip("/")


class DataflowTarget(Input):
    name: str = Field(min_length=1, max_length=63)
    kind: Literal["dataflow"] = "dataflow"
    project: str = Field(min_length=1)
    region: str = Field(min_length=1)
    max_concurrent_jobs: int = Field(default=25, ge=1)
    max_workers: int | None = Field(default=None, ge=1)


Target = Annotated[FlinkSessionTarget | DataflowTarget, Field(discriminator="kind")]


class TargetsFile(Input):
    targets: list[Target] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> TargetsFile:
        seen: set[str] = set()
        for target in self.targets:
            if target.name in seen:
                raise ValueError(f"Deployment Target {target.name!r} is declared twice")
            seen.add(target.name)
        return self


class TargetsError(ValueError):
    """The Deployment Targets file is missing or invalid; the message says where and what to fix."""


class UnknownTarget(LookupError):
    pass


class DeploymentTargets:
    def __init__(self, targets: list[FlinkSessionTarget | DataflowTarget], source: str = "") -> None:
        self._by_name = {t.name: t for t in targets}
        self.source = source

    @classmethod
    def load(cls, path: str | Path) -> DeploymentTargets:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise TargetsError(f"Deployment Targets file {path} does not exist; set JOBCTL_TARGETS") from None
        except yaml.YAMLError as err:
            raise TargetsError(f"Deployment Targets file {path} is not valid YAML: {err}") from None
        return cls.parse(raw if raw is not None else {}, str(path))

    @classmethod
    def parse(cls, raw: object, source: str = "<targets>") -> DeploymentTargets:
        try:
            parsed = TargetsFile.model_validate(raw)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in err.errors())
            raise TargetsError(f"Deployment Targets file {source} is invalid: {problems}") from None
        return cls(list(parsed.targets), source)

    def get(self, name: str) -> FlinkSessionTarget | DataflowTarget:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise UnknownTarget(
                f"Deployment Target {name!r} is not declared (known targets: {known}); "
                f"declare it in {self.source or 'the targets file'} or pick a known one"
            ) from None

    def all(self) -> list[FlinkSessionTarget | DataflowTarget]:
        return list(self._by_name.values())

    def credentials(self) -> set[str]:
        """Every credential the targets file holds (header values, and a header's token without its
        scheme, e.g. after "Bearer "): what must never show in a message or result."""
        found: set[str] = set()
        for target in self._by_name.values():
            for value in getattr(target, "headers", {}).values():
                secret = value.get_secret_value()
                found.update({secret, secret.split()[-1]} if secret.strip() else set())
        return found

    async def add_credentials(self, request: httpx.Request) -> None:
        """httpx request hook: the headers of the Flink target whose REST URL the request goes to."""
        url = str(request.url)
        for target in self._by_name.values():
            if isinstance(target, FlinkSessionTarget) and target.headers:
                if url == target.base_url or url.startswith(target.base_url + "/"):
                    request.headers.update({k: v.get_secret_value() for k, v in target.headers.items()})
