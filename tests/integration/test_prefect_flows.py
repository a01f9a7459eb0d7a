"""The Prefect flows against a real `prefect server start`, real process workers, S3 and MLflow.

Runs are created the way the UI creates them (a flow run from a deployment, with parameters),
picked up by `prefect worker start` processes and checked through the same API: the stage runs,
their order, the artifacts, the store and the MLflow server.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterName,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.exceptions import PrefectHTTPStatusError

from tests.conftest import draw_scene
from tests.integration.conftest import PrefectStack
from tests.integration.prefect_runs import (
    STAGE_FLOWS,
    STAGE_NAMES,
    artifacts_of,
    child_runs,
    flow_names,
    small_spec,
    trigger,
    wait_final,
)
from tests.integration.servers import BIN

pytestmark = pytest.mark.slow


def test_deploy_registers_every_deployment_with_typed_parameters_and_the_batch_schedule(
    prefect_client: SyncPrefectClient,
):
    edit = prefect_client.read_deployment_by_name("imagic-edit/imagic-edit")
    schema = edit.parameter_openapi_schema
    spec_fields = schema["definitions"]["EditSpec"]["properties"]
    assert {"image", "text", "model", "optimize", "finetune", "generate"} <= set(spec_fields)
    assert "Target text" in spec_fields["text"]["description"]  # the form shows descriptions
    assert schema["properties"]["placement"]["enum"] == ["local", "deployments"]
    for stage in ("optimize", "finetune", "generate"):
        deployment = prefect_client.read_deployment_by_name(f"imagic-{stage}/{stage}")
        assert deployment.work_pool_name == "imagic-gpu"
        assert deployment.job_variables["gpu_limit"] == 1
    batch = prefect_client.read_deployment_by_name("imagic-batch-edit/batch-edit")
    assert batch.work_pool_name == "imagic-cpu"
    assert [schedule.schedule.cron for schedule in batch.schedules] == ["0 2 * * *"]


def test_ui_triggered_edit_runs_three_stage_runs_in_order_with_artifacts(
    prefect_client: SyncPrefectClient,
    prefect_api: PrefectStack,
    input_uri: str,
    tiny_model_dir: Path,
):
    run = trigger(
        prefect_client, "imagic-edit/imagic-edit", {"spec": small_spec(input_uri, tiny_model_dir)}
    )
    run = wait_final(prefect_client, run.id)
    assert run.state.is_completed(), run.state.message

    children = child_runs(prefect_client, run.id)
    assert flow_names(prefect_client, children) == STAGE_FLOWS
    assert all(child.state.is_completed() for child in children)
    logs = prefect_client.read_logs(
        LogFilter(flow_run_id=LogFilterFlowRunId(any_=[child.id for child in children]))
    )
    messages = [log.message for log in logs]
    for stage in ("optimize step 4/4 loss=", "finetune step 4/4 loss="):  # progress and losses
        assert any(message.startswith(stage) for message in messages), messages

    artifacts = artifacts_of(prefect_client, run.id)
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
    prefect_client: SyncPrefectClient, input_uri: str, tiny_model_dir: Path
):
    parameters = {
        "spec": small_spec(input_uri, tiny_model_dir, text="a red square on the right"),
        "placement": "deployments",
    }
    first = wait_final(
        prefect_client, trigger(prefect_client, "imagic-edit/imagic-edit", parameters).id
    )
    assert first.state.is_completed(), first.state.message
    children = child_runs(prefect_client, first.id)
    assert flow_names(prefect_client, children) == STAGE_FLOWS
    stage_deployments = {
        prefect_client.read_deployment_by_name(f"imagic-{stage}/{stage}").id
        for stage in STAGE_NAMES
    }
    assert {child.deployment_id for child in children} == stage_deployments
    assert stage_rows(artifacts_of(prefect_client, first.id)["markdown"].data) == {
        stage: "no" for stage in STAGE_NAMES
    }

    again = trigger(prefect_client, "imagic-edit/imagic-edit", parameters)
    again = wait_final(prefect_client, again.id)
    assert again.state.is_completed(), again.state.message
    assert stage_rows(artifacts_of(prefect_client, again.id)["markdown"].data) == {
        stage: "yes" for stage in STAGE_NAMES
    }


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
    prefect_client: SyncPrefectClient, tiny_model_dir: Path, change: dict, field: str
):
    deployment = prefect_client.read_deployment_by_name("imagic-edit/imagic-edit")
    before = len(prefect_client.read_flow_runs())
    spec = small_spec("s3://imagic-prefect/none.png", tiny_model_dir, **change)
    with pytest.raises(PrefectHTTPStatusError) as info:
        prefect_client.create_flow_run_from_deployment(deployment.id, parameters={"spec": spec})
    assert info.value.response.status_code == 409
    assert f"Validation failed for field '{field}'" in info.value.response.json()["detail"]
    assert len(prefect_client.read_flow_runs()) == before


def test_placement_deployments_without_stage_deployments_fails_before_any_work(
    prefect_api: PrefectStack,
    monkeypatch: pytest.MonkeyPatch,
    tiny_model_dir: Path,
    tmp_path: Path,
):
    from flows import edit as edit_flow
    from flows.edit import StageDeploymentMissingError, imagic_edit
    from imagic.config import EditSpec

    missing = {**edit_flow.STAGE_DEPLOYMENTS, "finetune": "imagic-finetune/not-deployed"}
    monkeypatch.setattr(edit_flow, "STAGE_DEPLOYMENTS", missing)
    image = tmp_path / "scene.png"
    draw_scene().save(image)
    store = tmp_path / "store"
    spec = EditSpec.model_validate(small_spec(str(image), tiny_model_dir))

    with pytest.raises(StageDeploymentMissingError) as info:
        imagic_edit(spec, placement="deployments", store=str(store))
    message = str(info.value)
    assert "imagic-finetune/not-deployed do not exist" in message
    assert prefect_api.server.api_url in message
    assert "`prefect deploy --name not-deployed`" in message
    assert not store.exists() or not any(store.rglob("manifest.json"))  # no stage ran


def test_worker_killed_during_stage_b_then_rerun_resumes_from_stage_a(
    prefect_client: SyncPrefectClient,
    prefect_api: PrefectStack,
    input_uri: str,
    tiny_model_dir: Path,
):
    spec = small_spec(input_uri, tiny_model_dir, text="a red star", finetune={"steps": 300})
    run = trigger(prefect_client, "imagic-edit/imagic-edit", {"spec": spec})
    wait_for_stage_running(prefect_client, run.id, "imagic-finetune")
    worker = prefect_api.workers["imagic-cpu"]
    worker.kill()  # the node is lost mid-fine-tune: worker and flow-run process die at once
    try:
        assert not prefect_client.read_flow_run(run.id).state.is_completed()
    finally:
        worker.start()

    rerun = wait_final(
        prefect_client, trigger(prefect_client, "imagic-edit/imagic-edit", {"spec": spec}).id
    )
    assert rerun.state.is_completed(), rerun.state.message
    rows = stage_rows(artifacts_of(prefect_client, rerun.id)["markdown"].data)
    assert rows == {"optimize": "yes", "finetune": "no", "generate": "no"}


def wait_for_stage_running(client: SyncPrefectClient, parent, flow_name: str, timeout=240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = child_runs(client, parent)
        running = [
            child
            for child, name in zip(children, flow_names(client, children), strict=True)
            if name == flow_name and child.state is not None and child.state.is_running()
        ]
        if running:
            time.sleep(2)  # well inside the stage's training loop
            return
        time.sleep(0.5)
    raise TimeoutError(f"{flow_name} never ran under flow run {parent}")


def stage_rows(summary_markdown: str) -> dict[str, str]:
    """{stage: cached yes/no} from the edit's summary artifact."""
    rows = {}
    for line in summary_markdown.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells and cells[0] in STAGE_NAMES and len(cells) >= 3:
            rows[cells[0]] = cells[2]
    return rows


def test_imagic_edit_via_prefect_runs_the_edit_flow_on_the_server_and_writes_out(
    prefect_client: SyncPrefectClient, prefect_api: PrefectStack, tiny_model_dir: Path, tmp_path
):
    image = tmp_path / "scene.png"
    draw_scene().save(image)
    text = f"a red circle via prefect {tmp_path.name}"
    command = [
        str(BIN / "imagic"), "edit", "--image", str(image), "--text", text,
        "--model", str(tiny_model_dir), "--steps-a", "3", "--steps-b", "3", "--steps-c", "2",
        "--eta", "0.5", "--seeds", "0", "--store", str(tmp_path / "store"), "--no-tracking",
    ]  # fmt: skip
    env = {**os.environ, **prefect_api.server.env}

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("earlier result")
    refused = subprocess.run(
        [*command, "--out", str(taken), "--via-prefect"], env=env, capture_output=True, text=True
    )
    assert refused.returncode == 2, refused.stderr
    assert "--out" in refused.stderr and (taken / "keep.txt").read_text() == "earlier result"

    out = tmp_path / "out"
    result = subprocess.run(
        [*command, "--out", str(out), "--via-prefect"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert {"grid.png", "manifest.json", "input.png"} <= {path.name for path in out.iterdir()}
    runs = prefect_client.read_flow_runs(
        flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"edit: {text}"]))
    )
    assert len(runs) == 1 and runs[0].state.is_completed()  # only the second command ran it
    assert flow_names(prefect_client, child_runs(prefect_client, runs[0].id)) == STAGE_FLOWS
