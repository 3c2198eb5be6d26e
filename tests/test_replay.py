"""Every stored history replays on today's JobWorkflow: a change that would break running Jobs fails here."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.history import HISTORIES
from workflows.deployment_target import DeploymentTargetWorkflow
from workflows.job import JobWorkflow
from workflows.target_watch import DeploymentTargetWatchWorkflow

# tests/histories/v1/: recorded before Deployment Target leases (the patched-out acquire path).
# tests/histories/v2/: recorded before Deployment Target watchers (Jobs long-poll their engine job).
# tests/histories/v3/, v4/: recorded before asks by update, and before quick steps as local activities.
# tests/histories/v5/: recorded before one marker (CURRENT_PATCH) stood for every patch of a new run.
# tests/histories/v6/: recorded before a watched Job's cancel was ended by the watcher's push (generation 2).
# tests/histories/v7/: recorded before a watched Job kept one check timer until it fires (generation 3).
# tests/histories/v8/: recorded before the ask for Deployment Target resources was a quick step (generation 4).
STORED = sorted(HISTORIES.rglob("*.json"))

# The paths the stored histories must cover; adding a path means recording its history too.
REQUIRED = {
    "flink_start_cancel",
    "flink_cancel_by_push",
    "flink_finished",
    "flink_failed",
    "flink_drain",
    "flink_update",
    "flink_cancel_starting",
    "flink_drain_overtaken_by_cancel",
    "flink_malformed_signals",
    "in_place_update",
    "continue_as_new",
    "real_flink_drain",
    "real_flink_update",
    "real_flink_failed",
    "real_dataflow_drain",
    "real_dataflow_update",
    "lease_reclaimed_waiter",
    "ledger_fifo",
    "flink_update_handover",
    "in_place_update_handover",
    "watched_continue_as_new",
    "real_dataflow_failed",
    "real_dataflow_outage_cancel",
    "ledger_dataflow",
    "ledger_continue_as_new",
}


def workflow_id_of(history: dict) -> str:  # type: ignore[type-arg]
    """JobWorkflow checks that its workflow id is job-<metadata.id>: replay under the id it ran with."""
    started = history["events"][0]["workflowExecutionStartedEventAttributes"]
    first = json.loads(base64.b64decode(started["input"]["payloads"][0]["data"]))
    if "ledger" in first:  # a DeploymentTargetWorkflow
        return f"deployment-target-{first['ledger']['target']}"
    if "metadata" not in first:  # a DeploymentTargetWatchWorkflow
        return f"watch-deployment-target-{first['target']}"
    return f"job-{first['metadata']['id']}"


def test_every_required_path_has_a_stored_history() -> None:
    current = {p.stem for p in HISTORIES.glob("*.json")}
    assert REQUIRED <= current, f"record {REQUIRED - current}: JOBCTL_RECORD_HISTORIES=1 pytest"


@pytest.mark.parametrize("path", STORED, ids=[str(p.relative_to(HISTORIES)) for p in STORED])
async def test_history_replays(path: Path) -> None:
    raw = json.loads(path.read_text())
    history = WorkflowHistory.from_json(workflow_id_of(raw), raw)
    replayer = Replayer(
        workflows=[JobWorkflow, DeploymentTargetWorkflow, DeploymentTargetWatchWorkflow],
        data_converter=pydantic_data_converter,
    )
    await replayer.replay_workflow(history)
