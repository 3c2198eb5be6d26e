"""Finding secrets in a Temporal history (JSON, as `WorkflowHistory.to_json()` writes it): every string of
every event, with payloads base64-decoded, searched for secret-looking text. Encrypted payloads are opaque
bytes and are searched only for the exact values given."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from jobctl.codec import holds_secrets

# Text that is a credential, whatever its value: never legitimate in a Job's history.
PATTERNS = {
    "an Authorization header": re.compile(r"\bAuthorization\b\s*[\"']?\s*[:=]", re.IGNORECASE),
    "a bearer token": re.compile(r"\bBearer\s+[A-Za-z0-9\-._~+/]{8,}=*"),
    "a basic-auth token": re.compile(r"\bBasic\s+[A-Za-z0-9+/]{12,}=*"),
    "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "a password, token or key value": re.compile(
        r"[\"']?\b(password|passwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|client[_-]?secret)\b"
        r"[\"']?\s*[:=]\s*[\"']?(?!\*\*\*)[^\s\"',}]{4,}",
        re.IGNORECASE,
    ),
    "credentials in a URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@\"']+:[^/\s@\"']+@", re.IGNORECASE),
    "an AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "a GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),
}


def _strings(value: Any) -> Iterator[str]:
    """Every string in an event; a payload's data and metadata decoded from base64."""
    if isinstance(value, dict):
        if "data" in value and "metadata" in value and isinstance(value["data"], str):
            raw = _b64(value["data"])
            yield raw.decode("utf-8", errors="replace")
            for key, meta in value["metadata"].items():
                yield f"{key}: {_b64(meta).decode('utf-8', errors='replace')}"
            return
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text.encode()


def _describe(text: str, start: int, end: int) -> str:
    # Show where, not the whole secret: the test output is a log too.
    return repr(text[max(0, start - 30) : start + min(end - start, 12)] + "...")


def findings(history: dict[str, Any], values: Iterable[str] = ()) -> list[str]:
    """What looks secret in a history: one line per finding naming the event."""
    values = [v for v in values if v]
    found: list[str] = []
    for event in history.get("events", []):
        where = f"event {event.get('eventId')} ({event.get('eventType')})"
        for text in _strings(event):
            for value in values:
                if value in text:
                    found.append(f"{where}: the secret value {value[:4]}... in {_describe(text, text.index(value), 0)}")
            for what, pattern in PATTERNS.items():
                if match := pattern.search(text):
                    found.append(f"{where}: {what}: {_describe(text, match.start(), match.end())}")
            if "ecret" in text:
                try:
                    if holds_secrets(json.loads(text)):
                        found.append(f"{where}: secretParameters in plaintext")
                except ValueError:
                    pass
    return found
