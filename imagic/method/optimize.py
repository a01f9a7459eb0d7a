"""Stage A: optimize the text embedding so that the frozen model reconstructs the input image."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import StableDiffusionPipeline

from imagic.config import OptimizeParams
from imagic.device import Runtime
from imagic.method.denoising import (
    ProgressCallback,
    StageProgress,
    denoising_loss,
    draw_noise_and_timesteps,
    training_scheduler,
)


@dataclass
class EmbeddingResult:
    """e_opt (same shape as e_tgt, fp32, on the CPU) and the loss of every optimizer step."""

    e_opt: torch.Tensor
    losses: list[float]


def optimize_embedding(
    pipe: StableDiffusionPipeline,
    latents: torch.Tensor,
    e_tgt: torch.Tensor,
    params: OptimizeParams,
    runtime: Runtime,
    progress: ProgressCallback | None = None,
) -> EmbeddingResult:
    """Adam on a copy of e_tgt with the denoising loss; VAE, text encoder and UNet stay frozen.

    Few steps at a small learning rate keep e_opt near e_tgt, which is what makes the later
    interpolation between them meaningful (paper, section 3.1).
    """
    unet = pipe.unet
    was_training = unet.training
    unet.eval()
    unet.requires_grad_(False)
    scheduler = training_scheduler(pipe)
    generator = torch.Generator("cpu").manual_seed(params.seed)
    embedding = e_tgt.detach().to(runtime.device, torch.float32).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([embedding], lr=params.learning_rate)
    losses: list[float] = []
    for step in range(1, params.steps + 1):
        noise, timesteps = draw_noise_and_timesteps(
            latents, params.timesteps_per_step, scheduler.config.num_train_timesteps, generator
        )
        with runtime.autocast():
            loss = denoising_loss(unet, scheduler, latents, embedding, noise, timesteps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if progress:
            progress(StageProgress("optimize", step, params.steps, losses[-1]))
    unet.train(was_training)
    return EmbeddingResult(e_opt=embedding.detach().cpu(), losses=losses)
