"""One complete Imagic edit: the three stored stages in sequence, exported to a folder.

This is what `imagic edit` runs. Every stage goes through the artifact store (a local folder by
default), so a rerun is all cache hits, an eta re-sweep repeats only stage C, and a crashed
edit resumes where it stopped. One MLflow parent run covers the edit, with a nested run per
stage. The user-facing result is then exported to `out_dir` (written all-or-nothing, see
`imagic.outputs`); the fine-tuned weights stay in the store, referenced by URI.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import imagic
from imagic.config import EditSpec
from imagic.device import resolve_runtime
from imagic.images import read_image
from imagic.method import ProgressCallback
from imagic.models import check_scheduler_for_model
from imagic.outputs import check_output_dir, staged_output_dir
from imagic.stages import (
    FinetuneRequest,
    GenerateRequest,
    OptimizeRequest,
    StageResult,
    run_finetune,
    run_generate,
    run_optimize,
)
from imagic.stages.optimize import EMBEDDINGS_FILE, INPUT_FILE, LOSSES_FILE, read_input_image_bytes
from imagic.storage import ArtifactStore, fetch_file, file_sha256, open_store, read_manifest
from imagic.toyworld.shipped import resolve_model, warn_unknown_words_for
from imagic.tracking import (
    Tracker,
    TrackingOptions,
    flatten_params,
    open_tracker,
    standard_tags,
)

MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class EditOutputs:
    """Where the committed result lives, locally and in the store and MLflow."""

    out_dir: Path
    manifest: dict[str, Any]
    stages: dict[str, StageResult]
    mlflow_run_id: str | None
    mlflow_run_url: str | None

    @property
    def grid(self) -> Path:
        return self.out_dir / self.manifest["grid"]["file"]

    @property
    def images(self) -> list[Path]:
        return [self.out_dir / item["file"] for item in self.manifest["images"]]


@dataclass(frozen=True)
class EditRun:
    """An edit whose inputs were checked and whose MLflow parent run is open.

    `run_edit` and the Prefect flows (`flows.edit`) both start edits this way, so the checks,
    the parent run and the three stage requests are built in one place.
    """

    spec: EditSpec
    store: ArtifactStore
    tracking: TrackingOptions
    tracker: Tracker
    parent_run_id: str | None

    def _common(self) -> dict[str, Any]:
        """What every stage request shares. The store and the MLflow server are resolved
        here, so a stage that runs elsewhere (a container, another pool) needs neither
        IMAGIC_STORE nor MLFLOW_TRACKING_URI to log to the same places."""
        tracking, resolved = self.tracking, self.tracker.tracking_uri
        # A URI with a password stays in the environment: requests are visible in Prefect.
        if (
            tracking.enabled
            and tracking.tracking_uri is None
            and resolved
            and urlparse(resolved).password is None
        ):
            tracking = tracking.model_copy(update={"tracking_uri": resolved})
        return {
            "store": self.store.uri,
            "device": self.spec.device,
            "precision": self.spec.precision,
            "tracking": tracking,
            "parent_run_id": self.parent_run_id,
        }

    def optimize_request(self) -> OptimizeRequest:
        spec = self.spec
        return OptimizeRequest(
            image=spec.image,
            text=spec.text,
            model=spec.model,
            model_revision=spec.model_revision,
            params=spec.optimize,
            resolution_fit=spec.resolution_fit,
            max_megapixels=spec.max_megapixels,
            **self._common(),
        )

    def finetune_request(self, optimize_key: str) -> FinetuneRequest:
        return FinetuneRequest(
            optimize_key=optimize_key, params=self.spec.finetune, **self._common()
        )

    def generate_request(self, finetune_key: str) -> GenerateRequest:
        return GenerateRequest(
            finetune_key=finetune_key, params=self.spec.generate, **self._common()
        )

    @property
    def run_url(self) -> str | None:
        return self.tracker.run_url(self.parent_run_id)

    def finish(self, *, failed: bool = False) -> None:
        self.tracker.end_run(self.parent_run_id, failed=failed)


def start_edit(
    spec: EditSpec,
    *,
    store: str | None = None,
    tracking: TrackingOptions | None = None,
    check_device: bool = True,
) -> EditRun:
    """Check the inputs, cheapest first, then open the edit's MLflow parent run.

    Nothing is loaded and no run is opened when the input image, the device, the shipped toy
    weights, the sampler (for the model's schedule) or the store is unusable. A toy model warns
    about words it was never trained on.
    `check_device=False` is for orchestrators whose stages run on other machines
    (a GPU the orchestrating process does not have is not an error there).
    """
    if check_device:
        resolve_runtime(spec.device, spec.precision)
    image_bytes = read_input_image_bytes(spec.image)
    read_image(image_bytes, max_megapixels=spec.max_megapixels, name=spec.image)
    resolve_model(spec.model)  # the shipped toy weights: refused if missing or corrupt
    check_scheduler_for_model(spec.model, spec.generate.scheduler)
    warn_unknown_words_for(spec.text, spec.model)
    artifact_store = open_store(store)
    artifact_store.check()
    tracking = tracking or TrackingOptions()
    tracker = open_tracker(tracking)
    parent_run_id = tracker.start_edit(
        name=f"edit: {spec.text[:60]}",
        params=flatten_params(spec.model_dump(mode="json")),
        tags={**standard_tags(), "imagic.store": artifact_store.uri},
    )
    return EditRun(spec, artifact_store, tracking, tracker, parent_run_id)


def run_edit(
    spec: EditSpec,
    out_dir: str | os.PathLike[str],
    *,
    store: str | None = None,
    tracking: TrackingOptions | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> EditOutputs:
    """Run stages A, B, C for `spec` through the store and export the result to `out_dir`."""
    check_output_dir(out_dir, overwrite=overwrite)
    edit = start_edit(spec, store=store, tracking=tracking)
    try:
        # The three stages hand each other nothing but keys.
        optimized = run_optimize(edit.optimize_request(), progress)
        tuned = run_finetune(edit.finetune_request(optimized.key), progress)
        generated = run_generate(edit.generate_request(tuned.key), progress)
        stages = {"optimize": optimized, "finetune": tuned, "generate": generated}
        outputs = export_edit(edit, stages, out_dir, overwrite=overwrite)
    except BaseException:
        edit.finish(failed=True)
        raise
    edit.finish()
    return outputs


def export_edit(
    edit: EditRun,
    stages: dict[str, StageResult],
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
) -> EditOutputs:
    """Copy a finished edit's user-facing result out of the store into `out_dir`."""
    return export_stages(
        edit.spec,
        edit.store,
        stages,
        out_dir,
        overwrite=overwrite,
        run_id=edit.parent_run_id,
        run_url=edit.run_url,
    )


def export_stages(
    spec: EditSpec,
    store: ArtifactStore,
    stages: dict[str, StageResult],
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    run_id: str | None = None,
    run_url: str | None = None,
) -> EditOutputs:
    """Export the committed stages of an edit, wherever they ran (here, or under Prefect)."""
    manifest = _export(spec, store, stages, out_dir, overwrite, run_id, run_url)
    return EditOutputs(
        out_dir=Path(out_dir).expanduser().absolute(),
        manifest=manifest,
        stages=stages,
        mlflow_run_id=run_id,
        mlflow_run_url=run_url,
    )


def _export(
    spec: EditSpec,
    store: ArtifactStore,
    stages: dict[str, StageResult],
    out_dir: str | os.PathLike[str],
    overwrite: bool,
    run_id: str | None,
    run_url: str | None,
) -> dict[str, Any]:
    """Copy the input, embeddings, images and grid out of the store (verified) into `out_dir`."""
    manifests = {name: read_manifest(store, result.key) for name, result in stages.items()}
    a, b, c = manifests["optimize"], manifests["finetune"], manifests["generate"]
    with staged_output_dir(out_dir, overwrite=overwrite) as staging:
        for name in (INPUT_FILE, EMBEDDINGS_FILE):
            fetch_file(store, stages["optimize"].key, a, name, staging / name)
        images = []
        for item in c["images"]:
            local_name = Path(item["file"]).name
            fetch_file(store, stages["generate"].key, c, item["file"], staging / local_name)
            images.append({**item, "file": local_name})
        fetch_file(store, stages["generate"].key, c, c["grid"]["file"], staging / "grid.png")
        losses = {
            name: _read_json(store, stages[name].key, manifests[name], LOSSES_FILE)
            for name in ("optimize", "finetune")
        }
        files = sorted(p.name for p in staging.iterdir() if p.is_file())
        manifest = {
            "imagic_version": imagic.__version__,
            "spec": spec.model_dump(mode="json"),
            "store": store.uri,
            "model": a["model"],
            "input": {**a["input"], "file": INPUT_FILE},
            "stages": {
                name: {
                    **result.model_dump(mode="json"),
                    "seconds": manifests[name].get("seconds"),
                    "losses": losses.get(name),
                }
                for name, result in stages.items()
            },
            "embeddings": {"file": EMBEDDINGS_FILE, "keys": ["e_tgt", "e_opt"]},
            "finetuned": {"kind": b["kind"], "uri": b["weights_uri"]},
            "images": images,
            "grid": {"file": "grid.png", "rows": "seeds", "columns": "etas"},
            "mlflow": {"run_id": run_id, "url": run_url},
            "files": {name: file_sha256(staging / name) for name in files},
        }
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return manifest


def _read_json(store: ArtifactStore, key: str, manifest: dict[str, Any], name: str) -> Any:
    """A small committed JSON file, verified against its manifest like every other artifact."""
    with tempfile.TemporaryDirectory() as folder:
        return json.loads(fetch_file(store, key, manifest, name, Path(folder) / name).read_text())
