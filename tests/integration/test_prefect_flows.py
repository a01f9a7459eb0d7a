"""The Prefect flows against a real `prefect server start`, real process workers, S3 and MLflow.

Runs are created the way the UI creates them (a flow run from a deployment, with parameters),
picked up by `prefect worker start` processes and checked through the same API: the stage runs,
their order, the artifacts, the store and the MLflow server.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
)
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import PrefectHTTPStatusError

from tests.conftest import draw_scene
from tests.integration.conftest import PrefectStack

pytestmark = pytest.mark.slow

STAGE_NAMES = ("optimize", "finetune", "generate")
STAGE_FLOWS = [f"imagic-{stage}" for stage in STAGE_NAMES]


def small_spec(image: str, model: Path, text: str = "a red circle", **overrides: Any) -> dict:
    spec = {
        "image": image,
        "text": text,
        "model": str(model),
        "optimize": {"steps": 4},
        "finetune": {"steps": 4},
        "generate": {"num_inference_steps": 2, "etas": [0.0, 0.7], "seeds": [0]},
        "device": "cpu",
    }
    return {**spec, **overrides}


@pytest.fixture
def client(prefect_api: PrefectStack) -> SyncPrefectClient:
    with get_client(sync_client=True) as client:
        yield client


@pytest.fixture
def input_uri(prefect_api: PrefectStack, tmp_path: Path) -> str:
    """The input image in the stack's bucket, as a user would upload it."""
    path = tmp_path / "scene.png"
    draw_scene().save(path)
    key = f"inputs/{tmp_path.name}/scene.png"
    prefect_api.s3.client().upload_file(str(path), "imagic-prefect", key)
    return f"s3://imagic-prefect/{key}"


def trigger(client: SyncPrefectClient, deployment: str, parameters: dict) -> FlowRun:
    """What the UI's "Run" button does: a flow run of the deployment with these parameters."""
    found = client.read_deployment_by_name(deployment)
    return client.create_flow_run_from_deployment(found.id, parameters=parameters)


def wait_final(client: SyncPrefectClient, run_id: UUID, timeout: float = 420) -> FlowRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(1)
    raise TimeoutError(f"flow run {run_id} did not finish in {timeout} s")


def child_runs(client: SyncPrefectClient, parent: UUID) -> list[FlowRun]:
    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent])
        )
    )
    return sorted(runs, key=lambda run: run.start_time or run.expected_start_time)


def flow_names(client: SyncPrefectClient, runs: list[FlowRun]) -> list[str]:
    return [client.read_flow(run.flow_id).name for run in runs]


def artifacts_of(client: SyncPrefectClient, run_id: UUID) -> dict[str, Any]:
    found = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
    )
    return {artifact.type: artifact for artifact in found}


def test_deploy_registers_every_deployment_with_typed_parameters_and_the_batch_schedule(
    client: SyncPrefectClient,
):
    edit = client.read_deployment_by_name("imagic-edit/imagic-edit")
    schema = edit.parameter_openapi_schema
    spec_fields = schema["definitions"]["EditSpec"]["properties"]
    assert {"image", "text", "model", "optimize", "finetune", "generate"} <= set(spec_fields)
    assert "Target text" in spec_fields["text"]["description"]  # the form shows descriptions
    assert schema["properties"]["placement"]["enum"] == ["local", "deployments"]
    for stage in ("optimize", "finetune", "generate"):
        deployment = client.read_deployment_by_name(f"imagic-{stage}/{stage}")
        assert deployment.work_pool_name == "imagic-gpu"
        assert deployment.job_variables["gpu_limit"] == 1
    batch = client.read_deployment_by_name("imagic-batch-edit/batch-edit")
    assert batch.work_pool_name == "imagic-cpu"
    assert [schedule.schedule.cron for schedule in batch.schedules] == ["0 2 * * *"]


def test_ui_triggered_edit_runs_three_stage_runs_in_order_with_artifacts(
    client: SyncPrefectClient, prefect_api: PrefectStack, input_uri: str, tiny_model_dir: Path
):
    run = trigger(
        client, "imagic-edit/imagic-edit", {"spec": small_spec(input_uri, tiny_model_dir)}
    )
    run = wait_final(client, run.id)
    assert run.state.is_completed(), run.state.message

    children = child_runs(client, run.id)
    assert flow_names(client, children) == STAGE_FLOWS
    assert all(child.state.is_completed() for child in children)

    artifacts = artifacts_of(client, run.id)
    summary = artifacts["markdown"].data
    mlflow_url = prefect_api.mlflow.tracking_uri
    assert f"]({mlflow_url}/#/experiments/" in summary  # links the MLflow run
    assert "a red circle" in summary and input_uri in summary
    rows = json.loads(artifacts["table"].data)
    assert sorted((row["eta"], row["seed"]) for row in rows) == [(0.0, 0), (0.7, 0)]
    assert all(row["uri"].startswith(prefect_api.store) for row in rows)
    with urllib.request.urlopen(artifacts["image"].data, timeout=30) as response:
        assert response.read(8) == b"\x89PNG\r\n\x1a\n"  # the grid, served by MLflow


def test_placement_deployments_runs_each_stage_as_its_own_deployment_and_reruns_are_cached(
    client: SyncPrefectClient, input_uri: str, tiny_model_dir: Path
):
    parameters = {
        "spec": small_spec(input_uri, tiny_model_dir, text="a red square on the right"),
        "placement": "deployments",
    }
    first = wait_final(client, trigger(client, "imagic-edit/imagic-edit", parameters).id)
    assert first.state.is_completed(), first.state.message
    children = child_runs(client, first.id)
    assert flow_names(client, children) == STAGE_FLOWS
    stage_deployments = {
        client.read_deployment_by_name(f"imagic-{stage}/{stage}").id for stage in STAGE_NAMES
    }
    assert {child.deployment_id for child in children} == stage_deployments
    assert "| optimize |" in artifacts_of(client, first.id)["markdown"].data
    assert "| no |" in artifacts_of(client, first.id)["markdown"].data

    again = wait_final(client, trigger(client, "imagic-edit/imagic-edit", parameters).id)
    assert again.state.is_completed(), again.state.message
    summary = artifacts_of(client, again.id)["markdown"].data
    cached = [line for line in summary.splitlines() if line.startswith("| ") and "`" in line]
    stage_lines = [line for line in cached if line.split("|")[1].strip() in STAGE_NAMES]
    assert len(stage_lines) == 3 and all("| yes |" in line for line in stage_lines)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"optimize": {"steps": 0}}, "spec.optimize.steps"),
        ({"generate": {"etas": [0.5, 2.0]}}, "spec.generate.etas[1]"),
        ({"generate": {"seeds": [1, 1]}}, "spec.generate.seeds"),
        ({"text": None}, "spec.text"),
    ],
)
def test_invalid_parameters_are_refused_per_field_and_no_run_starts(
    client: SyncPrefectClient, tiny_model_dir: Path, change: dict, field: str
):
    deployment = client.read_deployment_by_name("imagic-edit/imagic-edit")
    before = len(client.read_flow_runs())
    spec = small_spec("s3://imagic-prefect/none.png", tiny_model_dir, **change)
    with pytest.raises(PrefectHTTPStatusError) as info:
        client.create_flow_run_from_deployment(deployment.id, parameters={"spec": spec})
    assert info.value.response.status_code == 409
    assert f"Validation failed for field '{field}'" in info.value.response.json()["detail"]
    assert len(client.read_flow_runs()) == before
