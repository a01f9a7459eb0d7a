"""The Imagic method (Kawar et al. 2022): stages A, B and C on a diffusers SD pipeline.

Read top to bottom, an edit is:
    e_tgt = encode_text(pipe, text)
    latents = encode_image(pipe, image_to_tensor(image))
    e_opt = optimize_embedding(pipe, latents, e_tgt, OptimizeParams(), runtime).e_opt  # A
    finetune(pipe, latents, e_opt, FinetuneParams(), runtime)                          # B
    images = generate(pipe, e_tgt, e_opt, GenerateParams(), runtime)                   # C
"""

from imagic.method.denoising import (
    ProgressCallback,
    StageProgress,
    check_text_fits,
    encode_image,
    encode_text,
    reconstruction_loss,
)
from imagic.method.finetune import FinetuneResult, finetune
from imagic.method.generate import GeneratedImage, generate, interpolate_embedding
from imagic.method.optimize import EmbeddingResult, optimize_embedding

__all__ = [
    "EmbeddingResult",
    "FinetuneResult",
    "GeneratedImage",
    "ProgressCallback",
    "StageProgress",
    "check_text_fits",
    "encode_image",
    "encode_text",
    "finetune",
    "generate",
    "interpolate_embedding",
    "optimize_embedding",
    "reconstruction_loss",
]
