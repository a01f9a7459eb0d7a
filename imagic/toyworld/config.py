"""What the toy model is (`ToyModelConfig`) and how it is trained (`ToyTrainParams`).

Pydantic models, like `imagic.config`, so the CLI's flags, a checkpoint's stored recipe and a
later training request are validated by one definition and every bad value is reported with
its flag. No torch here: the CLI reads the defaults from these models when it builds its
parser, and a bad flag is refused before torch is imported.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from imagic.config import MAX_SEED, DeviceName, PositiveFloat, PositiveInt, Precision
from imagic.toyworld.scenes import DEFAULT_SIZE
from imagic.toyworld.tokenizer import MODEL_MAX_LENGTH

EVAL_SEED_START = 10**9
"""Scene seeds at or above this are never trained on: the evaluation range (sample grids, the
quality benchmark). Training draws its scene seeds from [0, EVAL_SEED_START)."""

UnitInterval = Annotated[float, Field(ge=0, lt=1)]


class _Frozen(BaseModel):
    """Unknown fields are refused: a typo must not silently fall back to a default; so are
    `inf` and `nan`, which pass "greater than 0" but would train weights into NaN."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ToyModelConfig(_Frozen):
    """The toy model's architecture. Defaults are the shipped model's; tests may shrink them.

    Stored in every training folder, so a checkpoint is never loaded into a model of another
    shape.
    """

    image_size: int = Field(DEFAULT_SIZE, ge=32, description="Image side in pixels.")
    max_length: int = Field(
        MODEL_MAX_LENGTH, ge=8, description="Tokens per prompt (start/end included)."
    )
    text_hidden_size: int = Field(128, gt=0, description="Text encoder width = cross-attn dim.")
    text_layers: int = Field(3, gt=0, description="Text encoder transformer layers.")
    text_heads: int = Field(4, gt=0, description="Text encoder attention heads.")
    text_intermediate_size: int = Field(512, gt=0, description="Text encoder MLP width.")
    vae_channels: tuple[int, ...] = Field(
        (16, 32, 32), min_length=1, description="VAE block widths; n blocks downsample 2**(n-1)."
    )
    vae_layers_per_block: int = Field(1, gt=0)
    latent_channels: int = Field(4, gt=0)
    unet_channels: tuple[int, ...] = Field(
        (32, 64, 96), min_length=1, description="UNet block widths."
    )
    unet_attention: tuple[bool, ...] = Field(
        (False, True, True),
        min_length=1,
        description="Per UNet level (same length as unet_channels): cross-attention or not.",
    )
    unet_layers_per_block: int = Field(1, gt=0)
    unet_attention_head_dim: int = Field(16, gt=0, description="Channels per attention head.")
    norm_num_groups: int = Field(16, gt=0, description="GroupNorm groups (divides all widths).")
    prediction_type: Literal["epsilon", "v_prediction"] = Field(
        "v_prediction", description="What the UNet predicts; zero_terminal_snr needs v."
    )
    zero_terminal_snr: bool = Field(
        True,
        description=(
            "Rescale the schedule so x_T is pure noise (Lin et al. 2023): otherwise the model "
            "reads object positions from the image left in x_T and never learns position words."
        ),
    )

    @model_validator(mode="after")
    def _check_shapes(self) -> Self:
        """Refuse shapes diffusers would only reject deep inside a forward pass."""
        factor = self.vae_factor
        if self.image_size % factor:
            raise ValueError(f"image_size {self.image_size} is not divisible by {factor}")
        if self.latent_size % 2 ** (len(self.unet_channels) - 1):
            raise ValueError(
                f"latent size {self.latent_size} does not halve {len(self.unet_channels) - 1} "
                "times; use fewer unet_channels"
            )
        for width in (*self.vae_channels, *self.unet_channels):
            if width % self.norm_num_groups:
                raise ValueError(f"width {width} is not a multiple of {self.norm_num_groups}")
        if len(self.unet_attention) != len(self.unet_channels):
            raise ValueError(
                f"unet_attention has {len(self.unet_attention)} levels, unet_channels "
                f"{len(self.unet_channels)}; give one flag per level"
            )
        if not any(self.unet_attention):
            raise ValueError("unet_attention has no level with cross-attention: text is ignored")
        for width, attends in zip(self.unet_channels, self.unet_attention, strict=True):
            if attends and width % self.unet_attention_head_dim:
                raise ValueError(
                    f"UNet width {width} is not a multiple of the attention head dim "
                    f"{self.unet_attention_head_dim}"
                )
        if self.text_hidden_size % self.text_heads:
            raise ValueError("text_hidden_size must be a multiple of text_heads")
        if self.zero_terminal_snr and self.prediction_type != "v_prediction":
            raise ValueError(
                f"prediction_type = {self.prediction_type!r} with zero_terminal_snr = True: at "
                "zero SNR an epsilon model cannot recover the image; use 'v_prediction' or "
                "set zero_terminal_snr to False"
            )
        return self

    @property
    def vae_factor(self) -> int:
        """Pixels per latent cell side: each VAE block after the first halves the image."""
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def latent_size(self) -> int:
        """Side of the latent grid: the image side over the VAE's downsampling factor."""
        return self.image_size // self.vae_factor


class ToyTrainParams(_Frozen):
    """One `imagic toy train` run: where, how long, and the recipe.

    The recipe (`RECIPE_FIELDS`: seed, batch size, learning rates, model, ...) is fixed when a
    training folder is created; resuming with a different recipe is refused, because the result
    would match neither recipe. Phase c's step count is part of it (its learning rate decays to
    0 at its last step). The other step counts, the checkpoint interval, the device and the
    sample grid's settings may change between runs of one folder.
    """

    out: str = Field(description="Training folder: checkpoints, samples, losses.json, model/.")
    vae_steps: PositiveInt = Field(6000, description="Phase a: VAE optimizer steps.")
    unet_steps: PositiveInt = Field(8000, description="Phase b: text encoder + UNet steps.")
    decoder_steps: Annotated[int, Field(ge=0)] = Field(
        10500, description="Phase c: VAE decoder fine-tuning steps (0: no phase c)."
    )
    batch_size: PositiveInt = Field(
        32,
        description="Scenes per optimizer step (phases a and b; phase c's if decoder_batch_size "
        "is None).",
    )
    decoder_batch_size: PositiveInt | None = Field(
        16,
        description=(
            "Phase c: scenes per decoder step; None: batch_size. On the CPU a step's time is "
            "about proportional to it, so half the batch buys twice the decoder updates in "
            'the same minutes (benchmarks/README.md, "Phase c\'s batch and length").'
        ),
    )
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = Field(
        0, description="Seed of the initial weights, the scenes, captions, noise and timesteps."
    )
    checkpoint_every: PositiveInt = Field(
        1000, description="Steps between checkpoints (and sample grids); each phase's end too."
    )
    device: DeviceName = Field("auto", description="auto (cuda if available), cpu, mps, cuda:N.")
    precision: Precision = Field(
        "fp32",
        description=(
            "fp32 on every device by default: this model is so small that on an H100 the "
            "casts of bf16 autocast cost more than its arithmetic saves (phase b 64 against 80 "
            "ms/step, benchmarks/README.md). auto: bf16/fp16 autocast on CUDA, fp32 elsewhere."
        ),
    )
    resume: bool = Field(
        True, description="Continue from the folder's last checkpoint; False starts over."
    )
    start_from: str | None = Field(
        None,
        description=(
            "Another training folder's checkpoint to branch from while `out` has none of its "
            "own: phases a and b are not trained again, and phase c's settings "
            "(PHASE_C_FIELDS) may differ if phase c had not started (see check_branch_recipe)."
        ),
    )
    data_workers: Annotated[int, Field(ge=0)] | None = Field(
        None,
        description=(
            "Processes that render the next batches while the model trains; the numbers do "
            "not depend on it. None: 0 on a CPU (torch's threads use its cores), else up to 4."
        ),
    )
    decoder_alongside: bool = Field(
        True,
        description=(
            "Train phase c in a second process while phase b trains, each with half of "
            "torch's threads (at least 1): phase c reads only the VAE, which phase b freezes. "
            "On a 2-core CPU two one-thread steps at once did 1.16 to 1.36 times the work per "
            "second of one two-thread step (benchmarks/toy_alongside_speed.py). The result is "
            "a sequential run's with those thread counts. Not part of the recipe."
        ),
    )
    keep_checkpoints: PositiveInt = Field(2, description="Newest checkpoints kept on disk.")
    grid_size: PositiveInt = Field(8, description="Held-out captions in each sample grid.")
    sample_steps: PositiveInt = Field(25, description="DDIM steps of the sample grids.")
    guidance_scale: Annotated[float, Field(ge=0)] = Field(
        4.0, description="Classifier-free guidance of the sample grids."
    )
    vae_learning_rate: PositiveFloat = Field(1e-3, description="Phase a AdamW learning rate.")
    unet_learning_rate: PositiveFloat = Field(5e-4, description="Phase b AdamW learning rate.")
    decoder_learning_rate: PositiveFloat = Field(
        2e-3, description="Phase c AdamW peak learning rate, decayed to 0 at its last step."
    )
    decoder_object_weight: Annotated[float, Field(ge=1)] = Field(
        3.0,
        description=(
            "Phase c: weight of an object's pixels in the squared error, against 1 for the "
            "background, so small shapes and thin limbs count (see imagic.toyworld.train)."
        ),
    )
    decoder_area_balance: Annotated[float, Field(ge=0, le=1)] = Field(
        1.0,
        description=(
            "Phase c: 0 gives every object pixel decoder_object_weight, so a large square "
            "outweighs a small stick figure 12 to 1; 1 gives an object smaller than 100 "
            "pixels (at 64 px) the weight in all of a 100-pixel one (see "
            "imagic.toyworld.train.decoder_batch)."
        ),
    )
    unet_object_weight: Annotated[float, Field(ge=1)] = Field(
        3.0,
        description=(
            "Phase b: weight of the latent cells under an object in the denoising loss, "
            "against 1 for the background; 1 with unet_area_balance 0: a plain mean (see "
            "imagic.toyworld.train.unet_batch)."
        ),
    )
    unet_area_balance: Annotated[float, Field(ge=0, le=1)] = Field(
        1.0,
        description="Phase b: as decoder_area_balance, for unet_object_weight's object weights.",
    )
    warmup_steps: Annotated[int, Field(ge=0)] = Field(
        200, description="Linear learning-rate warm-up at the start of each phase."
    )
    weight_decay: Annotated[float, Field(ge=0)] = Field(1e-2, description="AdamW weight decay.")
    max_grad_norm: PositiveFloat = Field(1.0, description="Gradient clipping norm.")
    kl_weight: Annotated[float, Field(ge=0)] = Field(
        1e-6, description="Phase a: weight of the KL term (summed per image) next to the MSE."
    )
    caption_dropout: UnitInterval = Field(
        0.1, description="Phase b: share of empty captions, so classifier-free guidance works."
    )
    ema_decay: UnitInterval = Field(
        0.999, description="Phase b: EMA of the text encoder and UNet (what is saved)."
    )
    model: ToyModelConfig = Field(default_factory=ToyModelConfig)
    # After `model`, so its validator can read the model's image size and VAE factor.
    vae_crop_size: PositiveInt | None = Field(
        32,
        description=(
            "Phase a: train the VAE on random square crops of this side, a multiple of the "
            "VAE's downsampling factor; the image size or None: whole scenes. A 32-px crop "
            "costs about a quarter of a 64-px scene per step. Phase c stays on whole scenes "
            "(see imagic.toyworld.train.random_crops)."
        ),
    )

    @field_validator("vae_crop_size")
    @classmethod
    def _check_crop_size(cls, value: int | None, info: ValidationInfo) -> int | None:
        """A crop must fit the scene and start and end on latent cell borders."""
        model = info.data.get("model")
        if value is None or model is None:
            return value
        factor, size = model.vae_factor, model.image_size
        if value % factor or value > size:
            raise ValueError(
                f"a crop must be a multiple of the VAE's downsampling factor {factor} and at "
                f"most the image size {size}; use a multiple of {factor} up to {size} ({size}: "
                "whole scenes)"
            )
        return value

    @property
    def phase_c_batch_size(self) -> int:
        """Scenes per decoder step: decoder_batch_size, else batch_size (as before it existed)."""
        return self.decoder_batch_size or self.batch_size


RECIPE_FIELDS: tuple[str, ...] = (
    "decoder_steps",
    "batch_size",
    "decoder_batch_size",
    "seed",
    "vae_learning_rate",
    "unet_learning_rate",
    "warmup_steps",
    "weight_decay",
    "max_grad_norm",
    "kl_weight",
    "caption_dropout",
    "ema_decay",
    "decoder_learning_rate",
    "decoder_object_weight",
    "decoder_area_balance",
    "model",
    "vae_crop_size",
    "unet_object_weight",
    "unet_area_balance",
)
"""Fields that must stay the same for a training folder's whole life (see ToyTrainParams)."""

RECIPE_BEFORE_FIELD: dict[str, Any] = {
    "decoder_area_balance": 0.0,
    "vae_crop_size": None,
    "decoder_batch_size": None,
    "unet_object_weight": 1.0,
    "unet_area_balance": 0.0,
}
"""What a folder whose train_config.json predates a recipe field was trained with."""

PHASE_C_FIELDS: tuple[str, ...] = (
    "decoder_steps",
    "decoder_batch_size",
    "decoder_learning_rate",
    "decoder_object_weight",
    "decoder_area_balance",
)
"""Recipe fields that phases a and b never read: a branch from a checkpoint taken before phase
c started may change them, and the result is what a whole run of the new recipe gives."""

TRAIN_FLAGS: dict[str, str] = {
    "out": "--out",
    "vae_steps": "--vae-steps",
    "unet_steps": "--unet-steps",
    "decoder_steps": "--decoder-steps",
    "decoder_learning_rate": "--decoder-lr",
    "decoder_area_balance": "--decoder-area-balance",
    "unet_object_weight": "--unet-object-weight",
    "unet_area_balance": "--unet-area-balance",
    "vae_crop_size": "--vae-crop-size",
    "batch_size": "--batch-size",
    "decoder_batch_size": "--decoder-batch-size",
    "seed": "--seed",
    "checkpoint_every": "--checkpoint-every",
    "data_workers": "--data-workers",
    "decoder_alongside": "--decoder-alongside",
    "grid_size": "--grid-size",
    "sample_steps": "--sample-steps",
    "device": "--device",
    "precision": "--precision",
    "resume": "--resume/--no-resume",
    "start_from": "--start-from",
}
"""The `imagic toy train` flag of each field, so errors name what the user typed."""


def field_label(field: str) -> str:
    """`batch_size (--batch-size)`, or the bare field name when it has no flag."""
    return f"{field} ({TRAIN_FLAGS[field]})" if field in TRAIN_FLAGS else field
