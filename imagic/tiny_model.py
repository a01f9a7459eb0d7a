"""A tiny, randomly initialised Stable Diffusion pipeline, built locally.

No model hub is reachable from many CI and air-gapped machines, so the tests and the README's
first command need a real diffusers-format Stable Diffusion folder that can be made offline in
seconds. This builds one with the same component classes as SD 1.x/2.x (CLIPTokenizer,
CLIPTextModel, AutoencoderKL, UNet2DConditionModel, DDIMScheduler), only much smaller. Its
images are noise-like: it exercises the code paths, it does not make pretty pictures.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Literal

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from imagic.clip_bpe import byte_level_alphabet
from imagic.models import sd1_ddim_scheduler

PredictionType = Literal["epsilon", "v_prediction"]


def build_tiny_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """A character-level CLIP tokenizer: every byte is a token, no merges, no download."""
    alphabet = byte_level_alphabet()
    vocab = {char: i for i, char in enumerate(alphabet)}
    vocab.update({f"{char}</w>": len(alphabet) + i for i, char in enumerate(alphabet)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with tempfile.TemporaryDirectory() as folder:
        vocab_file = Path(folder) / "vocab.json"
        merges_file = Path(folder) / "merges.txt"
        vocab_file.write_text(json.dumps(vocab))
        merges_file.write_text("#version: 0.2\n")
        return CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=model_max_length)


def build_tiny_pipeline(
    prediction_type: PredictionType = "epsilon", seed: int = 0
) -> StableDiffusionPipeline:
    """A 64 x 64 px SD-architecture pipeline with random weights (about 1 M parameters)."""
    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=16,
        sample_size=64,
    )
    scheduler = sd1_ddim_scheduler(prediction_type)
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_tiny_pipeline(
    out_dir: str | Path, prediction_type: PredictionType = "epsilon", seed: int = 0
) -> Path:
    """Build the tiny pipeline and save it as a diffusers folder (loadable by from_pretrained)."""
    out = Path(out_dir)
    build_tiny_pipeline(prediction_type, seed).save_pretrained(out, safe_serialization=True)
    return out
