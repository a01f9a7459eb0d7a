"""Test helpers that drive Prefect like a user: trigger runs from deployments, wait, inspect."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
)
from prefect.client.schemas.objects import FlowRun

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
