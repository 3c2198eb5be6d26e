"""Deployment Targets: where Jobs run, declared once in a YAML file (JOBCTL_TARGETS).

targets:
  - {name: local, kind: flink-session, restUrl: "http://localhost:8081", slots: 4}
  - {name: dataflow-local, kind: dataflow, project: demo-project, region: us-central1, maxConcurrentJobs: 25}
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

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


_PLAIN_KEY = re.compile(r"[\w\-/]+")


def field_path(loc: Sequence[int | str]) -> str:
    """A validation error's location as users find it in their file (spec.artifact.jarUri). A key that is empty
    or holds spaces, dots or control characters is quoted: it must neither vanish nor pass for another path."""
    return ".".join(str(p) if isinstance(p, int) or _PLAIN_KEY.fullmatch(p) else repr(p) for p in loc)


def _problem(error: Any, raw: object) -> str:
    """One validation error as the user finds it in the file: `targets.1.flink-session.slots: Input should be
    greater than or equal to 1 (target 'local')`; the path's index counts the entries from 0."""
    loc = tuple(error["loc"])
    said = f"{field_path(loc) or '(top)'}: {error['msg']}"
    if len(loc) < 2 or loc[0] != "targets" or not isinstance(loc[1], int):
        return said
    entry: object = None
    try:
        entry = raw["targets"][loc[1]]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        pass
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"{said} (target {name[:63]!r})" if isinstance(name, str) and name else said


class DocumentError(ValueError):
    """A YAML or JSON file that cannot be read as a document; the message says why (not which file)."""


def read_document(path: Path) -> object:
    """The content of a YAML or JSON file (Deployment Targets, Jobs).

    JSON is read as JSON: YAML would decode its escaped surrogate pairs (json.dumps writes "\\ud83d\\udca5"
    for an emoji) into invalid strings. Raises FileNotFoundError, or DocumentError for anything else.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except UnicodeDecodeError as err:
        raise DocumentError(f"is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise DocumentError(f"cannot be read: {err.strerror or err}") from None
    if text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text)
        except RecursionError:
            raise DocumentError("is nested too deeply") from None
        except ValueError:
            pass  # a YAML flow collection, or broken JSON: YAML says what is wrong
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise DocumentError(f"is not valid YAML or JSON: {err}") from None
    except RecursionError:
        raise DocumentError("is nested too deeply") from None
    except Exception as err:  # PyYAML's constructors raise plain errors for bad scalars (`!!int x`, 2024-13-45)
        raise DocumentError(f"is not valid YAML or JSON: {type(err).__name__}: {err}") from None


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
            raw = read_document(path)
        except FileNotFoundError:
            raise TargetsError(f"Deployment Targets file {path} does not exist; set JOBCTL_TARGETS") from None
        except DocumentError as err:
            raise TargetsError(f"Deployment Targets file {path} {err}") from None
        return cls.parse(raw if raw is not None else {}, str(path))

    @classmethod
    def parse(cls, raw: object, source: str = "<targets>") -> DeploymentTargets:
        try:
            parsed = TargetsFile.model_validate(raw)
        except ValidationError as err:
            problems = "; ".join(_problem(e, raw) for e in err.errors())
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
