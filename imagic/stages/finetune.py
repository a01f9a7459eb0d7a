"""Stage B as a stored, tracked step: K_A's e_opt -> fine-tuned UNet state under key K_B."""

from __future__ import annotations

import json
import time

from pydantic import Field
from safetensors.torch import load_file

from imagic.config import FinetuneParams
from imagic.device import peak_memory_tracking, resolve_runtime
from imagic.errors import StageNotFoundError
from imagic.images import image_to_tensor, read_image
from imagic.method import ProgressCallback, encode_image, finetune
from imagic.models import load_pipeline, model_fingerprint, save_finetuned_state
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
from imagic.stages.optimize import EMBEDDINGS_FILE, INPUT_FILE, LOSSES_FILE
from imagic.storage import (
    commit_stage,
    content_key,
    fetch_file,
    files_under,
    open_store,
    read_manifest,
    validate_key,
)
from imagic.tracking import open_tracker

STAGE = "finetune"
CODE_VERSION = 1
FINETUNED_DIR = "finetuned"


class FinetuneRequest(StageRequest):
    """Fine-tune the UNet so that the optimized embedding of `optimize_key` reproduces the input."""

    optimize_key: str = Field(description="Key returned by the optimize step.")
    params: FinetuneParams = Field(default_factory=FinetuneParams)


def check_model_unchanged(manifest_a: dict, key: str) -> None:
    """A local model folder edited since stage A would silently mix two models: refuse."""
    model = manifest_a["model"]
    if model_fingerprint(model["id"], model["revision"]) != model["fingerprint"]:
        raise StageNotFoundError(
            f"model = '{model['id']}': its files changed since optimize ran for key {key!r}. "
            "Run optimize again on the current model, then fine-tune with the new key."
        )


def run_finetune(request: FinetuneRequest, progress: ProgressCallback | None = None) -> StageResult:
    # 1. Find stage A's committed output, derive K_B, reuse a committed output.
    runtime = resolve_runtime(request.device, request.precision)
    validate_key(request.optimize_key, field="optimize_key")
    store = open_store(request.store)
    store.check()
    tracker = open_tracker(request.tracking)
    manifest_a = require_manifest(store, request.optimize_key, "optimize", "steps.optimize")
    inputs = {
        "optimize_key": request.optimize_key,
        "params": request.params.model_dump(mode="json"),
        "code_version": CODE_VERSION,
    }
    key = content_key(STAGE, inputs)
    tags = stage_tags(
        STAGE,
        store,
        key,
        optimize_key=request.optimize_key,
        input_sha256=manifest_a["input"]["sha256"],
    )
    manifest = read_manifest(store, key)
    if manifest is not None:
        return cached_result(STAGE, store, key, manifest, request, tracker, tags)

    # 2. Load the model and stage A's verified outputs, then run stage B.
    check_model_unchanged(manifest_a, request.optimize_key)
    model = manifest_a["model"]
    pipe = load_pipeline(model["id"], revision=model["revision"], device=runtime.device)
    with open_stage_run(tracker, STAGE, request, tags) as run, work_dir(STAGE) as work:
        a_dir = work / "optimize"
        for name in (INPUT_FILE, EMBEDDINGS_FILE):
            fetch_file(store, request.optimize_key, manifest_a, name, a_dir / name)
        e_opt = load_file(a_dir / EMBEDDINGS_FILE)["e_opt"]
        start = time.perf_counter()
        with peak_memory_tracking(runtime.device) as memory:
            pixels = image_to_tensor(read_image(a_dir / INPUT_FILE)).to(runtime.device)
            latents = encode_image(pipe, pixels)
            result = finetune(pipe, latents, e_opt, request.params, runtime, progress)
        seconds = time.perf_counter() - start

        # 3. Files first, manifest last; then log what was committed.
        state_dir = save_finetuned_state(
            pipe.unet, work / FINETUNED_DIR, save_dtype=request.params.save_dtype
        )
        (work / LOSSES_FILE).write_text(json.dumps(result.losses))
        files = files_under(state_dir, prefix=f"{FINETUNED_DIR}/")
        files[LOSSES_FILE] = work / LOSSES_FILE
        run.log_metric_series("loss", result.losses)
        run.log_metrics(
            {
                "seconds": seconds,
                "peak_memory_bytes": memory["peak_memory_bytes"],
                "trainable_parameters": result.trainable_parameters,
            }
        )
        weights_uri = store.uri_for(f"{key}/{FINETUNED_DIR}")
        record = {
            "stage": STAGE,
            "inputs": inputs,
            "optimize_key": request.optimize_key,
            "kind": "lora" if request.params.lora else "full",
            "weights_uri": weights_uri,
            "runtime": {"device": str(runtime.device), "precision": runtime.precision},
            "seconds": round(seconds, 3),
            "peak_memory_bytes": memory["peak_memory_bytes"],
            "trainable_parameters": result.trainable_parameters,
            "final_loss": result.losses[-1],
            "mlflow_run_id": run.run_id,
        }
        manifest = commit_stage(store, key, files, record)
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if request.tracking.log_weights == "copy":
            run.log_artifact(state_dir, FINETUNED_DIR)
        else:
            run.set_tags({"imagic.weights_uri": weights_uri})
        run.log_artifact(work / LOSSES_FILE)
        run.log_artifact(work / "manifest.json")
    return computed_result(STAGE, store, key, run, tracker)
