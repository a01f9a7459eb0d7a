"""Stages A, B and C on tiny random SD pipelines (epsilon and v-prediction, full and LoRA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from imagic.config import FinetuneParams, GenerateParams, OptimizeParams
from imagic.device import Runtime, resolve_runtime
from imagic.errors import InvalidTextError
from imagic.images import image_to_tensor
from imagic.method import (
    StageProgress,
    encode_image,
    encode_text,
    finetune,
    generate,
    interpolate_embedding,
    optimize_embedding,
    reconstruction_loss,
)
from imagic.models import (
    load_finetuned_pipeline,
    load_finetuned_state,
    load_pipeline,
    save_finetuned_state,
)
from imagic.tiny_model import build_tiny_pipeline
from tests.conftest import draw_scene

CPU = Runtime(torch.device("cpu"), None)
FAST_C = GenerateParams(etas=[0.0, 0.7, 1.0], seeds=[3, 5], num_inference_steps=4)


def _pipeline(prediction_type: str) -> StableDiffusionPipeline:
    pipe = build_tiny_pipeline(prediction_type, seed=0)  # type: ignore[arg-type]
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _inputs(pipe: StableDiffusionPipeline) -> tuple[torch.Tensor, torch.Tensor]:
    latents = encode_image(pipe, image_to_tensor(draw_scene((64, 64))))
    return latents, encode_text(pipe, "a red circle on the left")


def _pixels(images: list) -> list[np.ndarray]:
    return [np.asarray(item.image) for item in images]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_stage_a_then_b_lower_the_fixed_reconstruction_loss(
    prediction_type: str, lora: bool
) -> None:
    pipe = _pipeline(prediction_type)
    latents, e_tgt = _inputs(pipe)
    before = reconstruction_loss(pipe, latents, e_tgt)

    events: list[StageProgress] = []
    a = optimize_embedding(
        pipe,
        latents,
        e_tgt,
        OptimizeParams(steps=40, learning_rate=1e-2, timesteps_per_step=4),
        CPU,
        events.append,
    )
    after_a = reconstruction_loss(pipe, latents, a.e_opt)
    b = finetune(
        pipe,
        latents,
        a.e_opt,
        FinetuneParams(steps=40, lora=lora, learning_rate=3e-3 if lora else 3e-4),
        CPU,
        events.append,
    )
    after_b = reconstruction_loss(pipe, latents, a.e_opt)

    assert after_a < before
    assert after_b < after_a
    assert len(a.losses) == 40 and len(b.losses) == 40
    assert a.e_opt.shape == e_tgt.shape
    assert [e.step for e in events if e.stage == "optimize"] == list(range(1, 41))
    assert events[-1] == StageProgress("finetune", 40, 40, b.losses[-1])
    if lora:
        total = sum(p.numel() for p in pipe.unet.parameters())
        assert 0 < b.trainable_parameters < total / 10
    assert not any(p.requires_grad for p in pipe.unet.parameters())


def test_stage_a_keeps_the_model_frozen_and_stays_near_e_tgt() -> None:
    pipe = _pipeline("epsilon")
    latents, e_tgt = _inputs(pipe)
    weights = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    result = optimize_embedding(pipe, latents, e_tgt, OptimizeParams(steps=10), CPU)
    assert all(torch.equal(weights[k], v) for k, v in pipe.unet.state_dict().items())
    relative_change = (result.e_opt - e_tgt).norm() / e_tgt.norm()
    assert 0 < relative_change < 0.1


def test_stages_a_and_b_are_deterministic_for_a_seed() -> None:
    runs = []
    for _ in range(2):
        pipe = _pipeline("epsilon")
        latents, e_tgt = _inputs(pipe)
        a = optimize_embedding(pipe, latents, e_tgt, OptimizeParams(steps=5, seed=7), CPU)
        b = finetune(pipe, latents, a.e_opt, FinetuneParams(steps=5, seed=7), CPU)
        runs.append((a.e_opt, a.losses, b.losses))
    assert torch.equal(runs[0][0], runs[1][0])
    assert runs[0][1:] == runs[1][1:]


def test_interpolation_endpoints() -> None:
    e_tgt, e_opt = torch.ones(1, 4, 2), torch.zeros(1, 4, 2)
    assert torch.equal(interpolate_embedding(e_tgt, e_opt, 0.0), e_opt)
    assert torch.equal(interpolate_embedding(e_tgt, e_opt, 1.0), e_tgt)
    assert torch.allclose(interpolate_embedding(e_tgt, e_opt, 1.2), torch.full((1, 4, 2), 1.2))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_generate_is_deterministic_per_seed_and_seeds_differ(prediction_type: str) -> None:
    pipe = _pipeline(prediction_type)
    _, e_tgt = _inputs(pipe)
    e_opt = e_tgt + 0.05 * torch.randn(e_tgt.shape, generator=torch.Generator().manual_seed(1))
    first = generate(pipe, e_tgt, e_opt, FAST_C, CPU)
    second = generate(pipe, e_tgt, e_opt, FAST_C, CPU)

    assert [(g.seed, g.eta) for g in first] == [(s, e) for s in (3, 5) for e in (0.0, 0.7, 1.0)]
    assert all(g.image.size == (64, 64) for g in first)
    for a, b in zip(_pixels(first), _pixels(second), strict=True):
        np.testing.assert_array_equal(a, b)
    by_key = {(g.seed, g.eta): np.asarray(g.image) for g in first}
    assert not np.array_equal(by_key[3, 0.7], by_key[5, 0.7])  # seeds differ
    assert not np.array_equal(by_key[3, 0.0], by_key[3, 1.0])  # eta matters


def test_an_image_depends_on_its_seed_not_on_its_batch() -> None:
    pipe = _pipeline("epsilon")
    _, e_tgt = _inputs(pipe)
    e_opt = e_tgt * 0.9
    batched = generate(pipe, e_tgt, e_opt, FAST_C.model_copy(update={"batch_size": 6}), CPU)
    alone = generate(
        pipe, e_tgt, e_opt, FAST_C.model_copy(update={"seeds": [5], "etas": [0.7]}), CPU
    )
    pick = next(g for g in batched if (g.seed, g.eta) == (5, 0.7))
    difference = np.abs(np.asarray(pick.image, float) - np.asarray(alone[0].image, float))
    assert difference.max() <= 1  # batch-size float noise only, at most one 8-bit level


def test_guidance_rescale_reaches_the_sampler() -> None:
    pipe = _pipeline("v_prediction")
    _, e_tgt = _inputs(pipe)
    e_opt = e_tgt * 0.9
    one = FAST_C.model_copy(update={"seeds": [3], "etas": [0.7]})
    plain = generate(pipe, e_tgt, e_opt, one, CPU)
    rescaled = generate(pipe, e_tgt, e_opt, one.model_copy(update={"guidance_rescale": 1.0}), CPU)
    assert not np.array_equal(_pixels(plain)[0], _pixels(rescaled)[0])


def test_generate_reports_progress_per_batch() -> None:
    pipe = _pipeline("epsilon")
    _, e_tgt = _inputs(pipe)
    events: list[StageProgress] = []
    generate(pipe, e_tgt, e_tgt, FAST_C.model_copy(update={"batch_size": 4}), CPU, events.append)
    assert [(e.step, e.total) for e in events] == [(4, 6), (6, 6)]


@pytest.mark.parametrize(
    ("lora", "save_dtype"), [(False, "float32"), (False, "float16"), (True, "float32")]
)
def test_saved_finetuned_state_reproduces_the_outputs_exactly(
    tmp_path: Path, lora: bool, save_dtype: str
) -> None:
    pipe = _pipeline("epsilon")
    latents, e_tgt = _inputs(pipe)
    e_opt = optimize_embedding(pipe, latents, e_tgt, OptimizeParams(steps=3), CPU).e_opt
    params = FinetuneParams(steps=3, lora=lora, learning_rate=1e-3, save_dtype=save_dtype)
    finetune(pipe, latents, e_opt, params, CPU)
    save_finetuned_state(pipe.unet, tmp_path / "state", save_dtype=params.save_dtype)
    load_finetuned_state(pipe, tmp_path / "state")  # as an edit does: sample what is stored
    expected = generate(pipe, e_tgt, e_opt, FAST_C, CPU)

    fresh = _pipeline("epsilon")
    assert load_finetuned_state(fresh, tmp_path / "state") == ("lora" if lora else "full")
    reloaded = generate(fresh, e_tgt, e_opt, FAST_C, CPU)
    for a, b in zip(_pixels(expected), _pixels(reloaded), strict=True):
        np.testing.assert_array_equal(a, b)

    untuned = generate(_pipeline("epsilon"), e_tgt, e_opt, FAST_C, CPU)
    pairs = zip(_pixels(untuned), _pixels(reloaded), strict=True)
    assert any(not np.array_equal(a, b) for a, b in pairs)


def test_text_longer_than_the_tokenizer_window_is_refused() -> None:
    pipe = _pipeline("epsilon")
    too_long = "a very long description " * 10  # character-level tokenizer: > 77 tokens
    with pytest.raises(InvalidTextError, match=r"more than this model's limit of 77.*Shorten"):
        encode_text(pipe, too_long)
    assert encode_text(pipe, "a" * 75).shape == (1, 77, 32)


def test_gradient_checkpointing_gives_the_same_training(tmp_path: Path) -> None:
    losses = []
    for checkpointing in (False, True):
        pipe = _pipeline("epsilon")
        latents, e_tgt = _inputs(pipe)
        params = FinetuneParams(steps=3, learning_rate=1e-3, gradient_checkpointing=checkpointing)
        losses.append(finetune(pipe, latents, e_tgt, params, CPU).losses)
        assert not pipe.unet.is_gradient_checkpointing  # switched off again after training
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


def test_rebuild_pipeline_from_base_model_and_stored_state(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    pipe = load_pipeline(str(tiny_model_dir))
    latents, e_tgt = _inputs(pipe)
    finetune(pipe, latents, e_tgt, FinetuneParams(steps=2, learning_rate=1e-3), CPU)
    save_finetuned_state(pipe.unet, tmp_path / "state", save_dtype="float32")
    rebuilt = load_finetuned_pipeline(str(tiny_model_dir), tmp_path / "state")
    for key, value in pipe.unet.state_dict().items():
        assert torch.equal(value, rebuilt.unet.state_dict()[key]), key


@pytest.mark.gpu
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_stages_on_cuda_with_autocast_keep_fp32_master_weights(lora: bool) -> None:
    runtime = resolve_runtime("cuda", "auto")
    assert runtime.autocast_dtype in (torch.bfloat16, torch.float16)
    pipe = _pipeline("epsilon").to(runtime.device)
    latents, e_tgt = _inputs(pipe)
    a = optimize_embedding(pipe, latents, e_tgt, OptimizeParams(steps=5), runtime)
    assert a.e_opt.dtype == torch.float32
    finetune(pipe, latents, a.e_opt, FinetuneParams(steps=5, lora=lora), runtime)
    assert {p.dtype for p in pipe.unet.parameters()} == {torch.float32}
    images = generate(pipe, e_tgt, a.e_opt, FAST_C, runtime)
    assert len(images) == 6
