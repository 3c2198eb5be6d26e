"""No stored history holds a credential, a token or a secret parameter in plaintext."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.history import HISTORIES
from tests.secrets.scan import findings

STORED = sorted(HISTORIES.rglob("*.json"))
# The values the secret tests use: none may ever be stored (see test_secret_jobs.py, test_scrubber.py).
TEST_SECRETS = ["s3cr3t-db-password-7f3a", "tok-9c1e5b2d7a", "launch-refused-secret-4d2c"]


def test_there_are_stored_histories() -> None:
    assert len(STORED) >= 10


@pytest.mark.parametrize("path", STORED, ids=[str(p.relative_to(HISTORIES)) for p in STORED])
def test_stored_history_holds_no_secrets(path: Path) -> None:
    found = findings(json.loads(path.read_text()), TEST_SECRETS)
    assert not found, f"{path.relative_to(HISTORIES.parent.parent)}:\n  " + "\n  ".join(found)


def test_the_scan_finds_what_it_looks_for() -> None:
    """The scan itself: a history with a header, a token, a key and a plaintext secret parameter."""
    import base64

    def payload(value: object) -> dict[str, object]:
        return {
            "metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
            "data": base64.b64encode(json.dumps(value).encode()).decode(),
        }

    history = {
        "events": [
            {"eventId": "1", "eventType": "A", "input": {"payloads": [payload({"secretParameters": {"pw": "x"}})]}},
            {"eventId": "2", "eventType": "B", "failure": {"message": "401 for Authorization: Bearer abcdefgh1234"}},
            {"eventId": "3", "eventType": "C", "result": {"payloads": [payload("-----BEGIN PRIVATE KEY-----")]}},
            {"eventId": "4", "eventType": "D", "failure": {"message": 'config {"password": "hunter22"}'}},
            {"eventId": "5", "eventType": "E", "failure": {"message": f"refused {TEST_SECRETS[0]}"}},
            {"eventId": "6", "eventType": "F", "result": {"payloads": [payload({"secretParameters": {"pw": "***"}})]}},
        ]
    }
    found = "\n".join(findings(history, TEST_SECRETS))
    for event in ("event 1 (A): secretParameters", "event 2 (B): an Authorization", "event 2 (B): a bearer token"):
        assert event in found
    assert "event 3 (C): a private key" in found
    assert "event 4 (D): a password" in found
    assert "event 5 (E): the secret value" in found
    assert "event 6" not in found  # "***" is what a secret looks like once redacted
