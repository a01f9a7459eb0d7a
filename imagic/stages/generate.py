"""Stage C as a stored, tracked step: K_B's fine-tuned state -> images + grid under key K_C.

Re-running with new etas or seeds gives a new K_C on the same K_B: stages A and B are not
repeated, which is what makes eta sweeps cheap.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pydantic import Field
from safetensors.torch import load_file

from imagic.config import GenerateParams
from imagic.device import peak_memory_tracking, resolve_runtime
from imagic.grid import make_grid
from imagic.images import save_png
from imagic.method import GeneratedImage, ProgressCallback, generate
from imagic.models import load_finetuned_state, load_pipeline
from imagic.stages.common import (
    StageRequest,
    StageResult,
    cached_result,
    computed_result,
    open_stage_run,
    require_manifest,
    stage_tags,
    work_dir,
)
from imagic.stages.finetune import FINETUNED_DIR, check_model_unchanged
from imagic.stages.optimize import EMBEDDINGS_FILE
from imagic.storage import (
    commit_stage,
    content_key,
    fetch_file,
    fetch_files,
    open_store,
    read_manifest,
    validate_key,
)
from imagic.tracking import open_tracker

STAGE = "generate"
CODE_VERSION = 1
GRID_FILE = "grid.png"
IMAGES_DIR = "images"


class GenerateRequest(StageRequest):
    """Sample e = eta * e_tgt + (1 - eta) * e_opt for every eta x seed on the fine-tuned model."""

    finetune_key: str = Field(description="Key returned by the finetune step.")
    params: GenerateParams = Field(default_factory=GenerateParams)


def image_file_name(eta: float, seed: int) -> str:
    """Stable, sortable names: seed first (grid rows), then eta (columns)."""
    return f"seed{seed}_eta{eta:.3f}.png"


def run_generate(request: GenerateRequest, progress: ProgressCallback | None = None) -> StageResult:
    # 1. Find stages A and B's committed outputs, derive K_C, reuse a committed output.
    runtime = resolve_runtime(request.device, request.precision)
    validate_key(request.finetune_key, field="finetune_key")
    store = open_store(request.store)
    store.check()
    tracker = open_tracker(request.tracking)
    manifest_b = require_manifest(store, request.finetune_key, "finetune", "steps.finetune")
    optimize_key = manifest_b["optimize_key"]
    manifest_a = require_manifest(store, optimize_key, "optimize", "steps.optimize")
    inputs = {
        "finetune_key": request.finetune_key,
        "params": request.params.model_dump(mode="json"),
        "code_version": CODE_VERSION,
    }
    key = content_key(STAGE, inputs)
    tags = stage_tags(
        STAGE,
        store,
        key,
        optimize_key=optimize_key,
        finetune_key=request.finetune_key,
        input_sha256=manifest_a["input"]["sha256"],
    )
    manifest = read_manifest(store, key)
    if manifest is not None:
        return cached_result(STAGE, store, key, manifest, request, tracker, tags)

    # 2. Rebuild the fine-tuned pipeline from the base model and the stored state; sample.
    check_model_unchanged(manifest_a, optimize_key)
    model = manifest_a["model"]
    pipe = load_pipeline(
        model["id"],
        revision=model["revision"],
        scheduler=request.params.scheduler,
        device=runtime.device,
    )
    with open_stage_run(tracker, STAGE, request, tags) as run, work_dir(STAGE) as work:
        fetch_file(store, optimize_key, manifest_a, EMBEDDINGS_FILE, work / EMBEDDINGS_FILE)
        fetch_files(store, request.finetune_key, manifest_b, work, prefix=f"{FINETUNED_DIR}/")
        load_finetuned_state(pipe, work / FINETUNED_DIR)
        embeddings = load_file(work / EMBEDDINGS_FILE)
        start = time.perf_counter()
        with peak_memory_tracking(runtime.device) as memory:
            samples = generate(
                pipe, embeddings["e_tgt"], embeddings["e_opt"], request.params, runtime, progress
            )
        seconds = time.perf_counter() - start

        # 3. Files first, manifest last; then log what was committed.
        out = work / "out"
        provenance = {
            "text": manifest_a["text"],
            "model": model["id"],
            "input_sha256": manifest_a["input"]["sha256"],
            "optimize_key": optimize_key,
            "finetune_key": request.finetune_key,
            "generate_key": key,
        }
        images = save_samples(samples, out / IMAGES_DIR, provenance)
        save_grid(samples, request.params, manifest_a["text"], out / GRID_FILE, provenance)
        run.log_metrics(
            {
                "seconds": seconds,
                "seconds_per_image": seconds / len(samples),
                "peak_memory_bytes": memory["peak_memory_bytes"],
            }
        )
        record = {
            "stage": STAGE,
            "inputs": inputs,
            "optimize_key": optimize_key,
            "finetune_key": request.finetune_key,
            "text": manifest_a["text"],
            "images": [{**item, "file": f"{IMAGES_DIR}/{item['file']}"} for item in images],
            "grid": {"file": GRID_FILE, "rows": "seeds", "columns": "etas"},
            "runtime": {"device": str(runtime.device), "precision": runtime.precision},
            "seconds": round(seconds, 3),
            "peak_memory_bytes": memory["peak_memory_bytes"],
            "mlflow_run_id": run.run_id,
        }
        files = {
            path.relative_to(out).as_posix(): path
            for path in sorted(out.rglob("*"))
            if path.is_file()
        }
        manifest = commit_stage(store, key, files, record)
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2))
        run.log_artifact(out / IMAGES_DIR, IMAGES_DIR)
        run.log_artifact(out / GRID_FILE)
        run.log_artifact(work / "manifest.json")
    return computed_result(STAGE, store, key, run, tracker)


def save_samples(
    samples: list[GeneratedImage], folder: Path, provenance: dict[str, Any]
) -> list[dict[str, Any]]:
    """One PNG per sample, carrying its eta, seed and the edit's provenance."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for sample in samples:
        name = image_file_name(sample.eta, sample.seed)
        labels = {"eta": sample.eta, "seed": sample.seed}
        save_png(sample.image, folder / name, {**provenance, **labels})
        records.append({"file": name, **labels})
    return records


def save_grid(
    samples: list[GeneratedImage],
    params: GenerateParams,
    text: str,
    path: Path,
    provenance: dict[str, Any],
) -> None:
    """The labelled grid users pick from: rows are seeds, columns are etas."""
    by_pair = {(sample.seed, sample.eta): sample.image for sample in samples}
    rows = [[by_pair[seed, eta] for eta in params.etas] for seed in params.seeds]
    grid = make_grid(
        rows,
        row_labels=[f"seed {seed}" for seed in params.seeds],
        col_labels=[f"eta={eta:g}" for eta in params.etas],
        title=text,
    )
    save_png(grid, path, {**provenance, "etas": params.etas, "seeds": params.seeds})
