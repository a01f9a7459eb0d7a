"""The typed requests of an edit: what to edit, with which model, and each stage's parameters.

Pydantic models, so that the same definitions validate CLI flags, JSON request files and the
Prefect UI form, and serialise into manifests and MLflow params. Defaults and where they come
from (see also the README's "Defaults" table):

- Stage A (optimize the embedding): Adam, lr 1e-3, 500 steps: the paper (lr 1e-3) and the
  diffusers community Imagic pipeline (`imagic_stable_diffusion.py`: 500 steps, lr 1e-3).
- Stage B (fine-tune the UNet): 1000 steps; full fine-tune lr 2e-6 (community pipeline);
  LoRA lr 1e-4 and rank 4 (diffusers' `train_text_to_image_lora.py`); AdamW with weight decay
  1e-2 and gradient clipping at 1.0 (diffusers' training examples).
- Stage C (generate): DDIM, 50 steps, guidance 7.5, no guidance rescale (Stable Diffusion
  defaults); etas 0.6-0.8, where the paper reports the edit "jumps in".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from imagic.errors import InvalidParamsError
from imagic.toyworld.shipped import SHIPPED_MODEL

ETA_MAX = 1.5
"""Largest accepted eta. The paper uses [0, 1]; values a little above 1 extrapolate past the
target text (the diffusers community pipeline defaults to 1.2), far above it the embedding
leaves the region the model was trained on and images degrade."""

FULL_FINETUNE_LR = 2e-6
LORA_FINETUNE_LR = 1e-4
MAX_SEED = 2**63 - 1

Scheduler = Literal["ddim", "ddpm", "pndm", "euler", "euler_ancestral", "dpm_solver"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]
ResolutionFit = Literal["crop", "pad"]
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

ParamsModel = TypeVar("ParamsModel", bound=BaseModel)


def _check_text(text: str) -> str:
    if not text.strip():
        raise ValueError("the target text is empty; describe the edited image")
    return text


def _check_model(model: str) -> str:
    if not model.strip():
        raise ValueError(
            f"give a local diffusers folder, a hub id, or leave it out for {SHIPPED_MODEL} "
            "(the shipped toy model)"
        )
    return model


def _check_device(device: str) -> str:
    if not _DEVICE_PATTERN.fullmatch(device):
        raise ValueError("use one of auto, cpu, mps, cuda, cuda:N")
    return device


TargetText = Annotated[str, AfterValidator(_check_text)]
ModelId = Annotated[str, AfterValidator(_check_model)]
DeviceName = Annotated[str, AfterValidator(_check_device)]
PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class _Params(BaseModel):
    """Strict about unknown fields: a typo in a request must not silently fall back to a default.

    `inf` and `nan` are refused too: `--lr-a inf` passes "greater than 0" but would turn the
    embedding to NaN a step later, after minutes of work.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class OptimizeParams(_Params):
    """Stage A: optimize the text embedding (model frozen) so that it reconstructs the input."""

    steps: PositiveInt = Field(500, description="Adam steps on the embedding.")
    learning_rate: PositiveFloat = Field(1e-3, description="Adam learning rate (paper: 1e-3).")
    timesteps_per_step: PositiveInt = Field(
        1, description="Random timesteps averaged per optimizer step (lower-variance gradient)."
    )
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = Field(
        0, description="Seed of the timesteps and noise drawn during optimization."
    )


class FinetuneParams(_Params):
    """Stage B: fine-tune the UNet (full or LoRA) with the optimized embedding frozen."""

    steps: PositiveInt = Field(1000, description="AdamW steps on the UNet.")
    learning_rate: PositiveFloat | None = Field(
        None,
        description=f"AdamW learning rate; default {FULL_FINETUNE_LR} (full) or "
        f"{LORA_FINETUNE_LR} (LoRA).",
    )
    lora: bool = Field(False, description="Train LoRA adapters instead of the full UNet.")
    lora_rank: PositiveInt = Field(4, description="LoRA rank (alpha = rank, scale 1).")
    timesteps_per_step: PositiveInt = Field(
        1, description="Random timesteps averaged per optimizer step."
    )
    weight_decay: Annotated[float, Field(ge=0)] = Field(1e-2, description="AdamW weight decay.")
    max_grad_norm: PositiveFloat = Field(1.0, description="Gradient clipping norm.")
    gradient_checkpointing: bool = Field(
        False, description="Trade compute for memory (large models on small GPUs)."
    )
    save_dtype: Literal["float16", "float32"] = Field(
        "float16", description="dtype of stored full-UNet weights (LoRA adapters stay float32)."
    )
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = Field(
        0, description="Seed of the timesteps and noise drawn during fine-tuning."
    )

    @model_validator(mode="after")
    def _default_learning_rate(self) -> Self:
        """Resolve the learning rate now, so manifests and MLflow record the value used."""
        if self.learning_rate is None:
            chosen = LORA_FINETUNE_LR if self.lora else FULL_FINETUNE_LR
            object.__setattr__(self, "learning_rate", chosen)
        return self


class GenerateParams(_Params):
    """Stage C: sample with e = eta * e_tgt + (1 - eta) * e_opt for every eta x seed."""

    # The JSON-schema extras let Prefect's server and UI reject bad lists before a run starts.
    etas: list[float] = Field(
        [0.6, 0.7, 0.8],
        description=f"Interpolation weights in [0, {ETA_MAX}] (0 = input).",
        json_schema_extra={
            "items": {"type": "number", "minimum": 0, "maximum": ETA_MAX},
            "minItems": 1,
            "uniqueItems": True,
        },
    )
    seeds: list[int] = Field(
        [0, 1, 2],
        description="Sampling seeds, one grid row each.",
        json_schema_extra={
            "items": {"type": "integer", "minimum": 0, "maximum": MAX_SEED},
            "minItems": 1,
            "uniqueItems": True,
        },
    )
    num_inference_steps: PositiveInt = Field(50, description="Sampler steps per image.")
    guidance_scale: Annotated[float, Field(ge=0)] = Field(
        7.5, description="Classifier-free guidance scale (<= 1 disables guidance)."
    )
    guidance_rescale: Annotated[float, Field(ge=0, le=1)] = Field(
        0.0,
        description="Guidance rescale, 0 (none) to 1 (Lin et al. 2023): pulls the guided "
        "prediction's spread back to the conditional one's, for zero-terminal-SNR models; "
        "about 0.7 is typical there (imagic:toy's text-to-image samples are best at guidance 2 "
        "with 0.7).",
    )
    batch_size: PositiveInt = Field(4, description="Images sampled per forward pass.")
    scheduler: Scheduler = Field("ddim", description="Sampling scheduler.")

    @field_validator("etas")
    @classmethod
    def _check_etas(cls, etas: list[float]) -> list[float]:
        if not etas:
            raise ValueError("give at least one eta, e.g. 0.6 0.7 0.8")
        bad = [eta for eta in etas if not 0.0 <= eta <= ETA_MAX]
        if bad:
            raise ValueError(f"every eta must be in [0, {ETA_MAX}]; got {bad}")
        if len(set(etas)) != len(etas):
            raise ValueError("etas must not repeat (each would give the same images twice)")
        return etas

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds:
            raise ValueError("give at least one seed, e.g. 0 1 2")
        bad = [seed for seed in seeds if not 0 <= seed <= MAX_SEED]
        if bad:
            raise ValueError(f"seeds must be integers in [0, 2**63 - 1]; got {bad}")
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must not repeat (each would give the same images twice)")
        return seeds


class EditSpec(_Params):
    """One Imagic edit: an input image, a target text, a model and the three stages' params."""

    image: str = Field(description="Input image: a local path, file:///... or s3://bucket/key.")
    text: TargetText = Field(description="Target text, e.g. 'a bird spreading its wings'.")
    model: ModelId = Field(
        SHIPPED_MODEL,
        description="Local diffusers folder, Hugging Face Hub id, or imagic:toy (the small toy "
        "model shipped in the package, which knows only toy-world words).",
    )
    model_revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    optimize: OptimizeParams = Field(
        default_factory=OptimizeParams, title="Stage A: optimize the embedding"
    )
    finetune: FinetuneParams = Field(
        default_factory=FinetuneParams, title="Stage B: fine-tune the model"
    )
    generate: GenerateParams = Field(default_factory=GenerateParams, title="Stage C: generate")
    resolution_fit: ResolutionFit = Field(
        "crop", description="Fit the input to the model resolution by center-crop or white pad."
    )
    max_megapixels: PositiveFloat = Field(
        64.0, description="Refuse larger inputs (decompression-bomb guard)."
    )
    device: DeviceName = Field("auto", description="auto, cpu, mps, cuda or cuda:N.")
    precision: Precision = Field(
        "auto", description="auto (fp32 on CPU/MPS, bf16 or fp16 autocast on CUDA), or forced."
    )


def parse_params(
    model: type[ParamsModel], data: Any, *, flags: Mapping[str, str] | None = None
) -> ParamsModel:
    """Validate `data` into `model`, turning pydantic's errors into one `InvalidParamsError`.

    Every problem is listed at once, each naming the field (and its CLI flag, when `flags`
    maps field paths to flags), the value given and what is allowed.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidParamsError(describe_validation_error(exc, flags or {})) from None


def describe_validation_error(exc: ValidationError, flags: Mapping[str, str]) -> str:
    """One line per problem: `field (flag) = value: what is wrong`."""
    lines = [f"invalid {exc.title} ({exc.error_count()} problem(s)):"]
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"] if not isinstance(part, int))
        field = field or "(request)"
        if field in flags:
            field = f"{field} ({flags[field]})"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            lines.append(f"  {field}: missing; this field is required")
        elif error["type"] == "extra_forbidden":
            lines.append(f"  {field}: unknown field; remove it or check its spelling")
        else:
            lines.append(f"  {field} = {error.get('input')!r}: {message}")
    return "\n".join(lines)
