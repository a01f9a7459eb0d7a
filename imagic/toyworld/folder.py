"""The training folder of `imagic toy train`: its layout, its checks, atomic writes.

Separate from `imagic.toyworld.train` so the CLI can refuse a bad `--out` (a file, an
unwritable folder, someone else's non-empty folder, another recipe's training folder) before
torch is imported, in well under a second.

Layout (`--out`):

    train_config.json       the latest run's parameters; marks the folder as resumable
    environment.json        each run's machine and software (CPU, its vector instructions,
                            threads, package versions): a run is reproducible bit for bit
                            only on the same kind (`imagic.toyworld.train.run_environment`)
    checkpoints/            vae-0001000.pt, unet-0002000.pt, decoder-0000500.pt ... (the newest
                            `keep_checkpoints`)
    samples/                a grid per checkpoint: VAE reconstructions, text-to-image samples,
                            then reconstructions by the fine-tuned decoder
    losses.json             per phase, one entry per step
    grid.png                held-out captions, their true scene and a sample of the final model
    model/                  the diffusers pipeline, fp16 safetensors, with checksums.json
    phase-c-alongside/      with `decoder_alongside`, until phase b ends: phase c's own
                            training folder (this layout), trained by a second process from
                            the VAE of phase a, then merged into checkpoints/ and removed
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imagic.errors import InvalidParamsError, OutputDirError
from imagic.toyworld.config import (
    PHASE_C_FIELDS,
    RECIPE_BEFORE_FIELD,
    RECIPE_FIELDS,
    ToyTrainParams,
    field_label,
)

CONFIG_FILE = "train_config.json"
ENVIRONMENT_FILE = "environment.json"
CHECKPOINT_DIR = "checkpoints"
SAMPLES_DIR = "samples"
LOSSES_FILE = "losses.json"
GRID_FILE = "grid.png"
MODEL_DIR = "model"
ALONGSIDE_DIR = "phase-c-alongside"
PHASES = ("vae", "unet", "decoder")


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write via a temporary sibling and rename, so `path` is always old-complete or new."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(temporary)
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    write_atomically(path, lambda target: target.write_text(json.dumps(data, indent=1) + "\n"))


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def prepare_training_folder(params: ToyTrainParams) -> Path:
    """Check `--out` before any work and mark it as a training folder; return its path.

    A new or empty folder starts a run; a folder holding `train_config.json` is a training
    folder and is resumed (or, with resume off, started over: its earlier checkpoints,
    samples and model are removed). Anything else is refused, never overwritten.
    """
    out = Path(params.out).expanduser().absolute()
    existing = _nearest_existing(out)
    if not existing.is_dir():
        raise OutputDirError(f"out (--out) = '{out}': '{existing}' is a file; choose a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputDirError(
            f"out (--out) = '{out}': cannot write into '{existing}' (permission denied); "
            "choose a folder you can write to."
        )
    if params.start_from is not None and not Path(params.start_from).expanduser().is_file():
        raise InvalidParamsError(
            f"start_from (--start-from) = '{params.start_from}' is not a file; pass a "
            f"checkpoint of another training folder (its {CHECKPOINT_DIR}/*.pt)."
        )
    config_file = out / CONFIG_FILE
    if out.is_dir() and any(out.iterdir()):
        if not config_file.is_file():
            raise OutputDirError(
                f"out (--out) = '{out}': folder is not empty and is not a toy training folder "
                f"(no {CONFIG_FILE}); choose a new or empty folder."
            )
        if params.resume:
            _check_same_recipe(params, json.loads(config_file.read_text()), out)
        else:
            for name in (CHECKPOINT_DIR, SAMPLES_DIR, MODEL_DIR, ALONGSIDE_DIR):
                shutil.rmtree(out / name, ignore_errors=True)
            for name in (LOSSES_FILE, GRID_FILE, CONFIG_FILE, ENVIRONMENT_FILE):
                (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    if not config_file.is_file() and params.start_from is None:
        # A resumed run rewrites it once its checkpoint fits; a branch writes it once its
        # source checkpoint is accepted, so a refused one leaves `out` empty, not claimed.
        write_json(config_file, params.model_dump(mode="json"))
    return out


def _difference(field: str, value: Any, origin: str, stored: Any) -> str:
    """One refusal line; None is shown as a flag left out (its fallback applies), as typed."""
    ours = f"{field_label(field)} " + ("left out" if value is None else f"= {value!r}")
    theirs = "it left out" if stored is None else repr(stored)
    return f"  {ours}, but {origin} {theirs}"


def _effective_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """`recipe` with each fallback spelled out as what it trains with.

    Why: a field left out (None) and its fallback given as a value train the same bytes, so a
    folder must resume either way. This is how a folder started under an earlier default
    resumes after the default changed: `--decoder-batch-size` equal to `--batch-size` is what
    leaving it out meant, and `--vae-crop-size` equal to the image size crops nothing (one
    window, the whole scene, and a KL scale of 1).
    """
    return {
        **recipe,
        "decoder_batch_size": recipe.get("decoder_batch_size") or recipe.get("batch_size"),
        "vae_crop_size": recipe.get("vae_crop_size") or recipe["model"]["image_size"],
    }


def _recipe_differences(
    params: ToyTrainParams, stored: dict[str, Any], origin: str, free: tuple[str, ...] = ()
) -> list[str]:
    """One line per recipe field (outside `free`) whose value differs from `stored`'s."""
    current = _effective_recipe(params.model_dump(mode="json"))
    stored = _effective_recipe({**RECIPE_BEFORE_FIELD, **stored})
    return [
        _difference(field, current[field], origin, stored.get(field))
        for field in RECIPE_FIELDS
        if field not in free and stored.get(field) != current[field]
    ]


def _check_same_recipe(params: ToyTrainParams, stored: dict[str, Any], out: Path) -> None:
    """Refuse to resume with a recipe other than the one the folder was started with."""
    lines = _recipe_differences(params, stored, "the folder was started with")
    if lines:
        raise InvalidParamsError(
            f"out (--out) = '{out}' is a training folder started with another recipe:\n"
            + "\n".join(lines)
            + "\nPass the same values to resume it, pass --no-resume to start it over, or "
            "choose a new --out."
        )


def check_branch_recipe(
    params: ToyTrainParams, source: dict[str, Any], steps: dict[str, int], path: Path
) -> None:
    """Refuse to branch from a checkpoint whose training the new recipe would not have done.

    `source` is the checkpoint's own parameters and `steps` its step counts. Every recipe
    field must match, except phase c's (PHASE_C_FIELDS) while phase c has not started: phases
    a and b never read them, so the branch ends where a whole run of its recipe would.
    """
    started = bool(steps.get("decoder"))
    free = () if started else PHASE_C_FIELDS
    lines = _recipe_differences(params, source, "the checkpoint was trained with", free)
    if lines:
        reason = (
            "phase c had started there, so its settings must match too"
            if started
            else "only phase c's settings may differ"
        )
        raise InvalidParamsError(
            f"start_from (--start-from) = '{path}' was trained with another recipe "
            f"({reason}):\n"
            + "\n".join(lines)
            + "\nPass the checkpoint's values, or branch from an earlier checkpoint."
        )


def _checkpoint_key(path: Path) -> tuple[int, int]:
    phase, _, step = path.stem.partition("-")
    return PHASES.index(phase), int(step)


def list_checkpoints(out: Path) -> list[Path]:
    """The folder's complete checkpoints, oldest first (temporary files are never listed)."""
    folder = out / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    paths = [
        path
        for path in folder.glob("*.pt")
        if path.stem.partition("-")[0] in PHASES and path.stem.partition("-")[2].isdigit()
    ]
    return sorted(paths, key=_checkpoint_key)
