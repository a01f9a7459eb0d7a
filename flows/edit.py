"""The `imagic-edit` flow: stages A -> B -> C as three separate runs, summarized as artifacts.

`placement="local"` runs each stage flow in this process (as a subflow run: three runs in the
Prefect UI, in order). `placement="deployments"` runs each stage as a run of its own
deployment (its own container and GPU work pool) and passes only keys and store URIs; the
stage records its result in the store, where this flow reads it back.

Resuming is free: stage outputs are content-addressed in the store, so rerunning an edit
whose worker died in stage B starts B again from stage A's stored embedding.
"""

from __future__ import annotations

import os
from typing import Literal

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel, ConfigDict, Field

from flows.artifacts import publish_edit_artifacts
from flows.stages import STAGE_DEPLOYMENTS, STAGE_FLOWS, read_recorded_result
from imagic.config import EditSpec
from imagic.edit import EditOutputs, EditRun, export_stages, start_edit
from imagic.errors import ImagicError
from imagic.outputs import check_output_dir
from imagic.stages import StageRequest, StageResult
from imagic.storage import open_store, read_manifest
from imagic.tracking import TrackingOptions

Placement = Literal["local", "deployments"]
DEPLOYMENT_POLL_S = 2.0
"""How often the edit flow asks the server whether a stage's deployment run finished."""


class StageDeploymentMissingError(ImagicError):
    """placement='deployments' needs the stage deployments, which are not on the server."""


class StageRunFailedError(Exception):
    """A stage's deployment run ended in a state other than Completed."""


class EditImage(BaseModel):
    eta: float
    seed: int
    uri: str


class EditSummary(BaseModel):
    """What an edit produced and where to find it: store URIs, the MLflow run, the images."""

    model_config = ConfigDict(frozen=True)

    spec: EditSpec
    placement: Placement
    store: str
    stages: dict[str, StageResult]
    grid_uri: str
    grid_url: str | None = Field(None, description="Download URL of the grid on MLflow's server.")
    images: list[EditImage]
    mlflow_run_id: str | None
    mlflow_run_url: str | None


@flow(name="imagic-edit", flow_run_name="edit: {spec.text}", persist_result=False)
def imagic_edit(
    spec: EditSpec,
    placement: Placement = "local",
    store: str | None = None,
    tracking: TrackingOptions = TrackingOptions(),  # noqa: B008  (immutable pydantic model)
) -> EditSummary:
    """One Imagic edit: optimize the embedding, fine-tune the model, generate the eta sweep.

    Args:
        spec: the input image (path or s3:// URI), the target text, the model and the
            parameters of the three stages.
        placement: `local` runs the stages in the flow's own process; `deployments` runs
            each stage as its own deployment (`imagic-optimize/optimize`, ...) on a GPU pool.
        store: artifact store URI (s3://bucket/prefix or a folder); default IMAGIC_STORE.
        tracking: MLflow tracking options (server URI, experiment, required or not).
    """
    if placement == "deployments":
        check_stage_deployments()
    edit = start_edit(spec, store=store, tracking=tracking, check_device=placement == "local")
    try:
        stages = run_stages(edit, placement)
        summary = summarize(edit, placement, stages)
        publish_edit_artifacts(summary)
    except BaseException:
        edit.finish(failed=True)
        raise
    edit.finish()
    return summary


def run_stages(edit: EditRun, placement: Placement) -> dict[str, StageResult]:
    """A -> B -> C, each stage handed nothing but the previous stage's key."""
    run_stage = _run_stage_in_process if placement == "local" else _run_stage_deployment
    optimized = run_stage("optimize", edit.optimize_request())
    tuned = run_stage("finetune", edit.finetune_request(optimized.key))
    generated = run_stage("generate", edit.generate_request(tuned.key))
    return {"optimize": optimized, "finetune": tuned, "generate": generated}


def _run_stage_in_process(stage: str, request: StageRequest) -> StageResult:
    return STAGE_FLOWS[stage](request)


def _run_stage_deployment(stage: str, request: StageRequest) -> StageResult:
    name = STAGE_DEPLOYMENTS[stage]
    get_run_logger().info("%s: starting a run of deployment %s", stage, name)
    child = run_deployment(
        name,
        parameters={"request": request.model_dump(mode="json")},
        timeout=None,
        poll_interval=DEPLOYMENT_POLL_S,
    )
    if child.state is None or not child.state.is_completed():
        state = child.state.name if child.state else "unknown"
        message = child.state.message if child.state else ""
        raise StageRunFailedError(
            f"stage {stage}: deployment run {child.name} ({child.id}) of {name} ended "
            f"{state}: {message}. Its logs are in the Prefect UI; rerun this edit to resume "
            "from the last stage that finished."
        )
    return read_recorded_result(open_store(request.store), str(child.id))


def check_stage_deployments() -> None:
    """Fail before any work when a stage deployment is missing, naming it and the fix."""
    with get_client(sync_client=True) as client:
        missing = []
        for name in STAGE_DEPLOYMENTS.values():
            try:
                client.read_deployment_by_name(name)
            except ObjectNotFound:
                missing.append(name)
        api_url = client.api_url
    if missing:
        deployment_names = " ".join(f"--name {name.split('/')[1]}" for name in missing)
        raise StageDeploymentMissingError(
            f"placement = 'deployments': deployment(s) {', '.join(missing)} do not exist on "
            f"the Prefect server at {api_url}. Create them from the repository root with "
            f"`prefect deploy {deployment_names}` (or `prefect deploy --all`), or use "
            "placement = 'local'."
        )


def summarize(edit: EditRun, placement: Placement, stages: dict[str, StageResult]) -> EditSummary:
    """The edit's outputs, as URIs in the store and links to MLflow."""
    generated = stages["generate"]
    manifest = read_manifest(edit.store, generated.key) or {}
    uri = edit.store.uri_for
    images = [
        EditImage(eta=item["eta"], seed=item["seed"], uri=uri(f"{generated.key}/{item['file']}"))
        for item in manifest.get("images", [])
    ]
    grid_file = manifest.get("grid", {}).get("file", "grid.png")
    return EditSummary(
        spec=edit.spec,
        placement=placement,
        store=edit.store.uri,
        stages=stages,
        grid_uri=uri(f"{generated.key}/{grid_file}"),
        grid_url=edit.tracker.artifact_url(generated.produced_by_run_id, grid_file),
        images=images,
        mlflow_run_id=edit.parent_run_id,
        mlflow_run_url=edit.run_url,
    )


def run_edit_via_prefect(
    spec: EditSpec,
    out_dir: str | os.PathLike[str],
    *,
    placement: Placement = "local",
    store: str | None = None,
    tracking: TrackingOptions | None = None,
    overwrite: bool = False,
) -> tuple[EditSummary, EditOutputs]:
    """`imagic edit --via-prefect`: the `imagic-edit` flow, then its result exported to out_dir.

    The flow runs in this process against PREFECT_API_URL (a temporary local server when it is
    unset), so the edit and its three stage runs appear in the Prefect UI like any other.
    """
    check_output_dir(out_dir, overwrite=overwrite)
    summary = imagic_edit(
        spec, placement=placement, store=store, tracking=tracking or TrackingOptions()
    )
    outputs = export_stages(
        spec,
        open_store(summary.store),
        summary.stages,
        out_dir,
        overwrite=overwrite,
        run_id=summary.mlflow_run_id,
        run_url=summary.mlflow_run_url,
    )
    return summary, outputs
