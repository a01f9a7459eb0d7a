"""Load Stable Diffusion pipelines, and save / load the state that Imagic fine-tunes.

A model is a local diffusers folder (what `save_pretrained` writes) or a Hugging Face Hub id.
Fine-tuned state is either the full UNet (safetensors, fp16 by default, written by the same
`save_config` + safetensors layout that `UNet2DConditionModel.from_pretrained` reads) or a peft
LoRA adapter (`adapter_config.json` + `adapter_model.safetensors`). Either way a marker file,
`finetuned.json`, is written last, so a half-written state is never loaded as complete.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from peft import LoraConfig, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from imagic.errors import FinetunedStateError, ModelLoadError
from imagic.toyworld.shipped import resolve_model

SCHEDULERS: dict[str, type[SchedulerMixin]] = {
    "ddim": DDIMScheduler,
    "ddpm": DDPMScheduler,
    "pndm": PNDMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler_ancestral": EulerAncestralDiscreteScheduler,
    "dpm_solver": DPMSolverMultistepScheduler,
}
REQUIRED_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
LORA_ADAPTER_NAME = "imagic"
LORA_TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]
"""The attention projections, as in diffusers' train_text_to_image_lora.py."""
FINETUNED_MARKER = "finetuned.json"
_UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"
_LORA_WEIGHTS = "adapter_model.safetensors"


def load_pipeline(
    model: str,
    *,
    revision: str | None = None,
    scheduler: str = "ddim",
    device: torch.device | str = "cpu",
) -> StableDiffusionPipeline:
    """Load an SD 1.x/2.x pipeline in fp32 (the master weights), with the sampling scheduler set.

    A path that exists is read as a local folder; anything else that looks like `owner/name`
    is looked up on the hub (or the local hub cache when offline). `imagic:toy` is the toy
    model shipped in the package, used once its checksums match.
    """
    model = resolve_model(model)
    folder = Path(model).expanduser()
    if folder.exists():
        _check_pipeline_folder(folder)
        source = str(folder)
    elif _looks_like_hub_id(model):
        source = model
    else:
        raise ModelLoadError(
            f"model = {model!r}: no such folder. Pass a local diffusers folder (one holding "
            "model_index.json), or a hub id like 'owner/name' where the hub is reachable. "
            "A tiny test model can be made with: imagic tiny-model --out ./tiny-sd"
        )
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            source,
            revision=revision,
            torch_dtype=torch.float32,
            local_files_only=_hub_offline(),
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(_load_failure_message(model, folder.exists(), exc)) from exc
    pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_finetuned_pipeline(
    model: str,
    state_dir: str | os.PathLike[str],
    *,
    revision: str | None = None,
    scheduler: str = "ddim",
    device: torch.device | str = "cpu",
) -> StableDiffusionPipeline:
    """Rebuild an edit's fine-tuned pipeline from its base model and its stored state.

    This is how an eta/seed sweep is re-run later without repeating stages A and B.
    """
    pipe = load_pipeline(model, revision=revision, scheduler=scheduler, device=device)
    load_finetuned_state(pipe, state_dir)
    return pipe


_FINGERPRINTS: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def model_fingerprint(model: str, revision: str | None = None) -> str:
    """What identifies a model's weights, for content-addressed stage keys.

    A local folder is identified by the sha256 of all its files (cached per process while no
    file's size or mtime changes), so retraining a folder in place never hits a stale cache. A
    hub id is identified by id and revision: pin a commit hash as the revision for exact reuse.
    The shipped toy model (`imagic:toy`) is identified by its files, like a folder.
    """
    folder = Path(resolve_model(model)).expanduser()
    if not folder.is_dir():
        return f"hub:{model}@{revision or 'main'}"
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    stats = tuple(
        (str(path.relative_to(folder)), path.stat().st_size, path.stat().st_mtime_ns)
        for path in files
    )
    cache_key = (str(folder.resolve()), stats)
    if cache_key not in _FINGERPRINTS:
        digest = hashlib.sha256()
        for path, (name, _, _) in zip(files, stats, strict=True):
            digest.update(name.encode() + b"\0")
            with path.open("rb") as handle:
                for chunk in iter(lambda handle=handle: handle.read(1 << 22), b""):
                    digest.update(chunk)
        _FINGERPRINTS[cache_key] = f"sha256:{digest.hexdigest()}"
    return _FINGERPRINTS[cache_key]


def _check_pipeline_folder(folder: Path) -> None:
    """Fail early, naming what is missing, rather than deep inside from_pretrained."""
    if not folder.is_dir():
        raise ModelLoadError(f"model = '{folder}': is a file; pass the pipeline's folder.")
    if not (folder / "model_index.json").is_file():
        raise ModelLoadError(
            f"model = '{folder}': not a diffusers pipeline folder (no model_index.json). "
            "Pass the folder that StableDiffusionPipeline.save_pretrained wrote, with "
            f"subfolders {', '.join(REQUIRED_COMPONENTS)}."
        )
    missing = [name for name in REQUIRED_COMPONENTS if not (folder / name).is_dir()]
    if missing:
        raise ModelLoadError(
            f"model = '{folder}': incomplete pipeline folder, missing {', '.join(missing)}. "
            "Copy or download the whole pipeline folder again."
        )


def _hub_offline() -> bool:
    """huggingface_hub reads HF_HUB_OFFLINE once at import; honour it when set later too."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _looks_like_hub_id(model: str) -> bool:
    parts = model.split("/")
    return len(parts) == 2 and all(parts) and not model.startswith((".", "~"))


def _load_failure_message(model: str, is_folder: bool, exc: BaseException) -> str:
    if is_folder:
        return (
            f"model = '{model}': could not load it as a Stable Diffusion pipeline ({exc}). "
            "Check that it is a complete diffusers folder of an SD 1.x/2.x model."
        )
    local_name = model.split("/")[-1]
    return (
        f"model = {model!r}: could not load it from the Hugging Face Hub or its local cache "
        f"(offline or unknown id?): {type(exc).__name__}. Looked for the hub id {model!r}. "
        f"Where the hub is reachable, run `hf download {model} --local-dir ./{local_name}` "
        "and pass that folder with --model."
    )


def sd1_ddim_scheduler(
    prediction_type: str = "epsilon", *, zero_terminal_snr: bool = False
) -> DDIMScheduler:
    """SD 1.x's noise schedule (scaled-linear betas 0.00085-0.012) with DDIM sampling.

    What the models this project builds itself (the tiny random one, the toy one) sample with,
    so every code path sees the same schedule as on a real SD 1.x checkpoint.

    `zero_terminal_snr` applies Lin et al. 2023 ("Common Diffusion Noise Schedules and Sample
    Steps Are Flawed"): the betas are rescaled so the last training step is pure noise, and
    sampling starts there ("trailing" timesteps). SD 1.x's own schedule leaves about 7 % of the
    image in x_T, so a model can learn where an object is from that leak instead of from the
    text, and then ignores position words when sampling starts from pure noise. It needs
    v-prediction: at zero SNR the noise itself is all an epsilon model sees.
    """
    if zero_terminal_snr and prediction_type != "v_prediction":
        raise ValueError(
            f"prediction_type = {prediction_type!r} with zero_terminal_snr: at zero SNR an "
            "epsilon model cannot recover the image; use prediction_type 'v_prediction'."
        )
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
        rescale_betas_zero_snr=zero_terminal_snr,
        timestep_spacing="trailing" if zero_terminal_snr else "leading",
    )


def make_scheduler(name: str, config: Any) -> SchedulerMixin:
    """Build sampling scheduler `name` from the model's scheduler config (keeps prediction type)."""
    check_scheduler_fits(name, config)
    return SCHEDULERS[name].from_config(config)


def check_scheduler_fits(name: str, config: Any) -> None:
    """Refuse an unknown sampler, or one that cannot follow the model's noise schedule."""
    if name not in SCHEDULERS:
        raise ModelLoadError(f"scheduler = {name!r}: unknown; use one of {sorted(SCHEDULERS)}.")
    scheduler_class = SCHEDULERS[name]
    if config.get("rescale_betas_zero_snr") and not _supports_zero_terminal_snr(scheduler_class):
        able = sorted(n for n, c in SCHEDULERS.items() if _supports_zero_terminal_snr(c))
        raise ModelLoadError(
            f"scheduler = {name!r}: this model was trained with a zero-terminal-SNR schedule "
            f"(rescale_betas_zero_snr), which {scheduler_class.__name__} cannot represent, so "
            f"it would sample a schedule the model never saw; use one of {able}."
        )


def check_scheduler_for_model(model: str, name: str) -> None:
    """`check_scheduler_fits` before any stage runs, from a local model's scheduler config.

    A hub model's config is only known once it is downloaded; it is checked when loaded.
    """
    config_file = Path(resolve_model(model)).expanduser() / "scheduler" / "scheduler_config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    check_scheduler_fits(name, config)


def _supports_zero_terminal_snr(scheduler_class: type[SchedulerMixin]) -> bool:
    return "rescale_betas_zero_snr" in inspect.signature(scheduler_class.__init__).parameters


def model_resolution(pipe: StableDiffusionPipeline) -> tuple[int, int]:
    """(width, height) in pixels the model was built for: UNet sample size x VAE scale factor."""
    sample_size = pipe.unet.config.sample_size
    height, width = (
        (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)
    )
    return width * pipe.vae_scale_factor, height * pipe.vae_scale_factor


def prediction_type(pipe: StableDiffusionPipeline) -> str:
    """'epsilon' (SD 1.x) or 'v_prediction' (SD 2.x 768 px)."""
    return pipe.scheduler.config.get("prediction_type", "epsilon")


def add_lora_adapter(unet: UNet2DConditionModel, rank: int) -> None:
    """Inject trainable LoRA adapters into the UNet's attention projections (alpha = rank)."""
    config = LoraConfig(
        r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGET_MODULES
    )
    unet.add_adapter(config, adapter_name=LORA_ADAPTER_NAME)


def has_lora_adapter(unet: UNet2DConditionModel) -> bool:
    return LORA_ADAPTER_NAME in (getattr(unet, "peft_config", None) or {})


def save_finetuned_state(
    unet: UNet2DConditionModel,
    out_dir: str | os.PathLike[str],
    *,
    save_dtype: Literal["float16", "float32"] = "float16",
) -> Path:
    """Store the fine-tuned UNet (LoRA adapter if it has one, else full weights) atomically.

    Written into a temporary sibling folder and renamed into place, marker last: a crash leaves
    no folder under `out_dir`, and an existing folder is never partly overwritten.
    """
    target = Path(out_dir)
    if target.exists():
        raise FinetunedStateError(
            f"fine-tuned state folder '{target}' already exists; remove it or choose another "
            "folder (stored state is never overwritten)."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        if has_lora_adapter(unet):
            marker = _write_lora(unet, staging)
        else:
            marker = _write_full_unet(unet, staging, getattr(torch, save_dtype))
        (staging / FINETUNED_MARKER).write_text(json.dumps(marker, indent=2))
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _write_lora(unet: UNet2DConditionModel, folder: Path) -> dict[str, Any]:
    config = unet.peft_config[LORA_ADAPTER_NAME]
    state = get_peft_model_state_dict(unet, adapter_name=LORA_ADAPTER_NAME)
    save_file(
        {k: v.detach().float().contiguous() for k, v in state.items()}, folder / _LORA_WEIGHTS
    )
    config.save_pretrained(str(folder))
    return {"kind": "lora", "rank": config.r, "dtype": "float32", "files": [_LORA_WEIGHTS]}


def _write_full_unet(unet: UNet2DConditionModel, folder: Path, dtype: torch.dtype) -> dict:
    unet_dir = folder / "unet"
    unet_dir.mkdir()
    unet.save_config(unet_dir)
    state = {k: v.detach().to(dtype).contiguous() for k, v in unet.state_dict().items()}
    save_file(state, unet_dir / _UNET_WEIGHTS)
    return {"kind": "full", "dtype": str(dtype).removeprefix("torch."), "files": [_UNET_WEIGHTS]}


def load_finetuned_state(pipe: StableDiffusionPipeline, state_dir: str | os.PathLike[str]) -> str:
    """Apply stored fine-tuned state to `pipe.unet` in place; returns its kind ('full'/'lora').

    Loading onto the UNet that was just trained is how an edit makes sure it samples from
    exactly what was stored (fp16 rounding included), never from weights nobody can reload.
    """
    folder = Path(state_dir)
    marker_path = folder / FINETUNED_MARKER
    if not marker_path.is_file():
        raise FinetunedStateError(
            f"fine-tuned state '{folder}': no {FINETUNED_MARKER}, so it is missing or was not "
            "completely written. Run the fine-tune stage again."
        )
    marker = json.loads(marker_path.read_text())
    if marker["kind"] == "lora":
        _load_lora(pipe.unet, folder)
    else:
        _load_full_unet(pipe.unet, folder)
    return marker["kind"]


def _load_lora(unet: UNet2DConditionModel, folder: Path) -> None:
    state = _read_weights(folder, folder / _LORA_WEIGHTS, unet.device)
    added = not has_lora_adapter(unet)
    if added:
        unet.add_adapter(LoraConfig.from_pretrained(str(folder)), LORA_ADAPTER_NAME)
    expected = get_peft_model_state_dict(unet, adapter_name=LORA_ADAPTER_NAME)
    mismatch = _describe_mismatch(expected, state)
    if mismatch:
        if added:
            unet.delete_adapters(LORA_ADAPTER_NAME)
        raise FinetunedStateError(
            f"LoRA adapter '{folder}' does not fit this model's UNet ({mismatch}). Load it onto "
            "the base model it was trained from, with the same LoRA rank."
        )
    set_peft_model_state_dict(unet, state, adapter_name=LORA_ADAPTER_NAME)


def _load_full_unet(unet: UNet2DConditionModel, folder: Path) -> None:
    if has_lora_adapter(unet):
        raise FinetunedStateError(
            f"fine-tuned state '{folder}' is a full UNet, but this pipeline's UNet carries LoRA "
            "adapters; load it into a freshly loaded pipeline without adapters."
        )
    state = _read_weights(folder, folder / "unet" / _UNET_WEIGHTS, unet.device)
    mismatch = _describe_mismatch(unet.state_dict(), state)
    if mismatch:  # checked before loading: a refused state must leave the UNet untouched
        raise FinetunedStateError(
            f"fine-tuned UNet '{folder}' does not fit this model's UNet ({mismatch}). Load it "
            "onto the base model it was fine-tuned from."
        )
    unet.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)


def _read_weights(folder: Path, path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FinetunedStateError(
            f"fine-tuned state '{folder}': {path.name} is missing, so the folder is incomplete. "
            "Run the fine-tune stage again."
        )
    return load_file(path, device=str(device))


def _describe_mismatch(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str:
    """Empty when `given` has exactly the keys and shapes of `expected`, else what differs."""
    problems = []
    missing = sorted(expected.keys() - given.keys())
    unexpected = sorted(given.keys() - expected.keys())
    resized = sorted(
        key for key in expected.keys() & given.keys() if expected[key].shape != given[key].shape
    )
    if missing:
        problems.append(f"{len(missing)} missing keys such as {missing[0]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys such as {unexpected[0]}")
    if resized:
        key = resized[0]
        problems.append(
            f"size mismatch for {key}: {tuple(given[key].shape)} vs {tuple(expected[key].shape)}"
        )
    return "; ".join(problems)
