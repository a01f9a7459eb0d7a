"""The toy text-to-image model: a small Stable Diffusion pipeline trained on toy-world scenes.

Same component classes as SD 1.x (CLIPTokenizer, CLIPTextModel, AutoencoderKL,
UNet2DConditionModel, DDIMScheduler), so every Imagic code path runs on it unchanged, but small
enough to train from scratch in about 85 minutes on a 2-core CPU: a 64 px image is encoded to
16 x 16 x 4 latents by a 0.24 M-parameter VAE (flat procedural scenes are easy to reconstruct),
the text encoder sees one token per word (`imagic.toyworld.tokenizer`), and the UNet has about
2.8 M parameters with cross-attention at its 8 x 8 and 4 x 4 levels only: at 16 x 16,
attention took half of a training step. (SD 1.x does the opposite and leaves its deepest level
without attention; at 64 px the toy UNet's deepest levels are its cheap ones.)

The noise schedule is SD 1.x's, rescaled to zero terminal SNR, with v-prediction and
"trailing" DDIM timesteps (`ToyModelConfig.zero_terminal_snr`). With SD 1.x's schedule as is,
about 7 % of the image survives at the last training step; on 16 x 16 latents that is enough
to see where a large object is, so the first shipped model learned positions from the leak,
never from the words, and drew objects anywhere once sampling started from pure noise.

`build_toy_pipeline` makes the untrained pipeline (training: `imagic.toyworld.train`);
`save_toy_pipeline` writes it in fp16 safetensors with `checksums.json`, which
`imagic.toyworld.checksums.verify_checksums` checks before shipped weights are used.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from imagic.models import sd1_ddim_scheduler
from imagic.toyworld.checksums import write_checksums
from imagic.toyworld.config import ToyModelConfig
from imagic.toyworld.tokenizer import build_toy_tokenizer, write_tokenizer_files

__all__ = [
    "COMPONENTS",
    "ToyModelConfig",
    "build_toy_pipeline",
    "parameter_counts",
    "save_toy_pipeline",
]

COMPONENTS = ("text_encoder", "vae", "unet")


def _text_encoder(config: ToyModelConfig, tokenizer: object) -> CLIPTextModel:
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),  # type: ignore[arg-type]
            hidden_size=config.text_hidden_size,
            intermediate_size=config.text_intermediate_size,
            num_attention_heads=config.text_heads,
            num_hidden_layers=config.text_layers,
            max_position_embeddings=config.max_length,
            bos_token_id=tokenizer.bos_token_id,  # type: ignore[attr-defined]
            eos_token_id=tokenizer.eos_token_id,  # type: ignore[attr-defined]
            pad_token_id=tokenizer.pad_token_id,  # type: ignore[attr-defined]
        )
    )


def _vae(config: ToyModelConfig) -> AutoencoderKL:
    blocks = len(config.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=config.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        layers_per_block=config.vae_layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups,
        sample_size=config.image_size,
    )


def _unet(config: ToyModelConfig) -> UNet2DConditionModel:
    # diffusers' `attention_head_dim` of UNet2DConditionModel is really the number of heads.
    heads = tuple(max(1, width // config.unet_attention_head_dim) for width in config.unet_channels)
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.unet_attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.unet_attention))
    return UNet2DConditionModel(
        sample_size=config.latent_size,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        block_out_channels=config.unet_channels,
        layers_per_block=config.unet_layers_per_block,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=config.text_hidden_size,
        attention_head_dim=heads,
        norm_num_groups=config.norm_num_groups,
    )


def build_toy_pipeline(
    config: ToyModelConfig | None = None, seed: int = 0
) -> StableDiffusionPipeline:
    """The untrained toy pipeline, its weights drawn from `seed` (global RNG left untouched)."""
    config = config or ToyModelConfig()
    tokenizer = build_toy_tokenizer(config.max_length)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = _text_encoder(config, tokenizer)
        vae = _vae(config)
        unet = _unet(config)
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=sd1_ddim_scheduler(
            config.prediction_type, zero_terminal_snr=config.zero_terminal_snr
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def parameter_counts(pipe: StableDiffusionPipeline) -> dict[str, int]:
    """Parameters per trained component, and their total."""
    counts = {
        name: sum(param.numel() for param in getattr(pipe, name).parameters())
        for name in COMPONENTS
    }
    counts["total"] = sum(counts.values())
    return counts


def save_toy_pipeline(
    pipe: StableDiffusionPipeline, folder: str | Path, *, half: bool = True
) -> Path:
    """Save a diffusers folder (safetensors, fp16 weights unless not `half`) + `checksums.json`.

    A copy is converted, so the caller's fp32 weights (e.g. still being trained) are not
    rounded. `checksums.json` is written last. The tokenizer folder also gets `vocab.json` and
    `merges.txt`, so transformers versions that do not read `tokenizer.json` load the same
    tokenizer. Weights are halved with `Module.half`, not the pipeline's `.to(float16)`, which
    warns that fp16 cannot run on the CPU (true, and irrelevant to saving).
    """
    target = Path(folder)
    saved = copy.deepcopy(pipe)
    for name in COMPONENTS:
        module = getattr(saved, name).to("cpu")
        if half:
            module.half()
    saved.save_pretrained(target, safe_serialization=True)
    write_tokenizer_files(target / "tokenizer")
    write_checksums(target)
    return target
