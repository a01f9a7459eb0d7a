"""What every stored, tracked stage run shares: request fields, the result shape, the cache.

A stage run is a restartable unit of work over the artifact store: it derives its
content-addressed key from its inputs, returns the committed manifest when one exists (a cache
hit: no model is loaded), and otherwise computes, commits (files first, manifest last) and
logs to MLflow. The three stages hand each other nothing but keys in a store.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from imagic.config import DeviceName, Precision
from imagic.errors import StageNotFoundError
from imagic.storage import ArtifactStore, read_manifest
from imagic.tracking import StageRun, Tracker, TrackingOptions, flatten_params, standard_tags

logger = logging.getLogger("imagic.stages")


class StageRequest(BaseModel):
    """Fields every stage request has: where artifacts live, where it runs, how it is tracked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: str | None = Field(
        None,
        description="Artifact store URI (folder, file:///..., s3://bucket/prefix); "
        "default IMAGIC_STORE or ./imagic-data.",
    )
    device: DeviceName = Field("auto", description="auto, cpu, mps, cuda or cuda:N.")
    precision: Precision = "auto"
    tracking: TrackingOptions = Field(default_factory=TrackingOptions)
    parent_run_id: str | None = Field(
        None, description="MLflow run of the whole edit; the stage logs a nested run under it."
    )


class StageResult(BaseModel):
    """What a stage hands to the next: its key and where its committed outputs are."""

    model_config = ConfigDict(frozen=True)

    stage: str
    key: str
    store: str
    manifest_uri: str
    cached: bool = Field(description="True when the committed output was reused, not computed.")
    mlflow_run_id: str | None = None
    mlflow_run_url: str | None = None
    produced_by_run_id: str | None = Field(
        None, description="The MLflow run that computed the output (differs when cached)."
    )


def require_manifest(store: ArtifactStore, key: str, stage: str, hint: str) -> dict[str, Any]:
    """The committed manifest of an earlier stage, or a clear 'run X first' error."""
    manifest = read_manifest(store, key)
    if manifest is None:
        raise StageNotFoundError(
            f"{stage}_key = {key!r}: no committed {stage} output in store '{store.uri}'. "
            f"Run {stage} first ({hint}), then pass the key it returns."
        )
    if manifest.get("stage") != stage:
        raise StageNotFoundError(
            f"{stage}_key = {key!r}: that key holds a {manifest.get('stage')!r} output, not "
            f"a {stage} output. Pass the key returned by the {stage} step."
        )
    return manifest


def stage_params(request: BaseModel) -> dict[str, str]:
    """Every field of the request, flattened for MLflow (credentials are scrubbed there)."""
    return flatten_params(request.model_dump(mode="json"))


def stage_tags(stage: str, store: ArtifactStore, key: str, **extra: str) -> dict[str, str]:
    """The tags every stage run carries: what it is, its key and URI, and the environment."""
    return {
        **standard_tags(),
        "imagic.stage": stage,
        "imagic.key": key,
        "imagic.uri": store.uri_for(key),
        **{f"imagic.{name}": value for name, value in extra.items()},
    }


def open_stage_run(
    tracker: Tracker, stage: str, request: StageRequest, tags: Mapping[str, str]
) -> contextlib.AbstractContextManager[StageRun]:
    """The stage's MLflow run, nested under the edit's run when the request names one."""
    return tracker.stage_run(
        stage, parent_run_id=request.parent_run_id, params=stage_params(request), tags=tags
    )


def cached_result(
    stage: str,
    store: ArtifactStore,
    key: str,
    manifest: Mapping[str, Any],
    request: StageRequest,
    tracker: Tracker,
    tags: Mapping[str, str],
) -> StageResult:
    """A cache hit still appears in MLflow, tagged as cached and linking the producing run."""
    producer = manifest.get("mlflow_run_id")
    cache_tags = {**tags, "imagic.cached": "true", "imagic.produced_by_run": producer or "none"}
    with open_stage_run(tracker, stage, request, cache_tags) as run:
        pass
    logger.info("%s: cache hit for %s (produced by run %s)", stage, store.uri_for(key), producer)
    return _result(stage, store, key, tracker, run.run_id, cached=True, producer=producer)


def computed_result(
    stage: str, store: ArtifactStore, key: str, run: StageRun, tracker: Tracker
) -> StageResult:
    return _result(stage, store, key, tracker, run.run_id, cached=False, producer=run.run_id)


def _result(
    stage: str,
    store: ArtifactStore,
    key: str,
    tracker: Tracker,
    run_id: str | None,
    *,
    cached: bool,
    producer: str | None,
) -> StageResult:
    return StageResult(
        stage=stage,
        key=key,
        store=store.uri,
        manifest_uri=store.uri_for(f"{key}/manifest.json"),
        cached=cached,
        mlflow_run_id=run_id,
        mlflow_run_url=tracker.run_url(run_id),
        produced_by_run_id=producer,
    )


@contextlib.contextmanager
def work_dir(stage: str) -> Iterator[Path]:
    """A private scratch folder for a stage's files before they are committed to the store."""
    with tempfile.TemporaryDirectory(prefix=f"imagic-{stage}-") as folder:
        yield Path(folder)
