"""Activity errors and results never carry a secret into history.

An engine may echo what it was sent: Dataflow refusing a launch may quote a parameter, a failed pipeline's
error messages may print its options, a proxy in front of Flink may repeat a header. Activity errors and
results are stored in plaintext (they hold no `secretParameters`, so jobctl.codec leaves them alone), so
this worker interceptor replaces, in every activity's error and result, the Job's secret parameter values
and the Deployment Targets' credentials with "***".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from temporalio.exceptions import ApplicationError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from jobctl.models import REDACTED, JobSpec
from jobctl.targets import DeploymentTargets

# Shorter values are not searched for: replacing "true" or "demo" in every message would garble them
# (and hide nothing worth hiding). Such values are still encrypted in payloads.
MIN_LENGTH = 8


class Secrets:
    def __init__(self, values: Iterable[str]) -> None:
        # Longest first, so a value that contains another one is replaced whole.
        self._values = sorted({v for v in values if len(v) >= MIN_LENGTH}, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._values)

    def found_in(self, text: str) -> bool:
        return any(v in text for v in self._values)

    def scrub(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, REDACTED)
        return text

    def scrub_value(self, value: Any) -> Any:
        """A JSON-like value with every string scrubbed."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self.scrub_value(k): self.scrub_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub_value(v) for v in value]
        return value

    def scrub_error(self, err: BaseException) -> ApplicationError | None:
        """A copy of the error without secrets, or None if it holds none. The cause chain is folded into
        the message (Temporal would store each cause's message too)."""
        chain: list[BaseException] = []
        cause: BaseException | None = err
        while cause is not None and cause not in chain:
            chain.append(cause)
            cause = cause.__cause__ or cause.__context__
        details = err.details if isinstance(err, ApplicationError) else ()
        if not any(self.found_in(str(e)) for e in chain) and not self.found_in(repr(details)):
            return None
        # str() of an ApplicationError starts with its type, which the copy gets again.
        message = self.scrub(err.message if isinstance(err, ApplicationError) else str(err))
        for cause in chain[1:]:
            text = self.scrub(str(cause))
            if text and text not in message:
                message += f" (caused by {type(cause).__name__}: {text})"
        if isinstance(err, ApplicationError):
            return ApplicationError(
                message,
                *self.scrub_value(list(details)),
                type=err.type,
                non_retryable=err.non_retryable,
                next_retry_delay=err.next_retry_delay,
                category=err.category,
            )
        # Keeps the type name, so a retry policy's non-retryable error types still match.
        return ApplicationError(message, type=type(err).__name__)

    def scrub_result(self, result: Any) -> Any:
        if isinstance(result, BaseModel):
            dumped = result.model_dump(mode="json", by_alias=True)
            scrubbed = self.scrub_value(dumped)
            return result if scrubbed == dumped else type(result).model_validate(scrubbed)
        return self.scrub_value(result)


def secret_values(args: Iterable[Any]) -> list[str]:
    """The secret parameter values of the Job spec an activity was given, if any."""
    specs = [arg.spec for arg in args if isinstance(getattr(arg, "spec", None), JobSpec)]
    return [value for spec in specs for value in spec.secret_values.values()]


class SecretScrubber(Interceptor):
    """Worker interceptor: scrub every activity's error and result (see the module docstring)."""

    def __init__(self, targets: DeploymentTargets) -> None:
        self._credentials = targets.credentials()

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ScrubbingActivity(next, self._credentials)


class _ScrubbingActivity(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, credentials: set[str]) -> None:
        super().__init__(next)
        self._credentials = credentials

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        secrets = Secrets([*self._credentials, *secret_values(input.args)])
        if not secrets:
            return await self.next.execute_activity(input)
        try:
            result = await self.next.execute_activity(input)
        except Exception as err:
            scrubbed = secrets.scrub_error(err)
            if scrubbed is None:
                raise
            raise scrubbed from None
        return secrets.scrub_result(result)
