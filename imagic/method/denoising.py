"""The denoising loss that all three Imagic stages share, and the encoders it needs.

Stage A optimizes the text embedding and stage B the UNet against the same objective: the
standard diffusion loss on the latent of the one input image, at random timesteps. The target
follows the model's prediction type (noise for epsilon models, velocity for v-prediction).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel

from imagic.errors import InvalidTextError


@dataclass(frozen=True)
class StageProgress:
    """One step of a long-running stage, for progress bars, logs and metrics."""

    stage: str
    step: int
    total: int
    loss: float | None = None


ProgressCallback = Callable[[StageProgress], None]


def training_scheduler(pipe: StableDiffusionPipeline) -> DDPMScheduler:
    """The forward-noising process the model was trained with, from its own scheduler config."""
    return DDPMScheduler.from_config(pipe.scheduler.config)


@torch.no_grad()
def encode_image(pipe: StableDiffusionPipeline, image: torch.Tensor) -> torch.Tensor:
    """VAE latent of an image in [-1, 1], scaled as the UNet expects.

    Uses the posterior mean rather than a sample: the input is fixed, so its latent should be
    too (the posterior's spread is negligible for SD's VAE).
    """
    vae = pipe.vae
    pixels = image.to(device=vae.device, dtype=vae.dtype)
    latents = vae.encode(pixels).latent_dist.mean
    return latents * vae.config.scaling_factor


def check_text_fits(pipe: StableDiffusionPipeline, text: str) -> int:
    """Refuse texts longer than the tokenizer's window instead of silently truncating them.

    Truncation would optimize toward a different target text than the user wrote. Returns
    the number of tokens (with start and end tokens).
    """
    tokenizer = pipe.tokenizer
    n_tokens = len(tokenizer(text, truncation=False).input_ids)
    if n_tokens > tokenizer.model_max_length:
        raise InvalidTextError(
            f"text = {text[:60]!r}{'...' if len(text) > 60 else ''}: {n_tokens} tokens, more "
            f"than this model's limit of {tokenizer.model_max_length} (start and end tokens "
            "included). Shorten the target text."
        )
    return n_tokens


@torch.no_grad()
def encode_text(pipe: StableDiffusionPipeline, text: str) -> torch.Tensor:
    """e_tgt: the text encoder's hidden states for `text`, shape (1, tokens, width), fp32."""
    check_text_fits(pipe, text)
    embedding, _ = pipe.encode_prompt(
        text,
        device=pipe.text_encoder.device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=False,
    )
    return embedding.float()


def draw_noise_and_timesteps(
    latents: torch.Tensor, n: int, num_train_timesteps: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """n (noise, timestep) pairs drawn on the CPU, so a seed gives the same draws on any device."""
    noise = torch.randn((n, *latents.shape[1:]), generator=generator, dtype=torch.float32)
    timesteps = torch.randint(0, num_train_timesteps, (n,), generator=generator)
    return noise.to(latents.device), timesteps.to(latents.device)


def denoising_loss(
    unet: UNet2DConditionModel,
    scheduler: DDPMScheduler,
    latents: torch.Tensor,
    embedding: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
) -> torch.Tensor:
    """Mean-squared error of the UNet's prediction on `latents` noised with (noise, timesteps).

    The one latent and embedding are repeated over the batch of timesteps, so several timesteps
    per optimizer step average into one lower-variance gradient.
    """
    n = timesteps.shape[0]
    clean = latents.expand(n, *latents.shape[1:])
    noisy = scheduler.add_noise(clean, noise, timesteps)
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(clean, noise, timesteps)
    else:
        target = noise
    context = embedding.expand(n, *embedding.shape[1:])
    prediction = unet(noisy, timesteps, encoder_hidden_states=context).sample
    return F.mse_loss(prediction.float(), target.float())


@torch.no_grad()
def reconstruction_loss(
    pipe: StableDiffusionPipeline,
    latents: torch.Tensor,
    embedding: torch.Tensor,
    *,
    n_pairs: int = 16,
    seed: int = 1234,
) -> float:
    """Denoising loss on a fixed set of (timestep, noise) pairs: comparable across stages.

    Stage losses during training are noisy (fresh draws every step); this fixed set lets tests
    and benchmarks say whether A, then B, really made the input easier to reconstruct.
    """
    scheduler = training_scheduler(pipe)
    generator = torch.Generator("cpu").manual_seed(seed)
    noise, timesteps = draw_noise_and_timesteps(
        latents, n_pairs, scheduler.config.num_train_timesteps, generator
    )
    loss = denoising_loss(
        pipe.unet, scheduler, latents, embedding.to(latents.device), noise, timesteps
    )
    return float(loss)
