"""What an edit stores loads with the upstream libraries' own loaders, not only with ours.

Users take e_opt and the fine-tuned weights to other tools; these checks use diffusers',
peft's and safetensors' public loaders on a real edit's output folder and (file://) store.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from peft import LoraConfig
from safetensors.torch import load_file

from imagic.config import EditSpec, FinetuneParams, GenerateParams, OptimizeParams
from imagic.edit import run_edit


def _edit(image: Path, model: Path, out: Path, *, lora: bool) -> dict:
    spec = EditSpec(
        image=str(image),
        text="a red circle",
        model=str(model),
        optimize=OptimizeParams(steps=3),
        finetune=FinetuneParams(steps=3, lora=lora),
        generate=GenerateParams(etas=[0.5], seeds=[0], num_inference_steps=2),
    )
    return run_edit(spec, out).manifest


@pytest.mark.slow
def test_full_unet_loads_with_diffusers(tmp_path: Path, input_image: Path, tiny_model_dir: Path):
    manifest = _edit(input_image, tiny_model_dir, tmp_path / "out", lora=False)
    unet_dir = Path(urlparse(manifest["finetuned"]["uri"]).path) / "unet"

    unet = UNet2DConditionModel.from_pretrained(unet_dir)
    base = StableDiffusionPipeline.from_pretrained(tiny_model_dir).unet
    stored = load_file(unet_dir / "diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in stored.values()} == {torch.float16}
    assert unet.config.block_out_channels == base.config.block_out_channels
    changed = [k for k, v in unet.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert changed  # the fine-tune really moved weights

    embeddings = load_file(tmp_path / "out" / "embeddings.safetensors")
    assert embeddings["e_opt"].shape == embeddings["e_tgt"].shape == (1, 77, 32)
    assert not torch.equal(embeddings["e_opt"], embeddings["e_tgt"])


@pytest.mark.slow
def test_lora_adapter_loads_with_peft(tmp_path: Path, input_image: Path, tiny_model_dir: Path):
    manifest = _edit(input_image, tiny_model_dir, tmp_path / "out", lora=True)
    folder = Path(urlparse(manifest["finetuned"]["uri"]).path)
    config = LoraConfig.from_pretrained(str(folder))
    assert config.r == 4 and config.lora_alpha == 4
    weights = load_file(folder / "adapter_model.safetensors")
    assert weights and all("lora_" in key for key in weights)
    assert json.loads((folder / "finetuned.json").read_text())["kind"] == "lora"
    assert manifest["finetuned"]["kind"] == "lora"
