"""A Job reaches the engine of its Deployment Target, or gets a clear, non-retryable reason why not."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError

from activities.dataflow import DataflowEngine
from activities.flink import FlinkEngine
from activities.job import JobActivities
from jobctl.models import JobSpec
from jobctl.targets import DeploymentTargets

TARGETS = DeploymentTargets.parse(
    {
        "targets": [
            {"name": "local", "kind": "flink-session", "restUrl": "http://127.0.0.1:1", "slots": 1},
            {"name": "df", "kind": "dataflow", "project": "p", "region": "r"},
        ]
    }
)
FLINK = {"engine": "FLINK", "artifact": {"kind": "JAR", "jarUri": "/job.jar"}}
DATAFLOW = {
    "engine": "DATAFLOW",
    "artifact": {"kind": "FLEX_TEMPLATE", "jobName": "a", "containerSpecGcsPath": "gs://b"},
}


@pytest.mark.parametrize(
    ("spec", "target", "engine"), [(FLINK, "local", FlinkEngine), (DATAFLOW, "df", DataflowEngine)]
)
async def test_each_engine_runs_on_its_own_kind_of_target(spec: dict, target: str, engine: type) -> None:  # type: ignore[type-arg]
    activities = JobActivities(TARGETS)
    try:
        eng, found = activities._target("j", JobSpec.model_validate({**spec, "deploymentTargetName": target}))
        assert isinstance(eng, engine) and found.name == target
    finally:
        await activities.close()


@pytest.mark.parametrize(("spec", "target"), [(FLINK, "df"), (DATAFLOW, "local")])
async def test_an_engine_on_the_wrong_kind_of_target_is_refused_with_the_reason(spec: dict, target: str) -> None:  # type: ignore[type-arg]
    activities = JobActivities(TARGETS)
    try:
        with pytest.raises(ApplicationError) as err:
            activities._target("j", JobSpec.model_validate({**spec, "deploymentTargetName": target}))
        assert err.value.non_retryable and err.value.type == "InvalidSpec"
        assert f"cannot run on Deployment Target {target}" in err.value.message
    finally:
        await activities.close()
