"""One complete Imagic edit on this machine: A, B and C into one output folder.

This is what `imagic edit` runs. It reads top to bottom like a diffusers pipeline: check every
input (cheap checks first, before any model is loaded), load the model, optimize the embedding,
fine-tune, generate, and write the images, the labelled grid and `manifest.json` (last). The
folder appears only when everything is written (see `imagic.outputs`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import torch
import transformers
from safetensors.torch import save_file

import imagic
from imagic.config import EditSpec
from imagic.device import Runtime, peak_memory_tracking, resolve_runtime
from imagic.grid import make_grid
from imagic.images import fit_to_resolution, image_digest, image_to_tensor, read_image, save_png
from imagic.method import (
    GeneratedImage,
    ProgressCallback,
    check_text_fits,
    encode_image,
    encode_text,
    finetune,
    generate,
    optimize_embedding,
)
from imagic.models import (
    load_finetuned_state,
    load_pipeline,
    model_resolution,
    prediction_type,
    save_finetuned_state,
)
from imagic.outputs import check_output_dir, staged_output_dir

MANIFEST_NAME = "manifest.json"
EMBEDDINGS_NAME = "embeddings.safetensors"
FINETUNED_DIR = "finetuned"


@dataclass(frozen=True)
class EditOutputs:
    """Where the committed result lives."""

    out_dir: Path
    manifest: dict[str, Any]

    @property
    def grid(self) -> Path:
        return self.out_dir / self.manifest["grid"]["file"]

    @property
    def images(self) -> list[Path]:
        return [self.out_dir / item["file"] for item in self.manifest["images"]]


def image_file_name(eta: float, seed: int) -> str:
    """Stable, sortable names: seed first (grid rows), then eta (columns)."""
    return f"seed{seed}_eta{eta:.3f}.png"


def run_edit(
    spec: EditSpec,
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> EditOutputs:
    """Run stages A, B, C for `spec` and commit the result to `out_dir`."""
    # 1. Check inputs, cheapest first, before loading any model.
    check_output_dir(out_dir, overwrite=overwrite)
    runtime = resolve_runtime(spec.device, spec.precision)
    image = read_image(spec.image, max_megapixels=spec.max_megapixels)
    input_digest = image_digest(Path(spec.image).expanduser().read_bytes())

    # 2. Load the model and check the text against its tokenizer.
    pipe = load_pipeline(
        spec.model,
        revision=spec.model_revision,
        scheduler=spec.generate.scheduler,
        device=runtime.device,
    )
    check_text_fits(pipe, spec.text)
    fitted = fit_to_resolution(image, model_resolution(pipe), spec.resolution_fit)
    provenance = {
        "text": spec.text,
        "model": spec.model,
        "input_sha256": input_digest,
        "spec_sha256": spec_digest(spec),
    }

    with staged_output_dir(out_dir, overwrite=overwrite) as staging:
        save_png(fitted, staging / "input.png", provenance)
        stages: dict[str, dict[str, Any]] = {}

        # 3. Stage A: optimize the embedding.
        latents = encode_image(pipe, image_to_tensor(fitted).to(runtime.device))
        e_tgt = encode_text(pipe, spec.text)
        with _timed(stages.setdefault("optimize", {}), runtime):
            embedding = optimize_embedding(pipe, latents, e_tgt, spec.optimize, runtime, progress)
        stages["optimize"]["losses"] = embedding.losses
        save_file(
            {"e_tgt": e_tgt.cpu().contiguous(), "e_opt": embedding.e_opt.contiguous()},
            staging / EMBEDDINGS_NAME,
            metadata={"text": spec.text, "model": spec.model},
        )

        # 4. Stage B: fine-tune, store, and sample from exactly what was stored.
        with _timed(stages.setdefault("finetune", {}), runtime):
            tuned = finetune(pipe, latents, embedding.e_opt, spec.finetune, runtime, progress)
        stages["finetune"]["losses"] = tuned.losses
        stages["finetune"]["trainable_parameters"] = tuned.trainable_parameters
        save_finetuned_state(
            pipe.unet, staging / FINETUNED_DIR, save_dtype=spec.finetune.save_dtype
        )
        load_finetuned_state(pipe, staging / FINETUNED_DIR)

        # 5. Stage C: generate every eta x seed, then the grid and the manifest (last).
        with _timed(stages.setdefault("generate", {}), runtime):
            samples = generate(pipe, e_tgt, embedding.e_opt, spec.generate, runtime, progress)
        images = _save_samples(samples, staging, provenance)
        grid_file = _save_grid(samples, spec, staging, provenance)
        manifest = _manifest(spec, runtime, pipe, input_digest, stages, images, grid_file, staging)
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return EditOutputs(out_dir=Path(out_dir).expanduser().absolute(), manifest=manifest)


@contextlib.contextmanager
def _timed(record: dict[str, Any], runtime: Runtime) -> Iterator[None]:
    """Record a stage's seconds and peak accelerator memory into `record`."""
    start = time.perf_counter()
    with peak_memory_tracking(runtime.device) as memory:
        yield
    record["seconds"] = round(time.perf_counter() - start, 3)
    record["peak_memory_bytes"] = memory["peak_memory_bytes"]


def _save_samples(
    samples: list[GeneratedImage], folder: Path, provenance: dict[str, Any]
) -> list[dict[str, Any]]:
    records = []
    for sample in samples:
        name = image_file_name(sample.eta, sample.seed)
        save_png(
            sample.image, folder / name, {**provenance, "eta": sample.eta, "seed": sample.seed}
        )
        records.append(
            {
                "file": name,
                "eta": sample.eta,
                "seed": sample.seed,
                "sha256": _file_sha256(folder / name),
            }
        )
    return records


def _save_grid(
    samples: list[GeneratedImage], spec: EditSpec, folder: Path, provenance: dict[str, Any]
) -> str:
    etas, seeds = spec.generate.etas, spec.generate.seeds
    by_pair = {(sample.seed, sample.eta): sample.image for sample in samples}
    rows = [[by_pair[seed, eta] for eta in etas] for seed in seeds]
    grid = make_grid(
        rows,
        row_labels=[f"seed {seed}" for seed in seeds],
        col_labels=[f"eta={eta:g}" for eta in etas],
        title=spec.text,
    )
    save_png(grid, folder / "grid.png", {**provenance, "etas": etas, "seeds": seeds})
    return "grid.png"


def _manifest(
    spec: EditSpec,
    runtime: Runtime,
    pipe: Any,
    input_digest: str,
    stages: dict[str, dict[str, Any]],
    images: list[dict[str, Any]],
    grid_file: str,
    folder: Path,
) -> dict[str, Any]:
    """Everything needed to understand and reproduce the edit, and to verify its files."""
    files = sorted(
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if path.is_file() and path.name != MANIFEST_NAME
    )
    return {
        "imagic_version": imagic.__version__,
        "spec": spec.model_dump(mode="json"),
        "spec_sha256": spec_digest(spec),
        "input": {"source": spec.image, "sha256": input_digest, "file": "input.png"},
        "model": {
            "id": spec.model,
            "revision": spec.model_revision,
            "resolution": list(model_resolution(pipe)),
            "prediction_type": prediction_type(pipe),
        },
        "runtime": {
            "device": str(runtime.device),
            "precision": runtime.precision,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
        },
        "stages": stages,
        "embeddings": {"file": EMBEDDINGS_NAME, "keys": ["e_tgt", "e_opt"]},
        "finetuned": {"folder": FINETUNED_DIR, "lora": spec.finetune.lora},
        "images": images,
        "grid": {"file": grid_file, "rows": "seeds", "columns": "etas"},
        "files": {name: _file_sha256(folder / name) for name in files},
    }


def spec_digest(spec: EditSpec) -> str:
    """A stable digest of the full request, to tell runs of the same edit apart from others."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
