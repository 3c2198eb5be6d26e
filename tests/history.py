"""Stored workflow histories: every change to JobWorkflow must replay them (tests/test_replay.py).

Tests call `record(handle, name)` on the paths they drive; with JOBCTL_RECORD_HISTORIES=1 the history is
written to tests/histories/<name>.json. Re-record only when a history is missing, never to make a replay
failure go away: a failing replay means running workflows would break.
"""

from __future__ import annotations

import os
from pathlib import Path

from temporalio.client import WorkflowHandle

HISTORIES = Path(__file__).parent / "histories"


async def record(handle: WorkflowHandle, name: str) -> None:
    if os.environ.get("JOBCTL_RECORD_HISTORIES") == "1":
        history = await handle.fetch_history()
        HISTORIES.mkdir(exist_ok=True)
        (HISTORIES / f"{name}.json").write_text(history.to_json())
