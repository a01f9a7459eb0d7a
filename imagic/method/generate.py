"""Stage C: sample the edit for every (eta, seed) with e = eta * e_tgt + (1 - eta) * e_opt."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from imagic.config import GenerateParams
from imagic.device import Runtime
from imagic.method.denoising import ProgressCallback, StageProgress
from imagic.models import make_scheduler, model_resolution


@dataclass(frozen=True)
class GeneratedImage:
    """One sample of the eta x seed sweep."""

    eta: float
    seed: int
    image: Image.Image


def interpolate_embedding(e_tgt: torch.Tensor, e_opt: torch.Tensor, eta: float) -> torch.Tensor:
    """eta = 0 gives e_opt (the input), eta = 1 gives e_tgt (the text); > 1 extrapolates."""
    return eta * e_tgt + (1.0 - eta) * e_opt


@torch.no_grad()
def generate(
    pipe: StableDiffusionPipeline,
    e_tgt: torch.Tensor,
    e_opt: torch.Tensor,
    params: GenerateParams,
    runtime: Runtime,
    progress: ProgressCallback | None = None,
) -> list[GeneratedImage]:
    """Sample all etas x seeds (row-major: seed, then eta) with classifier-free guidance.

    Pairs are batched `params.batch_size` at a time; each image gets its own CPU generator
    seeded with its seed, so an image depends on its seed alone, not on the batch it fell in
    or on the device. The embeddings may sit on any device: `optimize_embedding` returns e_opt
    on the CPU while `encode_text` leaves e_tgt on the model's device, and mixing the two
    crashed on CUDA (found on an H100; the CLI's stages load both from the store instead).
    """
    e_tgt, e_opt = e_tgt.to(runtime.device), e_opt.to(runtime.device)
    pipe.scheduler = make_scheduler(params.scheduler, pipe.scheduler.config)
    width, height = model_resolution(pipe)
    unconditional = pipe.encode_prompt(
        "", device=runtime.device, num_images_per_prompt=1, do_classifier_free_guidance=False
    )[0].float()
    pairs = [(eta, seed) for seed in params.seeds for eta in params.etas]
    results: list[GeneratedImage] = []
    for start in range(0, len(pairs), params.batch_size):
        batch = pairs[start : start + params.batch_size]
        embeddings = torch.cat([interpolate_embedding(e_tgt, e_opt, eta) for eta, _ in batch])
        with runtime.autocast():
            images = pipe(
                prompt_embeds=embeddings,
                negative_prompt_embeds=unconditional.expand_as(embeddings),
                height=height,
                width=width,
                num_inference_steps=params.num_inference_steps,
                guidance_scale=params.guidance_scale,
                guidance_rescale=params.guidance_rescale,
                generator=[torch.Generator("cpu").manual_seed(seed) for _, seed in batch],
                output_type="pil",
            ).images
        results.extend(
            GeneratedImage(eta, seed, image)
            for (eta, seed), image in zip(batch, images, strict=True)
        )
        if progress:
            progress(StageProgress("generate", len(results), len(pairs)))
    return results
