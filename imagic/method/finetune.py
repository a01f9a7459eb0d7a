"""Stage B: fine-tune the UNet (full or LoRA) so that e_opt reproduces the input's details."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import StableDiffusionPipeline

from imagic.config import FinetuneParams
from imagic.device import Runtime
from imagic.method.denoising import (
    ProgressCallback,
    StageProgress,
    denoising_loss,
    draw_noise_and_timesteps,
    training_scheduler,
)
from imagic.models import add_lora_adapter


@dataclass
class FinetuneResult:
    """The loss of every optimizer step; the trained weights live in `pipe.unet`."""

    losses: list[float]
    trainable_parameters: int


def finetune(
    pipe: StableDiffusionPipeline,
    latents: torch.Tensor,
    e_opt: torch.Tensor,
    params: FinetuneParams,
    runtime: Runtime,
    progress: ProgressCallback | None = None,
) -> FinetuneResult:
    """AdamW on the UNet (or on LoRA adapters injected into it) with e_opt frozen; in place.

    The UNet's weights stay fp32 (master weights); on CUDA the forward pass runs under
    autocast. Gradient checkpointing is optional, for large models on small GPUs.
    """
    unet = pipe.unet
    unet.requires_grad_(False)
    if params.lora:
        add_lora_adapter(unet, params.lora_rank)  # only the adapters require grad
    else:
        unet.requires_grad_(True)
    if params.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    trainable = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=params.learning_rate, weight_decay=params.weight_decay
    )
    scheduler = training_scheduler(pipe)
    generator = torch.Generator("cpu").manual_seed(params.seed)
    context = e_opt.detach().to(runtime.device, torch.float32)
    losses: list[float] = []
    unet.train()
    for step in range(1, params.steps + 1):
        noise, timesteps = draw_noise_and_timesteps(
            latents, params.timesteps_per_step, scheduler.config.num_train_timesteps, generator
        )
        with runtime.autocast():
            loss = denoising_loss(unet, scheduler, latents, context, noise, timesteps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, params.max_grad_norm)
        optimizer.step()
        losses.append(loss.item())
        if progress:
            progress(StageProgress("finetune", step, params.steps, losses[-1]))
    unet.eval()
    unet.requires_grad_(False)
    if params.gradient_checkpointing:
        unet.disable_gradient_checkpointing()
    return FinetuneResult(losses=losses, trainable_parameters=sum(p.numel() for p in trainable))
