"""Train the toy text-to-image model from scratch, resumably, on toy-world scenes.

Three phases, like Stable Diffusion and its later VAE decoders:

a. the VAE learns to encode rendered scenes to 16 x 16 x 4 latents and back (MSE plus a small
   KL term, which keeps the latent space smooth enough to diffuse in), by default on random
   32-px crops of the scenes (`vae_crop_size`: four times the steps for the same minutes);
b. with the VAE frozen, the text encoder and UNet learn DDPM noise prediction on
   (caption, latent) pairs. Captions are random paraphrases (`caption(scene, rng)`), so the
   model learns the attributes rather than one template, and 10 % are empty, so the model
   also learns the unconditional prediction classifier-free guidance needs. Its squared error
   weighs the latent cells under objects as phase c weighs their pixels (`unet_object_weight`,
   `unet_area_balance`; `unet_batch`), or with weights 1 and 0 is a plain mean;
c. with everything else frozen, the VAE decoder is fine-tuned, as Stability did for SD's
   "ft-MSE" decoder: the encoder and so the latents do not change, so the UNet stays valid and
   the new decoder is a drop-in. Its squared error weighs an object's pixels
   `decoder_object_weight` times the background's, and (with `decoder_area_balance`) small
   objects' pixels more than large ones'. Objects cover a few percent of a scene, so under
   phase a's plain mean the decoder had blurred small stars into circles, shifted small
   objects' colours and dropped thin limbs: a whole-scene phase-a VAE gave back the right
   colour and shape in only about half of the held-out scenes (benchmarks/toy_quality.py).

Every batch is a pure function of (seed, phase, step): its scene seeds, captions, caption
dropout, noise and timesteps come from generators seeded by those three numbers. A checkpoint
therefore only needs the weights, the optimizer and EMA state and the step counters, and a
resumed run continues where the interrupted one stopped: bit for bit on the same CPU machine
(the tests check it), up to the nondeterminism of some backward kernels on CUDA. For the
same reason a run can branch from another folder's checkpoint (`start_from`) with another
phase c recipe: phases a and b never read phase c's settings, so a branch from the end of
phase b ends where a whole run of the new recipe would, for the cost of phase c alone.
Scene seeds are drawn below `EVAL_SEED_START`; sample grids show held-out seeds above it.

Phase c reads only the VAE, which phase b freezes, so with `decoder_alongside` (the default)
it runs in a second process during phase b, each on half of torch's threads: on a 2-core CPU
two one-thread steps do more work together than one two-thread step does (`run_alongside`).

The folder layout is described in `imagic.toyworld.folder`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import math
import multiprocessing
import os
import platform
import random
import shutil
import sys
import textwrap
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from imagic.device import Runtime, cpu_model_name, device_name, resolve_runtime
from imagic.errors import InvalidParamsError, OutputDirError
from imagic.method.denoising import training_scheduler
from imagic.outputs import staged_output_dir
from imagic.toyworld.config import EVAL_SEED_START, ToyTrainParams
from imagic.toyworld.folder import (
    ALONGSIDE_DIR,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    ENVIRONMENT_FILE,
    GRID_FILE,
    LOSSES_FILE,
    MODEL_DIR,
    PHASES,
    SAMPLES_DIR,
    check_branch_recipe,
    list_checkpoints,
    prepare_training_folder,
    write_atomically,
    write_json,
)
from imagic.toyworld.model import build_toy_pipeline, save_toy_pipeline
from imagic.toyworld.scenes import (
    Scene,
    canonical_caption,
    caption,
    masks,
    render,
    render_array,
    sample_scene,
)

CHECKPOINT_FORMAT = 1
SCALING_SCENES = 256  # scenes whose latents set the VAE scaling factor, as SD did with its data
DECODER_PREFIXES = ("decoder.", "post_quant_conv.")  # the VAE weights phase c trains
REFERENCE_OBJECT_SHARE = 100 / 64**2  # phase c: an object this share of the image keeps its weight

StepHook = Callable[[str, int, float], None]
"""Called after every optimizer step (and its checkpoint) with (phase, step, loss)."""


@dataclass(frozen=True)
class ToyTrainResult:
    """Where a finished run put its outputs and where it started from."""

    out_dir: Path
    model_dir: Path
    grid: Path
    losses: Path
    device: str
    resumed_from: tuple[str, int] | None
    """(phase, step) of the checkpoint the run continued from; None for a fresh start."""


# ---------------------------------------------------------------------------------------------
# Data: every batch is a function of (seed, phase, step)


def _stream_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed for one named stream; `random.Random(str)` hashes with sha512 everywhere."""
    return random.Random("/".join(str(part) for part in (seed, *parts))).getrandbits(63)


def training_scenes(
    seed: int, phase: str, step: int, batch_size: int, caption_dropout: float
) -> tuple[list[Scene], list[str]]:
    """(scenes, captions) of one step; empty captions are the dropped ones."""
    rng = random.Random(_stream_seed(seed, phase, step, "data"))
    scenes = [sample_scene(rng.randrange(EVAL_SEED_START)) for _ in range(batch_size)]
    captions = ["" if rng.random() < caption_dropout else caption(scene, rng) for scene in scenes]
    return scenes, captions


def training_batch(
    seed: int, phase: str, step: int, batch_size: int, caption_dropout: float, image_size: int
) -> tuple[np.ndarray, list[str]]:
    """(images (B, H, W, 3) uint8, captions) of one step; empty captions are the dropped ones."""
    scenes, captions = training_scenes(seed, phase, step, batch_size, caption_dropout)
    return np.stack([render_array(scene, image_size) for scene in scenes]), captions


def object_pixel_weights(
    scenes: Sequence[Scene], image_size: int, object_weight: float, area_balance: float
) -> np.ndarray:
    """(B, H, W) float32: 1 per background pixel, and per pixel under an object
    `object_weight * max(1, reference area / object's area) ** area_balance`.

    With `area_balance` 0 every object pixel weighs `object_weight`, so a large square (about
    290 pixels at 64 px) counts 12 times as much as a small stick figure (25). With 1, an object
    smaller than the reference (`REFERENCE_OBJECT_SHARE` of the image, 100 pixels at 64 px)
    weighs as much in all as one of the reference's area, and larger objects keep
    `object_weight` per pixel.
    """
    weights = np.ones((len(scenes), image_size, image_size), dtype=np.float32)
    reference = REFERENCE_OBJECT_SHARE * image_size**2
    for weight, scene in zip(weights, scenes, strict=True):
        for mask in masks(scene, image_size):
            area = max(int(mask.sum()), 1)
            weight[mask] = object_weight * max(1.0, reference / area) ** area_balance
    return weights


def unet_batch(
    seed: int,
    step: int,
    batch_size: int,
    caption_dropout: float,
    image_size: int,
    latent_factor: int,
    object_weight: float = 1.0,
    area_balance: float = 0.0,
) -> tuple[np.ndarray, list[str], np.ndarray | None]:
    """(images, captions, latent cell weights (B, h, w) or None) of one phase b step.

    The weights (`unet_object_weight`, `unet_area_balance`) are `object_pixel_weights`
    averaged over each latent cell's pixels and divided by their mean per image, so every
    image keeps the weight of one image in the loss. None (object weight 1, area balance 0):
    the plain mean squared error, computed as it always was, so such a run's bytes do not
    change.

    Why: objects cover a few percent of a scene, so under a plain mean the UNet's error on a
    small stick figure's limbs or a star's points hardly moves the loss; phase c's decoder
    had the same problem and the same cure (`decoder_batch`). From the same phase a, seed and
    4000 steps, object weight 3 with area balance 1 took the samples right in all three from
    22 % to 76 % (benchmarks/README.md, "Phase b with object-weighted latents"), and at 8000
    steps the benchmark's caption adherence from 89.5 % to 91 %: the shipped weights' recipe.
    """
    scenes, captions = training_scenes(seed, "unet", step, batch_size, caption_dropout)
    images = np.stack([render_array(scene, image_size) for scene in scenes])
    if object_weight == 1.0 and area_balance == 0.0:
        return images, captions, None
    pixels = object_pixel_weights(scenes, image_size, object_weight, area_balance)
    cells = image_size // latent_factor
    weights = pixels.reshape(batch_size, cells, latent_factor, cells, latent_factor)
    weights = weights.mean(axis=(2, 4))
    return images, captions, weights / weights.mean(axis=(1, 2), keepdims=True)


def decoder_batch(
    seed: int,
    step: int,
    batch_size: int,
    object_weight: float,
    image_size: int,
    area_balance: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(images (B, H, W, 3) uint8, pixel weights (B, H, W)) of one phase c step.

    The weights are `object_pixel_weights`. With `area_balance` 0 a small stick figure counts
    12 times less than a large square, and the decoder blurred its 1-pixel limbs into a
    triangle; with 1 it counts as a 100-pixel object (giving large objects less weight too cost
    the faces their eyes, benchmarks/README.md). The weights are divided by their mean, so the
    loss keeps the scale of a plain mean squared error.
    """
    rng = random.Random(_stream_seed(seed, "decoder", step, "data"))
    scenes = [sample_scene(rng.randrange(EVAL_SEED_START)) for _ in range(batch_size)]
    images = np.stack([render_array(scene, image_size) for scene in scenes])
    weights = object_pixel_weights(scenes, image_size, object_weight, area_balance)
    return images, weights / weights.mean()


def random_crops(
    seed: int, phase: str, step: int, crop_size: int, grid: int, *batches: np.ndarray
) -> list[np.ndarray]:
    """Each batch (B, H, W, ...) cut to the same random crop_size square per image.

    Why (phase a, `vae_crop_size`): a convolutional VAE learns to keep small shapes and thin
    limbs from a 32-px crop as well as from a 64-px scene, at about a quarter of the cost per
    step, and the VAE is this CPU's slow part; the same minutes buy about four times the steps
    (benchmarks/README.md, "Training the VAE on crops"). Crops start on multiples of `grid`,
    the VAE's downsampling factor, so every object keeps the place within its latent cells
    that it has in whole scenes; the windows are a function of (seed, phase, step), like
    everything else in a batch. Phase c stays on whole scenes: a VAE that has only seen crops
    tints a whole scene's borders and draws ghosts on empty background.
    """
    count, size = batches[0].shape[:2]
    rng = random.Random(_stream_seed(seed, phase, step, "crop"))
    choices = range(0, size - crop_size + 1, grid)
    starts = [(rng.choice(choices), rng.choice(choices)) for _ in range(count)]
    return [
        np.stack(
            [
                item[y : y + crop_size, x : x + crop_size]
                for item, (y, x) in zip(batch, starts, strict=True)
            ]
        )
        for batch in batches
    ]


def kl_scale(image_size: int, crop_size: int | None) -> float:
    """What phase a multiplies a crop's KL (summed per image) by: the whole scene's area over
    the crop's, 1 without crops.

    Why: phase a's loss is a per-pixel mean squared error plus the KL summed over an image's
    latents. A 32-px crop of a 64-px scene has a quarter of the latents but the same per-pixel
    error, so unscaled its KL weighed a quarter as much, and the VAE it trained encoded with
    half the posterior noise of a whole-scene one (in the UNet's units, mean 0.30 against
    0.57, median 0.11 against 0.51; benchmarks/README.md, "Crops with the KL scaled"), and
    the one full run on such latents made much worse samples. Scaled, every latent weighs what
    it does in a whole scene.
    """
    return 1.0 if crop_size is None else (image_size / crop_size) ** 2


def vae_batch(
    seed: int, step: int, batch_size: int, image_size: int, crop_size: int | None, grid: int
) -> np.ndarray:
    """The images (B, H, W, 3) uint8 of one phase a step: whole scenes or their crops."""
    images, _ = training_batch(seed, "vae", step, batch_size, 0.0, image_size)
    if crop_size is not None:
        (images,) = random_crops(seed, "vae", step, crop_size, grid, images)
    return images


class StepBatches(torch.utils.data.Dataset):
    """The batches of steps `first` to `last` of one phase, item i being step first + i.

    A batch is a pure function of its step, so any worker process can make any of them and
    the run's numbers do not depend on how many workers there are.
    """

    def __init__(self, make: Callable[[int], Any], first: int, last: int) -> None:
        self.make, self.first, self.last = make, first, last

    def __len__(self) -> int:
        return self.last - self.first + 1

    def __getitem__(self, index: int) -> Any:
        return self.make(self.first + index)


def _unchanged(batch: Any) -> Any:
    """The DataLoader's collate step: keep numpy arrays and caption lists as they are."""
    return batch


def phase_batches(make: Callable[[int], Any], first: int, last: int, workers: int) -> Iterable[Any]:
    """The batches of steps first..last in order, rendered ahead by `workers` processes.

    Why: rendering 32 scenes with PIL takes about 25 ms of one core. On a GPU that is as long
    as the VAE's whole step, so the model would wait for its data; worker processes render the
    next batches meanwhile (benchmarks/README.md, "Training speed"). With 0 the batches are made
    in this process, one per step, as on a CPU whose cores torch already uses.
    """
    if workers == 0:
        return map(make, range(first, last + 1))
    return torch.utils.data.DataLoader(
        StepBatches(make, first, last),
        batch_size=None,  # each item is already a whole batch
        num_workers=workers,
        collate_fn=_unchanged,
        prefetch_factor=4,
    )


def default_data_workers(device: torch.device) -> int:
    """0 on a CPU, where torch's threads already use the cores; else up to 4, one core left."""
    if device.type == "cpu":
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def learning_rate(base: float, step: int, warmup: int, decay_until: int | None = None) -> float:
    """Linear warm-up over `warmup` steps, then constant, or with `decay_until` a cosine decay
    to 0 at that step (the curve of diffusers' `get_cosine_schedule_with_warmup`).

    A function of the step only, so a resumed run continues the schedule exactly.
    """
    if step <= warmup:
        return base * step / warmup
    if decay_until is None:
        return base
    progress = min(1.0, (step - warmup) / max(1, decay_until - warmup))
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


ENVIRONMENT_PACKAGES = ("torch", "diffusers", "transformers", "numpy", "pillow")


def run_environment(device: torch.device) -> dict[str, Any]:
    """The machine and software of a run: what decides its floating-point results besides
    the recipe.

    Why: a run is reproducible bit for bit only on the same kind of machine. torch picks its
    CPU kernels by the processor's vector instructions (`cpu_capability`: AVX2, AVX512, ...)
    and splits work by thread count, each with its own rounding, and training amplifies the
    differences: phase a of the previous release's recipe, rerun on another machine (an AVX2
    AMD EPYC) with the same torch build and threads, and with code that trains phase a bit
    for bit as that release's commit did there, gave an encoder up to 0.27 away from its
    weights' after 4000 steps (docs/toy-world-history.md, "Provenance"). When a reproduction
    differs, this record says whether the machines did.
    """
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": device_name(device),
        "cpu": cpu_model_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        **{name: importlib.metadata.version(name) for name in ENVIRONMENT_PACKAGES},
    }


def eval_scenes(count: int) -> list[Any]:
    """The held-out scenes the sample grids show: seeds EVAL_SEED_START, +1, ..."""
    return [sample_scene(EVAL_SEED_START + index) for index in range(count)]


def _to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1], as Stable Diffusion's VAE expects."""
    tensor = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float()
    return tensor / 127.5 - 1.0


def _to_images(tensor: torch.Tensor) -> list[Image.Image]:
    array = ((tensor.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(item.permute(1, 2, 0).cpu().numpy(), "RGB") for item in array]


# ---------------------------------------------------------------------------------------------
# Sample grids


def caption_grid(
    cells: Sequence[tuple[str, Sequence[Image.Image]]],
    *,
    title: str = "",
    columns: int = 4,
    scale: int = 2,
) -> Image.Image:
    """A grid of cells, each a caption (wrapped) above its images side by side, under `title`.

    `imagic.grid.make_grid` labels rows and columns with one short label each; toy captions
    are sentences, so here every cell carries its own wrapped caption. Images are enlarged
    `scale` times without smoothing, so 64 px scenes stay crisp and legible.
    """
    font = ImageFont.load_default(size=11)
    pad = 6
    image_w, image_h = cells[0][1][0].size
    strip_w = len(cells[0][1]) * (image_w * scale + pad) - pad
    char_w = max(1.0, font.getlength("abcdefghijklmnopqrstuvwxyz") / 26)
    wrapped = [textwrap.wrap(text or "(empty caption)", int(strip_w / char_w)) for text, _ in cells]
    line_h = int(font.getbbox("Ag")[3]) + 2
    text_h = max(len(lines) for lines in wrapped) * line_h
    cell_w, cell_h = strip_w + 2 * pad, text_h + image_h * scale + 3 * pad
    rows = math.ceil(len(cells) / columns)
    title_h = line_h + pad if title else 0
    width = max(min(columns, len(cells)) * cell_w, int(font.getlength(title)) + 2 * pad)
    canvas = Image.new("RGB", (width, title_h + rows * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, pad), title, fill="black", font=font)
    for index, ((_, images), lines) in enumerate(zip(cells, wrapped, strict=True)):
        left = (index % columns) * cell_w + pad
        top = title_h + (index // columns) * cell_h + pad
        for number, line in enumerate(lines):
            draw.text((left, top + number * line_h), line, fill="black", font=font)
        for number, image in enumerate(images):
            big = image.resize((image_w * scale, image_h * scale), Image.Resampling.NEAREST)
            canvas.paste(big, (left + number * (image_w * scale + pad), top + text_h + pad))
    return canvas


# ---------------------------------------------------------------------------------------------
# The trainer


@contextlib.contextmanager
def _evaluating(*modules: torch.nn.Module) -> Iterator[None]:
    """Eval mode for a block, then each module's previous mode back.

    Restoring the previous mode rather than calling `.train()` matters for exact resumption:
    with the frozen VAE switched back to train mode after a mid-phase grid, the next UNet step
    was observed (CPU, torch 2.13) to give the same loss but bit-different gradients, so the
    run drifted from one resumed from that checkpoint, where the VAE stays in eval mode.
    """
    modes = [module.training for module in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.train(mode)


def _python_rng_state() -> list[Any]:
    version, state, gauss = random.getstate()
    return [version, list(state), gauss]


def _numpy_rng_state() -> list[Any]:
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return [name, keys.tolist(), position, has_gauss, gauss]


class ToyTrainer:
    """Holds the models, optimizers and counters of one training folder; `run` trains them."""

    def __init__(
        self,
        params: ToyTrainParams,
        *,
        on_step: StepHook | None = None,
        progress: bool = True,
        decoder_only: bool = False,
    ) -> None:
        """`decoder_only`: this trainer runs phase c alone, in the folder `decoder_alongside`
        gives it, from a checkpoint taken at any point of phase b (`train_decoder_alongside`)."""
        self.params = params
        self.on_step = on_step
        self.progress = progress
        self.decoder_only = decoder_only
        self.out = prepare_training_folder(params)
        self.runtime: Runtime = resolve_runtime(params.device, params.precision)
        self.device = self.runtime.device
        workers = params.data_workers
        self.data_workers = default_data_workers(self.device) if workers is None else workers
        self.pipe = build_toy_pipeline(params.model, params.seed).to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self.noise_scheduler = training_scheduler(self.pipe)
        self.vae = self.pipe.vae
        self.text_encoder = self.pipe.text_encoder
        self.unet = self.pipe.unet
        self.trained = [*self.text_encoder.parameters(), *self.unet.parameters()]
        self.vae_optimizer = torch.optim.AdamW(
            self.vae.parameters(), lr=params.vae_learning_rate, weight_decay=params.weight_decay
        )
        self.unet_optimizer = torch.optim.AdamW(
            self.trained, lr=params.unet_learning_rate, weight_decay=params.weight_decay
        )
        self.ema = [param.detach().clone() for param in self.trained]
        self.decoder_params = [
            param
            for name, param in self.vae.named_parameters()
            if name.startswith(DECODER_PREFIXES)
        ]
        self.decoder_optimizer = torch.optim.AdamW(
            self.decoder_params, lr=params.decoder_learning_rate, weight_decay=params.weight_decay
        )
        self.steps = {phase: 0 for phase in PHASES}
        self.scaling_factor: float | None = None
        self.alongside: multiprocessing.process.BaseProcess | None = None  # run_alongside's
        self.losses: dict[str, list[dict[str, float]]] = {phase: [] for phase in PHASES}
        self.resumed_from: tuple[str, int] | None = None

    # -- checkpoints --------------------------------------------------------------------------

    def _phase_position(self) -> tuple[str, int]:
        """The phase and step the newest checkpoint would be named after."""
        if self.steps["decoder"]:
            return "decoder", self.steps["decoder"]
        if self.steps["unet"] or self.scaling_factor is not None:
            return "unet", self.steps["unet"]
        return "vae", self.steps["vae"]

    def save_checkpoint(self) -> Path:
        """Write everything a resumed run needs, atomically; prune the oldest checkpoints."""
        phase, step = self._phase_position()
        folder = self.out / CHECKPOINT_DIR
        folder.mkdir(exist_ok=True)
        state = self._checkpoint_state()
        path = folder / f"{phase}-{step:07d}.pt"
        write_atomically(path, lambda target: torch.save(state, target))
        for old in list_checkpoints(self.out)[: -self.params.keep_checkpoints]:
            old.unlink(missing_ok=True)
        self._write_losses()
        return path

    def _checkpoint_state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "params": self.params.model_dump(mode="json"),
            "steps": dict(self.steps),
            "scaling_factor": self.scaling_factor,
            "models": {
                "vae": self.vae.state_dict(),
                "text_encoder": self.text_encoder.state_dict(),
                "unet": self.unet.state_dict(),
            },
            "ema": self.ema,
            "optimizers": {
                "vae": self.vae_optimizer.state_dict(),
                "unet": self.unet_optimizer.state_dict(),
                "decoder": self.decoder_optimizer.state_dict(),
            },
            "losses": self.losses,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "python": _python_rng_state(),
                "numpy": _numpy_rng_state(),
            },
        }

    def _write_losses(self) -> None:
        """losses.json: per phase, one record per step, one record per line (diff-friendly)."""
        parts = []
        for phase in PHASES:
            records = ",\n  ".join(json.dumps(record) for record in self.losses[phase])
            parts.append(f' "{phase}": [\n  {records}\n ]' if records else f' "{phase}": []')
        text = "{\n" + ",\n".join(parts) + "\n}\n"
        write_atomically(self.out / LOSSES_FILE, lambda path: path.write_text(text))

    def load_checkpoint(self, path: Path, *, branch: bool = False) -> None:
        """Restore a checkpoint written by `save_checkpoint` (on any device).

        `branch`: the checkpoint is another folder's (`start_from`), whose recipe may differ
        from this run's in phase c's settings only (`check_branch_recipe`).
        """
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise OutputDirError(
                f"checkpoint '{path}' has format {state.get('format')!r}, not "
                f"{CHECKPOINT_FORMAT}; start over with --no-resume or choose a new --out."
            )
        if branch:
            check_branch_recipe(self.params, state["params"], state["steps"], path)
        self._check_steps_fit(state["steps"], path, branch)
        self.vae.load_state_dict(state["models"]["vae"])
        self.text_encoder.load_state_dict(state["models"]["text_encoder"])
        self.unet.load_state_dict(state["models"]["unet"])
        self.vae_optimizer.load_state_dict(state["optimizers"]["vae"])
        self.unet_optimizer.load_state_dict(state["optimizers"]["unet"])
        if "decoder" in state["optimizers"]:  # absent before phase c existed: not started yet
            self.decoder_optimizer.load_state_dict(state["optimizers"]["decoder"])
        self.ema = [tensor.to(self.device) for tensor in state["ema"]]
        self.steps = {**self.steps, **state["steps"]}
        self.losses = {**self.losses, **state["losses"]}
        self._set_scaling_factor(state["scaling_factor"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        version, python_state, gauss = rng["python"]
        random.setstate((version, tuple(python_state), gauss))
        name, keys, position, has_gauss, gauss = rng["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, gauss))
        self.resumed_from = self._phase_position()

    def _check_steps_fit(self, steps: dict[str, int], path: Path, branch: bool = False) -> None:
        """A folder cannot be resumed (or branched) to fewer steps than its checkpoint already
        trained, nor can an earlier phase go on once a later one started on its result."""
        other = "--start-from an earlier checkpoint" if branch else "--no-resume to start over"
        vae_done, unet_done = steps["vae"], steps["unet"]
        wanted = self.params.vae_steps
        if vae_done > wanted or (unet_done and vae_done != wanted):
            raise InvalidParamsError(
                f"vae_steps (--vae-steps) = {wanted}: the checkpoint '{path.name}' has "
                f"{vae_done} VAE steps and {unet_done} UNet steps. Pass --vae-steps {vae_done} "
                "to continue it (once the UNet phase started, the VAE whose latents it learns "
                f"cannot change), or {other}."
            )
        if self.decoder_only:  # phase c alongside phase b: its UNet is not the one trained
            return
        tuned = bool(steps.get("decoder"))  # phase c started: the UNet must stay as it is
        if unet_done > self.params.unet_steps or (tuned and unet_done != self.params.unet_steps):
            started = " and has started phase c, which tunes the decoder after it" if tuned else ""
            raise InvalidParamsError(
                f"unet_steps (--unet-steps) = {self.params.unet_steps}: the checkpoint "
                f"'{path.name}' already has {unet_done} UNet steps{started}; pass --unet-steps "
                f"{unet_done}{'' if tuned else ' or more'} to continue it, or {other}."
            )

    # -- phase a: the VAE ---------------------------------------------------------------------

    def _noise(self, generator: torch.Generator, shape: Sequence[int]) -> torch.Tensor:
        """Gaussian noise drawn on the CPU, so a seed means the same draws on every device."""
        return torch.randn(tuple(shape), generator=generator).to(self.device)

    def vae_step(self, step: int, images: np.ndarray) -> dict[str, float]:
        """One VAE optimizer step: MSE reconstruction plus `kl_weight` x KL (summed per image,
        scaled to a whole scene's area on crops: `kl_scale`)."""
        params = self.params
        pixels = _to_tensor(images, self.device)
        generator = torch.Generator().manual_seed(_stream_seed(params.seed, "vae", step, "noise"))
        with self.runtime.autocast():
            posterior = self.vae.encode(pixels).latent_dist
            mean, logvar = posterior.mean.float(), posterior.logvar.float()
            latents = mean + torch.exp(0.5 * logvar) * self._noise(generator, mean.shape)
            reconstruction = self.vae.decode(latents).sample
        mse = F.mse_loss(reconstruction.float(), pixels)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2, 3)).mean()
        scale = kl_scale(params.model.image_size, params.vae_crop_size)
        loss = mse + params.kl_weight * scale * kl
        rate = learning_rate(params.vae_learning_rate, step, params.warmup_steps)
        self._optimize(self.vae_optimizer, self.vae.parameters(), loss, rate)
        return {"step": step, "loss": loss.item(), "mse": mse.item(), "kl": kl.item()}

    def _optimize(
        self,
        optimizer: torch.optim.Optimizer,
        parameters: Any,
        loss: torch.Tensor,
        rate: float,
    ) -> None:
        for group in optimizer.param_groups:
            group["lr"] = rate
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(parameters), self.params.max_grad_norm)
        optimizer.step()

    # -- phase b: text encoder + UNet ---------------------------------------------------------

    def _set_scaling_factor(self, value: float | None) -> None:
        self.scaling_factor = value
        if value is not None:
            self.vae.register_to_config(scaling_factor=value)

    @torch.no_grad()
    def compute_scaling_factor(self) -> float:
        """1 / std of the latents of `SCALING_SCENES` training scenes, as SD chose 0.18215.

        The diffusion schedule assumes unit-variance data; the trained VAE's latents have
        whatever scale the KL term left them with.
        """
        chunks = []
        generator = torch.Generator().manual_seed(_stream_seed(self.params.seed, "scale"))
        for start in range(0, SCALING_SCENES, 64):
            images, _ = training_batch(
                self.params.seed, "scale", start, 64, 0.0, self.params.model.image_size
            )
            with _evaluating(self.vae), self.runtime.autocast():
                posterior = self.vae.encode(_to_tensor(images, self.device)).latent_dist
            mean, std = posterior.mean.float(), posterior.std.float()
            chunks.append(mean + std * self._noise(generator, mean.shape))
        return float(1.0 / torch.cat(chunks).std())

    def _encode_text(self, captions: Sequence[str]) -> torch.Tensor:
        tokenizer = self.pipe.tokenizer
        ids = tokenizer(
            list(captions),
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)
        return self.text_encoder(ids)[0]

    def unet_step(
        self, step: int, batch: tuple[np.ndarray, list[str], np.ndarray | None]
    ) -> dict[str, float]:
        """One text encoder + UNet step: DDPM noise (or v) prediction on VAE latents, each
        latent cell's squared error weighted by `unet_batch`'s weights when it gives some."""
        params = self.params
        images, captions, cell_weights = batch
        generator = torch.Generator().manual_seed(_stream_seed(params.seed, "unet", step, "noise"))
        with torch.no_grad(), self.runtime.autocast():
            posterior = self.vae.encode(_to_tensor(images, self.device)).latent_dist
        mean, std = posterior.mean.float(), posterior.std.float()
        assert self.scaling_factor is not None
        latents = (mean + std * self._noise(generator, mean.shape)) * self.scaling_factor
        noise = self._noise(generator, latents.shape)
        count = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, count, (len(latents),), generator=generator).to(self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        with self.runtime.autocast():
            prediction = self.unet(noisy, timesteps, self._encode_text(captions)).sample
        if cell_weights is None:
            loss = F.mse_loss(prediction.float(), target)
        else:
            weights = torch.from_numpy(cell_weights).to(self.device)[:, None]
            loss = (weights * (prediction.float() - target) ** 2).mean()
        rate = learning_rate(params.unet_learning_rate, step, params.warmup_steps)
        self._optimize(self.unet_optimizer, self.trained, loss, rate)
        self._update_ema(step)
        return {"step": step, "loss": loss.item()}

    # -- phase c: the VAE decoder ------------------------------------------------------------

    def decoder_step(self, step: int, batch: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
        """One decoder step: object-weighted squared error on latents of the frozen encoder."""
        params = self.params
        images, weights = batch
        pixels = _to_tensor(images, self.device)
        generator = torch.Generator().manual_seed(
            _stream_seed(params.seed, "decoder", step, "noise")
        )
        with torch.no_grad(), self.runtime.autocast():
            posterior = self.vae.encode(pixels).latent_dist
        mean, std = posterior.mean.float(), posterior.std.float()
        latents = mean + std * self._noise(generator, mean.shape)
        with self.runtime.autocast():
            reconstruction = self.vae.decode(latents).sample
        squared = (reconstruction.float() - pixels) ** 2
        loss = (torch.from_numpy(weights).to(self.device)[:, None] * squared).mean()
        rate = learning_rate(
            params.decoder_learning_rate, step, params.warmup_steps, params.decoder_steps
        )
        self._optimize(self.decoder_optimizer, self.decoder_params, loss, rate)
        return {"step": step, "loss": loss.item(), "mse": squared.mean().item()}

    @torch.no_grad()
    def _update_ema(self, step: int) -> None:
        """EMA with diffusers' warm-up: early on the average follows the weights closely."""
        decay = min(self.params.ema_decay, (1 + step) / (10 + step))
        # One fused call instead of a kernel per tensor; the same numbers as a loop of lerp_.
        torch._foreach_lerp_(self.ema, [param.detach() for param in self.trained], 1.0 - decay)

    @contextlib.contextmanager
    def ema_weights(self) -> Iterator[None]:
        """Temporarily put the EMA weights into the text encoder and UNet (what is saved)."""
        live = [param.detach().clone() for param in self.trained]
        with torch.no_grad():
            for param, average in zip(self.trained, self.ema, strict=True):
                param.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, saved in zip(self.trained, live, strict=True):
                    param.copy_(saved)

    # -- grids --------------------------------------------------------------------------------

    @torch.no_grad()
    def reconstruction_grid(self) -> Image.Image:
        """Held-out scenes and their VAE reconstructions (truth | reconstruction)."""
        scenes = eval_scenes(self.params.grid_size)
        size = self.params.model.image_size
        truth = [render(scene, size) for scene in scenes]
        pixels = _to_tensor(np.stack([np.asarray(image) for image in truth]), self.device)
        with _evaluating(self.vae), self.runtime.autocast():
            decoded = self.vae.decode(self.vae.encode(pixels).latent_dist.mean).sample
        cells = [
            (canonical_caption(scene), [image, rebuilt])
            for scene, image, rebuilt in zip(scenes, truth, _to_images(decoded), strict=True)
        ]
        title = f"VAE after {self.steps['vae']} steps: held-out scene | reconstruction"
        if self.steps["decoder"]:
            title += f" (decoder fine-tuned {self.steps['decoder']} steps)"
        return caption_grid(cells, title=title)

    @torch.no_grad()
    def sample_grid(self) -> Image.Image:
        """Held-out captions, their true scene and a sample from the EMA model (truth | sample)."""
        scenes = eval_scenes(self.params.grid_size)
        captions = [canonical_caption(scene) for scene in scenes]
        generator = torch.Generator().manual_seed(_stream_seed(self.params.seed, "grid"))
        with _evaluating(self.text_encoder, self.unet, self.vae), self.ema_weights():
            samples = self.pipe(
                captions,
                num_inference_steps=self.params.sample_steps,
                guidance_scale=self.params.guidance_scale,
                generator=generator,
                output_type="pil",
            ).images
        size = self.params.model.image_size
        cells = [
            (text, [render(scene, size), sample])
            for text, scene, sample in zip(captions, scenes, samples, strict=True)
        ]
        title = (
            f"UNet after {self.steps['unet']} steps: held-out scene | sample (EMA weights, "
            f"{self.params.sample_steps} DDIM steps, guidance {self.params.guidance_scale})"
        )
        return caption_grid(cells, title=title)

    def _save_grid(self, phase: str, step: int) -> None:
        grid = self.sample_grid() if phase == "unet" else self.reconstruction_grid()
        folder = self.out / SAMPLES_DIR
        folder.mkdir(exist_ok=True)
        write_atomically(folder / f"{phase}-{step:07d}.png", lambda path: grid.save(path, "PNG"))

    # -- the run ------------------------------------------------------------------------------

    def batch_maker(self, phase: str) -> Callable[[int], Any]:
        """The function step -> batch of a phase: module-level, so worker processes can run it."""
        params, size = self.params, self.params.model.image_size
        if phase == "vae":
            return functools.partial(
                vae_batch, params.seed, batch_size=params.batch_size, image_size=size,
                crop_size=params.vae_crop_size, grid=params.model.vae_factor,
            )  # fmt: skip
        if phase == "unet":
            return functools.partial(
                unet_batch, params.seed, batch_size=params.batch_size,
                caption_dropout=params.caption_dropout, image_size=size,
                latent_factor=params.model.vae_factor,
                object_weight=params.unet_object_weight, area_balance=params.unet_area_balance,
            )  # fmt: skip
        return functools.partial(
            decoder_batch, params.seed, batch_size=params.phase_c_batch_size,
            object_weight=params.decoder_object_weight, image_size=size,
            area_balance=params.decoder_area_balance,
        )  # fmt: skip

    def _log(self, message: str) -> None:
        if self.progress:
            tqdm.write(message, file=sys.stderr)

    def phase_step(self, phase: str) -> Callable[[int, Any], dict[str, float]]:
        """Put the models in the state `phase` trains in and return its step function.

        a trains the whole VAE; b freezes it (the UNet learns its latents); c trains the
        decoder alone, so the encoder and the latents stay what the UNet learned.
        """
        if phase == "vae":
            self.vae.train()
            self.vae.requires_grad_(True)
            return self.vae_step
        self.vae.eval()
        self.vae.requires_grad_(False)
        if phase == "unet":
            return self.unet_step
        for param in self.decoder_params:
            param.requires_grad_(True)
        return self.decoder_step

    def _run_phase(self, phase: str, total: int) -> None:
        step_fn = self.phase_step(phase)
        every = self.params.checkpoint_every
        done = self.steps[phase]
        batches = phase_batches(self.batch_maker(phase), done + 1, total, self.data_workers)
        bar = tqdm(
            total=total, initial=done, desc=f"toy {phase}", unit="step", disable=not self.progress,
            dynamic_ncols=True, file=sys.stderr, position=int(self.decoder_only),
        )  # fmt: skip
        with bar:
            for step, batch in zip(range(done + 1, total + 1), batches, strict=True):
                record = step_fn(step, batch)
                self.losses[phase].append(record)
                self.steps[phase] = step
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
                if step % every == 0 or step == total:
                    self._checkpoint(phase, step, every)
                if self.on_step is not None:
                    self.on_step(phase, step, record["loss"])

    def _checkpoint(self, phase: str, step: int, every: int) -> None:
        path = self.save_checkpoint()
        self._save_grid(phase, step)
        recent = [record["loss"] for record in self.losses[phase][-every:]]
        self._log(
            f"{phase} step {step}: mean loss {sum(recent) / len(recent):.5f} over the last "
            f"{len(recent)} steps; checkpoint {path.name}"
        )
        self.warn_if_alongside_failed()

    def warn_if_alongside_failed(self) -> None:
        """Say at once (once) that phase c's second process has stopped with an error.

        Why: phase b goes on to its end either way, and only then is the failure raised; on
        a CPU that can be two hours later. Told now, a user can stop the run and rerun it,
        which resumes both phases from their checkpoints.
        """
        process = self.alongside
        if process is None or process.exitcode in (None, 0):
            return
        warnings.warn(
            f"phase c, trained in a second process alongside phase b, stopped with exit code "
            f"{process.exitcode} (its error is above). Phase b goes on and the run fails at its "
            "end; stop it now and rerun the same command to resume both phases.",
            stacklevel=2,
        )
        self.alongside = None  # warned

    def run(self) -> ToyTrainResult:
        """Resume from the newest checkpoint (if allowed), train the phases, export the model."""
        checkpoints = list_checkpoints(self.out) if self.params.resume else []
        resumed_from = None
        if checkpoints:
            self.load_checkpoint(checkpoints[-1])
            resumed_from = checkpoints[-1].name
            self._log(f"resuming {self.out} from {resumed_from}")
        elif self.params.start_from is not None:
            source = Path(self.params.start_from).expanduser().absolute()
            self.load_checkpoint(source, branch=True)
            resumed_from = str(source)
            self._log(f"starting {self.out} from another folder's checkpoint {source}")
        self._record_environment(resumed_from)
        write_json(self.out / CONFIG_FILE, self.params.model_dump(mode="json"))  # latest run
        self._log(
            f"training the toy model on {self.device} ({self.runtime.precision}), "
            f"{self.data_workers} data worker process(es)"
        )
        if self.steps["unet"] == 0 and self.scaling_factor is None:
            self._run_phase("vae", self.params.vae_steps)
            self._set_scaling_factor(self.compute_scaling_factor())
            self._log(f"VAE latent scaling factor {self.scaling_factor:.5f}")
        if self._trains_phase_c_alongside():
            self.run_alongside()
        else:
            self._warn_of_unused_alongside_folder()
            self._run_phase("unet", self.params.unet_steps)
            if self.params.decoder_steps:
                self._run_phase("decoder", self.params.decoder_steps)
        self.vae.requires_grad_(False)
        return self._export()

    # -- phases b and c at once -----------------------------------------------------------------

    def run_alongside(self) -> None:
        """Phase b here and phase c in a second process, then phase c's decoder merged in.

        Phase c starts from the VAE of phase a, which phase b never changes, and its batches
        and noise depend only on (seed, step), so its decoder is the one a sequential run
        makes with the same thread count. The second process trains in its own training
        folder (`ALONGSIDE_DIR`) with its own checkpoints, so either side resumes where it
        stopped. Why: on a 2-core CPU a second torch thread speeds these small models' steps
        up by only about 1.5 times, so two one-thread processes do more work per second than
        one two-thread one (benchmarks/README.md, "Phases b and c at once").
        """
        threads = torch.get_num_threads()
        unet_threads, decoder_threads = alongside_threads(threads)
        folder = self._seed_alongside_folder()
        self._log(
            f"phase c trains in a second process alongside phase b ({unet_threads} + "
            f"{decoder_threads} torch threads), in {folder}"
        )
        process = multiprocessing.get_context("spawn").Process(
            target=train_decoder_alongside,
            args=(self._alongside_params(folder), decoder_threads, self.progress),
            name="imagic-toy-phase-c",
        )
        process.start()
        self.alongside = process
        try:
            torch.set_num_threads(unet_threads)
            self._run_phase("unet", self.params.unet_steps)
            process.join()
        finally:
            self.alongside = None
            torch.set_num_threads(threads)
            if process.is_alive():  # phase b failed or was interrupted: stop phase c too
                process.terminate()
                process.join()
        if process.exitcode != 0:
            raise RuntimeError(
                f"phase c, trained in a second process alongside phase b, stopped with exit "
                f"code {process.exitcode} (its error is above). Phase b is complete; rerun the "
                f"same command to resume phase c from its newest checkpoint in {folder}."
            )
        self._merge_alongside_decoder(folder)

    def _trains_phase_c_alongside(self) -> bool:
        """Whether phase c goes to a second process: asked for, not started here, and phase b
        still has steps to train or phase c has begun in its own folder (resumed there, so
        its bytes stay those of one thread). A branch from the end of phase b trains phase c
        here, on all the threads: there is no phase b to share the cores with."""
        params = self.params
        if not (params.decoder_alongside and params.decoder_steps) or self.steps["decoder"]:
            return False
        return self.steps["unet"] < params.unet_steps or bool(
            list_checkpoints(self.out / ALONGSIDE_DIR)
        )

    def _warn_of_unused_alongside_folder(self) -> None:
        """A folder started with `decoder_alongside` and resumed without it trains phase c
        again here, one thread count differently: say so, and how to keep the other."""
        folder = self.out / ALONGSIDE_DIR
        if folder.is_dir() and not self.steps["decoder"]:
            warnings.warn(
                f"{folder} holds phase c trained alongside phase b; without "
                "--decoder-alongside phase c is trained again after phase b instead. Stop and "
                "rerun with --decoder-alongside to resume it.",
                stacklevel=2,
            )

    def _alongside_params(self, folder: Path) -> ToyTrainParams:
        return self.params.model_copy(
            update={
                "out": str(folder),
                "resume": True,
                "start_from": None,
                "decoder_alongside": False,
            }
        )

    def _seed_alongside_folder(self) -> Path:
        """Make phase c's folder with this trainer's state as its first checkpoint (once).

        Written here, before the second process starts, so that phase a's VAE is on disk for
        phase c even after this folder's own checkpoints of phase b have replaced phase a's.
        """
        folder = self.out / ALONGSIDE_DIR
        if list_checkpoints(folder):
            return folder
        prepare_training_folder(self._alongside_params(folder))
        (folder / CHECKPOINT_DIR).mkdir(exist_ok=True)
        state = self._checkpoint_state()
        path = folder / CHECKPOINT_DIR / f"unet-{self.steps['unet']:07d}.pt"
        write_atomically(path, lambda target: torch.save(state, target))
        return folder

    def _merge_alongside_decoder(self, folder: Path) -> None:
        """Take the finished phase c's decoder, optimizer, losses and grids; drop its folder."""
        newest = list_checkpoints(folder)[-1]
        if newest.name != f"decoder-{self.params.decoder_steps:07d}.pt":
            raise RuntimeError(
                f"phase c's folder {folder} ends at {newest.name}, not at its last step"
            )
        state = torch.load(newest, map_location="cpu", weights_only=True)
        vae = state["models"]["vae"]
        for name, tensor in self.vae.state_dict().items():
            if not name.startswith(DECODER_PREFIXES) and not torch.equal(tensor.cpu(), vae[name]):
                raise RuntimeError(f"phase c's folder {folder} has another VAE ({name} differs)")
        self.vae.load_state_dict(vae)
        self.decoder_optimizer.load_state_dict(state["optimizers"]["decoder"])
        self.steps["decoder"] = state["steps"]["decoder"]
        self.losses["decoder"] = state["losses"]["decoder"]
        (self.out / SAMPLES_DIR).mkdir(exist_ok=True)
        for grid in sorted((folder / SAMPLES_DIR).glob("decoder-*.png")):
            shutil.copyfile(grid, self.out / SAMPLES_DIR / grid.name)
        self.save_checkpoint()  # the state a sequential run has at the end of phase c
        shutil.rmtree(folder)

    def _record_environment(self, resumed_from: str | None) -> None:
        """Append this run's machine and software to environment.json (one entry per run:
        a resumed folder may have been trained on several machines)."""
        path = self.out / ENVIRONMENT_FILE
        runs = json.loads(path.read_text()) if path.is_file() else []
        entry = {"resumed_from": resumed_from, **run_environment(self.device)}
        if self.params.decoder_alongside:  # phase b's and phase c's threads (run_alongside)
            entry["alongside_threads"] = list(alongside_threads(torch.get_num_threads()))
        runs.append(entry)
        write_json(path, runs)

    def _export(self) -> ToyTrainResult:
        """Write losses.json, the final grid and the EMA pipeline (fp16) with its checksums."""
        self._write_losses()
        grid = self.sample_grid()
        grid_path = self.out / GRID_FILE
        write_atomically(grid_path, lambda path: grid.save(path, "PNG"))
        model_dir = self.out / MODEL_DIR
        with staged_output_dir(model_dir, overwrite=True) as staging, self.ema_weights():
            save_toy_pipeline(self.pipe, staging)
        self._log(f"wrote the toy model to {model_dir}")
        return ToyTrainResult(
            out_dir=self.out,
            model_dir=model_dir,
            grid=grid_path,
            losses=self.out / LOSSES_FILE,
            device=str(self.device),
            resumed_from=self.resumed_from,
        )


def alongside_threads(threads: int) -> tuple[int, int]:
    """torch threads of phase b and of phase c when they run at once: half each, at least 1."""
    unet_threads = max(1, threads // 2)
    return unet_threads, max(1, threads - unet_threads)


def train_decoder_alongside(params: ToyTrainParams, threads: int, progress: bool) -> None:
    """The second process of `ToyTrainer.run_alongside`: phase c in its own folder."""
    torch.set_num_threads(threads)
    trainer = ToyTrainer(params, progress=progress, decoder_only=True)
    trainer.load_checkpoint(list_checkpoints(trainer.out)[-1])
    trainer._run_phase("decoder", params.decoder_steps)


def train_toy_model(
    params: ToyTrainParams, *, on_step: StepHook | None = None, progress: bool = True
) -> ToyTrainResult:
    """Train (or resume training) the toy model into `params.out`; see the module docstring."""
    started = time.perf_counter()
    result = ToyTrainer(params, on_step=on_step, progress=progress).run()
    if progress:
        tqdm.write(f"done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return result
