"""Stage A as a stored, tracked step: image + text + model -> e_opt under key K_A."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

from pydantic import Field
from safetensors.torch import save_file

from imagic.config import ModelId, OptimizeParams, PositiveFloat, ResolutionFit, TargetText
from imagic.device import peak_memory_tracking, resolve_runtime
from imagic.images import (
    fit_to_resolution,
    image_digest,
    image_to_tensor,
    read_image,
    read_image_bytes,
    save_png,
)
from imagic.method import (
    ProgressCallback,
    check_text_fits,
    encode_image,
    encode_text,
    optimize_embedding,
)
from imagic.models import load_pipeline, model_fingerprint, model_resolution, prediction_type
from imagic.stages.common import (
    StageRequest,
    StageResult,
    cached_result,
    computed_result,
    open_stage_run,
    stage_tags,
    work_dir,
)
from imagic.storage import commit_stage, content_key, open_store, read_manifest, read_uri_bytes
from imagic.tracking import open_tracker

STAGE = "optimize"
CODE_VERSION = 1
"""Bump when stage A's numerics change, so old cached outputs are not reused."""

EMBEDDINGS_FILE = "embeddings.safetensors"
INPUT_FILE = "input.png"
LOSSES_FILE = "losses.json"


class OptimizeRequest(StageRequest):
    """Optimize the text embedding of `text` so that the frozen `model` reconstructs `image`."""

    image: str = Field(description="Input image: local path, file:///... or s3://bucket/key.")
    text: TargetText = Field(description="Target text, e.g. 'a bird spreading its wings'.")
    model: ModelId = Field(description="Local diffusers folder or Hugging Face Hub id.")
    model_revision: str | None = Field(None, description="Hub revision; pin a commit to cache.")
    params: OptimizeParams = Field(default_factory=OptimizeParams)
    resolution_fit: ResolutionFit = "crop"
    max_megapixels: PositiveFloat = 64.0


def read_input_image_bytes(image: str) -> bytes:
    """The input's bytes from a local path, file:// URI or s3:// URI."""
    parsed = urlparse(image)
    if parsed.scheme == "s3":
        return read_uri_bytes(image)
    if parsed.scheme == "file":
        return read_image_bytes(Path(unquote(parsed.path)))
    return read_image_bytes(image)


def run_optimize(request: OptimizeRequest, progress: ProgressCallback | None = None) -> StageResult:
    # 1. Check what is cheap to check, then derive the key: reuse a committed output.
    runtime = resolve_runtime(request.device, request.precision)
    store = open_store(request.store)
    store.check()
    tracker = open_tracker(request.tracking)
    data = read_input_image_bytes(request.image)
    digest = image_digest(data)
    fingerprint = model_fingerprint(request.model, request.model_revision)
    inputs = {
        "image_sha256": digest,
        "text": request.text,
        "model": fingerprint,
        "params": request.params.model_dump(mode="json"),
        "resolution_fit": request.resolution_fit,
        "code_version": CODE_VERSION,
    }
    key = content_key(STAGE, inputs)
    tags = stage_tags(STAGE, store, key, input_sha256=digest)
    manifest = read_manifest(store, key)
    if manifest is not None:
        return cached_result(STAGE, store, key, manifest, request, tracker, tags)

    # 2. Validate the image and the text against the model, then run stage A.
    image = read_image(data, max_megapixels=request.max_megapixels, name=request.image)
    pipe = load_pipeline(request.model, revision=request.model_revision, device=runtime.device)
    check_text_fits(pipe, request.text)
    fitted = fit_to_resolution(image, model_resolution(pipe), request.resolution_fit)
    with open_stage_run(tracker, STAGE, request, tags) as run, work_dir(STAGE) as work:
        start = time.perf_counter()
        with peak_memory_tracking(runtime.device) as memory:
            latents = encode_image(pipe, image_to_tensor(fitted).to(runtime.device))
            e_tgt = encode_text(pipe, request.text)
            result = optimize_embedding(pipe, latents, e_tgt, request.params, runtime, progress)
        seconds = time.perf_counter() - start

        # 3. Files first, manifest last; then log what was committed.
        provenance = {"text": request.text, "model": request.model, "input_sha256": digest}
        save_png(fitted, work / INPUT_FILE, {**provenance, "optimize_key": key})
        save_file(
            {"e_tgt": e_tgt.cpu().contiguous(), "e_opt": result.e_opt.contiguous()},
            work / EMBEDDINGS_FILE,
            metadata={"text": request.text, "model": request.model, "optimize_key": key},
        )
        (work / LOSSES_FILE).write_text(json.dumps(result.losses))
        run.log_metric_series("loss", result.losses)
        run.log_metrics({"seconds": seconds, "peak_memory_bytes": memory["peak_memory_bytes"]})
        record = {
            "stage": STAGE,
            "inputs": inputs,
            "text": request.text,
            "model": {
                "id": request.model,
                "revision": request.model_revision,
                "fingerprint": fingerprint,
                "resolution": list(model_resolution(pipe)),
                "prediction_type": prediction_type(pipe),
            },
            "input": {"source": request.image, "sha256": digest},
            "runtime": {"device": str(runtime.device), "precision": runtime.precision},
            "seconds": round(seconds, 3),
            "peak_memory_bytes": memory["peak_memory_bytes"],
            "final_loss": result.losses[-1],
            "mlflow_run_id": run.run_id,
        }
        files = {name: work / name for name in (INPUT_FILE, EMBEDDINGS_FILE, LOSSES_FILE)}
        manifest = commit_stage(store, key, files, record)
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2))
        for name in (EMBEDDINGS_FILE, INPUT_FILE, LOSSES_FILE, "manifest.json"):
            run.log_artifact(work / name)
    return computed_result(STAGE, store, key, run, tracker)
