"""Stored workflow histories: every change to JobWorkflow must replay them (tests/test_replay.py).

Tests call `record(handle, name)` on the paths they drive; with JOBCTL_RECORD_HISTORIES=1 the history is
written to tests/histories/<name>.json. Re-record only when a history is missing, never to make a replay
failure go away: a failing replay means running workflows would break.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHandle

HISTORIES = Path(__file__).parent / "histories"


async def record(handle: WorkflowHandle, name: str) -> None:
    if os.environ.get("JOBCTL_RECORD_HISTORIES") == "1":
        history = await handle.fetch_history()
        HISTORIES.mkdir(exist_ok=True)
        (HISTORIES / f"{name}.json").write_text(history.to_json())


def local_activity_type(event: HistoryEvent) -> str | None:
    """The activity a local activity's marker records (a quick step, as the web UI shows it), or None for any
    other event."""
    marker = event.marker_recorded_event_attributes
    if event.event_type != EventType.EVENT_TYPE_MARKER_RECORDED or marker.marker_name != "core_local_activity":
        return None
    if "data" not in marker.details:
        return None
    return str(json.loads(marker.details["data"].payloads[0].data)["activity_type"])
