"""The toy text-to-image model: its tokenizer, its pipeline, its training and its checksums.

The toy model is trained once for 60-90 minutes and then shipped, so what these tests guard is
what a long run cannot afford to get wrong: every caption word is one token, the saved folder
loads wherever Stable Diffusion folders load, an interrupted run resumes bit for bit instead of
restarting, and a corrupted weight file is refused with a message naming it. Training runs
here are a few steps at batch 4 on the CPU.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import json
import os
import random
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPTokenizer

import imagic.toyworld.folder
from imagic.errors import InvalidParamsError, ModelLoadError, OutputDirError
from imagic.models import load_pipeline
from imagic.toyworld.checksums import CHECKSUMS_FILE, verify_checksums
from imagic.toyworld.config import ToyModelConfig, ToyTrainParams
from imagic.toyworld.folder import (
    ALONGSIDE_DIR,
    CONFIG_FILE,
    ENVIRONMENT_FILE,
    list_checkpoints,
    prepare_training_folder,
)
from imagic.toyworld.model import build_toy_pipeline, parameter_counts, save_toy_pipeline
from imagic.toyworld.scenes import Scene, SceneObject, caption, sample_scene
from imagic.toyworld.tokenizer import (
    MODEL_MAX_LENGTH,
    build_toy_tokenizer,
    token_words,
    unknown_words,
    warn_unknown_words,
    write_tokenizer_files,
)
from imagic.toyworld.train import (
    REFERENCE_OBJECT_SHARE,
    ToyTrainer,
    ToyTrainResult,
    decoder_batch,
    kl_scale,
    learning_rate,
    object_pixel_weights,
    phase_batches,
    random_crops,
    train_toy_model,
    training_batch,
    training_scenes,
    unet_batch,
    vae_batch,
)
from imagic.toyworld.vocabulary import TEMPLATES, vocabulary

# --- tokenizer ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer() -> CLIPTokenizer:
    return build_toy_tokenizer()


def _one_token_each(tok: CLIPTokenizer) -> None:
    for word in token_words():
        pieces = tok.tokenize(word)
        assert len(pieces) == 1, f"{word!r} -> {pieces}"
        assert tok.convert_tokens_to_ids(pieces[0]) != tok.unk_token_id


def test_every_vocabulary_word_is_one_token(tokenizer: CLIPTokenizer, tmp_path: Path) -> None:
    _one_token_each(tokenizer)
    vocab_file, merges_file = write_tokenizer_files(tmp_path / "files")
    assert merges_file.read_text().startswith("#version: 0.2\n")
    _one_token_each(CLIPTokenizer(str(vocab_file), str(merges_file)))
    tokenizer.save_pretrained(tmp_path / "saved")
    reloaded = CLIPTokenizer.from_pretrained(tmp_path / "saved")
    assert reloaded.model_max_length == MODEL_MAX_LENGTH
    _one_token_each(reloaded)


def _untokenized(text: str) -> str:
    """CLIP decoding puts spaces around punctuation; captions have none before it."""
    return text.replace(" ,", ",").replace(" ;", ";")


def test_captions_encode_one_token_per_word_and_decode_back(tokenizer: CLIPTokenizer) -> None:
    rng = random.Random(0)
    for seed in range(200):
        text = caption(sample_scene(seed), rng)
        ids = tokenizer(text, padding="max_length", max_length=MODEL_MAX_LENGTH).input_ids
        assert len(ids) == MODEL_MAX_LENGTH
        words = len(text.replace(",", " ,").replace(";", " ;").split())
        assert ids[0] == tokenizer.bos_token_id  # then one token per word or punctuation mark
        assert set(ids[words + 1 :]) == {tokenizer.eos_token_id}  # end, then padding
        assert tokenizer.unk_token_id not in ids[1 : words + 1]
        assert _untokenized(tokenizer.decode(ids, skip_special_tokens=True)) == text


def test_the_longest_captions_fit_without_truncation(tokenizer: CLIPTokenizer) -> None:
    figure = {"shape": "stick figure", "colour": "purple", "size": "small", "pose": "arms down"}
    scene = Scene(
        "white",
        "striped",
        (SceneObject(position="left", **figure), SceneObject(position="right", **figure)),
    )
    rng = random.Random(1)
    longest = max(
        len(tokenizer(caption(scene, rng, style)).input_ids)
        for style in range(len(TEMPLATES))
        for _ in range(50)
    )
    assert 36 <= longest <= MODEL_MAX_LENGTH


def test_unknown_words_are_listed_once_in_order() -> None:
    assert unknown_words("A big RED circle on the left; the background is white") == []
    assert unknown_words("a red dog, running! a red dog 3") == ["dog", "running", "!", "3"]
    with pytest.warns(UserWarning, match=r"2 word\(s\).*'dog', 'running'"):
        assert warn_unknown_words("a dog running") == ["dog", "running"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_unknown_words("a small blue square") == []


def test_vocabulary_words_are_all_tokens() -> None:
    assert set(vocabulary()) < set(token_words())


# --- the pipeline -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_toy_pipeline(build_toy_pipeline(seed=0), tmp_path_factory.mktemp("toy") / "m")


def test_architecture_and_parameter_counts() -> None:
    pipe = build_toy_pipeline()
    counts = parameter_counts(pipe)
    assert 1_500_000 <= counts["unet"] <= 3_000_000
    assert counts["vae"] < 1_500_000 and counts["text_encoder"] < 1_000_000
    assert pipe.vae_scale_factor == 4 and pipe.unet.config.sample_size == 16
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert pipe.text_encoder.config.max_position_embeddings == pipe.tokenizer.model_max_length
    again = build_toy_pipeline()
    assert torch.equal(pipe.unet.conv_in.weight, again.unet.conv_in.weight)  # seeded


def test_bad_model_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="not divisible by 4"):
        ToyModelConfig(image_size=66)
    with pytest.raises(ValueError, match="attention head dim"):
        ToyModelConfig(unet_attention_head_dim=24)
    with pytest.raises(ValueError, match="unet_attention has 2 levels, unet_channels 3"):
        ToyModelConfig(unet_attention=(True, True))
    with pytest.raises(ValueError, match="no level with cross-attention"):
        ToyModelConfig(unet_attention=(False, False, False))
    with pytest.raises(ValueError, match="'epsilon' with zero_terminal_snr = True"):
        ToyModelConfig(prediction_type="epsilon")
    ToyModelConfig(prediction_type="epsilon", zero_terminal_snr=False)  # SD 1.x's own schedule


def test_the_toy_schedule_ends_in_pure_noise() -> None:
    scheduler = build_toy_pipeline().scheduler
    assert scheduler.config.prediction_type == "v_prediction"
    assert float(scheduler.alphas_cumprod[-1]) < 1e-6
    scheduler.set_timesteps(25)
    assert int(scheduler.timesteps[0]) == 999  # sampling starts where training saw pure noise


def test_levels_without_attention_are_plain_blocks() -> None:
    pipe = build_toy_pipeline(ToyModelConfig())
    assert pipe.unet.config.down_block_types == (
        "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
    )  # fmt: skip
    assert pipe.unet.config.up_block_types == (
        "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D",
    )  # fmt: skip


def test_saved_pipeline_is_fp16_and_complete(saved_model: Path) -> None:
    weights = load_file(saved_model / "unet" / "diffusion_pytorch_model.safetensors")
    assert {tensor.dtype for tensor in weights.values()} == {torch.float16}
    for name in ("vocab.json", "merges.txt", "tokenizer.json"):
        assert (saved_model / "tokenizer" / name).is_file()
    listed = set(json.loads((saved_model / CHECKSUMS_FILE).read_text()))
    on_disk = {p.relative_to(saved_model).as_posix() for p in saved_model.rglob("*") if p.is_file()}
    assert listed == on_disk - {CHECKSUMS_FILE}
    verify_checksums(saved_model)


def test_saved_pipeline_loads_and_generates(saved_model: Path) -> None:
    plain = StableDiffusionPipeline.from_pretrained(saved_model)
    assert type(plain.scheduler).__name__ == "DDIMScheduler"
    assert plain.safety_checker is None and plain.feature_extractor is None
    pipe = load_pipeline(str(saved_model))
    image = pipe(
        "a large red circle on the left on a white background",
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    assert isinstance(image, Image.Image) and image.size == (64, 64)


def test_verify_checksums_names_a_corrupted_file(saved_model: Path, tmp_path: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(saved_model, tmp_path / "copy"))
    expected = json.loads((copy / CHECKSUMS_FILE).read_text())["vae/config.json"]
    config = copy / "vae" / "config.json"
    config.write_text(config.read_text().replace("64", "65", 1))
    with pytest.raises(ModelLoadError) as excinfo:
        verify_checksums(copy)
    message = str(excinfo.value)
    assert "vae/config.json" in message and expected in message
    assert "imagic toy train --out DIR" in message
    config.unlink()
    with pytest.raises(ModelLoadError, match=r"vae/config.json is missing"):
        verify_checksums(copy)
    (copy / CHECKSUMS_FILE).unlink()
    with pytest.raises(ModelLoadError, match=r"no checksums\.json"):
        verify_checksums(copy)


# --- training -----------------------------------------------------------------------------------

# The shipped architecture, narrowed: same 64 px images, 16 x 16 latents and code paths, a
# fraction of the compute, so a few training runs fit in seconds on a 2-core CPU.
NARROW = ToyModelConfig(
    text_hidden_size=32,
    text_layers=1,
    text_intermediate_size=64,
    vae_channels=(8, 16, 16),
    unet_channels=(16, 16, 32),
    unet_attention_head_dim=8,
    norm_num_groups=8,
)
FEW_STEPS = {
    "model": NARROW,
    "vae_steps": 3,
    "unet_steps": 3,
    "decoder_steps": 3,
    "batch_size": 4,
    "decoder_batch_size": 2,
    "checkpoint_every": 2,
    "grid_size": 2,
    "sample_steps": 2,
    "device": "cpu",
    "decoder_alongside": False,  # on in its own tests: a second process costs seconds
    "vae_crop_size": None,  # whole scenes; the crop test compares a run on crops with them
}


class _Interrupted(Exception):
    """Raised by a step hook to stop a run the way a crash or Ctrl-C would."""


def _train(out: Path, stop_at: tuple[str, int] | None = None, **overrides: object) -> tuple:
    """Run training; return (result or None if interrupted, the (phase, step)s it ran)."""
    ran: list[tuple[str, int]] = []

    def hook(phase: str, step: int, loss: float) -> None:
        ran.append((phase, step))
        if (phase, step) == stop_at:
            raise _Interrupted

    params = ToyTrainParams(out=str(out), **{**FEW_STEPS, **overrides})
    try:
        return train_toy_model(params, on_step=hook, progress=False), ran
    except _Interrupted:
        return None, ran


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> ToyTrainResult:
    """An uninterrupted few-step run: what every resumed run must reproduce exactly."""
    result, ran = _train(tmp_path_factory.mktemp("toy-train") / "ref")
    assert ran == [(phase, step) for phase in ("vae", "unet", "decoder") for step in (1, 2, 3)]
    return result


def test_a_short_run_writes_model_losses_grid_and_checksums(reference: ToyTrainResult) -> None:
    out = reference.out_dir
    assert reference.resumed_from is None and reference.device == "cpu"
    losses = json.loads(reference.losses.read_text())
    assert [record["step"] for record in losses["vae"]] == [1, 2, 3]
    assert [record["step"] for record in losses["unet"]] == [1, 2, 3]
    assert [record["step"] for record in losses["decoder"]] == [1, 2, 3]
    assert {"loss", "mse", "kl"} <= set(losses["vae"][0])
    grid = Image.open(reference.grid)
    assert grid.width >= 2 * 2 * 64 and grid.height > 2 * 64  # 2 cells of truth | sample
    verify_checksums(reference.model_dir)
    pipe = load_pipeline(str(reference.model_dir))
    assert pipe.vae.config.scaling_factor != pytest.approx(0.18215)  # measured, not SD's
    names = [path.name for path in list_checkpoints(out)]
    assert names == ["decoder-0000002.pt", "decoder-0000003.pt"]  # the newest two are kept
    samples = sorted(path.name for path in (out / "samples").iterdir())
    assert samples == [
        f"{phase}-{step:07d}.png" for phase in ("decoder", "unet", "vae") for step in (2, 3)
    ]
    assert not [path for path in out.rglob(".*")]  # no temporary or staging leftovers


def test_a_run_records_its_machine_and_software(reference: ToyTrainResult) -> None:
    """What a reproduction on another machine is compared by (see `run_environment`)."""
    first = json.loads((reference.out_dir / ENVIRONMENT_FILE).read_text())[0]
    assert first["resumed_from"] is None and first["device"] == "cpu"
    assert first["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert first["torch_threads"] == torch.get_num_threads()
    assert first["torch"] == torch.__version__
    assert first["pillow"] == importlib.metadata.version("pillow")
    assert first["cpu"] and first["device_name"] == first["cpu"]


def _made_by(step: int) -> tuple[int, int]:
    """A batch maker for the test below: the step and the process that made it."""
    return step, os.getpid()


def test_phase_batches_come_in_step_order_from_worker_processes() -> None:
    in_process = list(phase_batches(_made_by, 3, 9, workers=0))
    assert in_process == [(step, os.getpid()) for step in range(3, 10)]
    ahead = list(phase_batches(_made_by, 3, 9, workers=2))
    assert [step for step, _ in ahead] == list(range(3, 10))
    assert os.getpid() not in {pid for _, pid in ahead}  # rendered in the workers


@pytest.mark.parametrize("workers", [None, 2])
def test_an_interrupted_run_resumes_exactly(
    reference: ToyTrainResult, tmp_path: Path, workers: int | None
) -> None:
    """Interrupted in each phase after a checkpoint; each rerun continues from that step.

    With 2 data workers too (the reference made its batches in-process, as the CPU default
    does): batches rendered ahead in other processes must give the same bytes, and a run
    interrupted while they are still rendering must stop cleanly.
    """
    out = tmp_path / "run"
    result, ran = _train(out, stop_at=("vae", 2), data_workers=workers)
    assert result is None and ran == [("vae", 1), ("vae", 2)]
    assert list_checkpoints(out)[-1].name == "vae-0000002.pt"

    result, ran = _train(out, stop_at=("unet", 2), data_workers=workers)
    assert result is None and ran == [("vae", 3), ("unet", 1), ("unet", 2)]  # not from vae 1
    assert list_checkpoints(out)[-1].name == "unet-0000002.pt"

    result, ran = _train(out, stop_at=("decoder", 2), data_workers=workers)
    assert result is None and ran == [("unet", 3), ("decoder", 1), ("decoder", 2)]
    assert list_checkpoints(out)[-1].name == "decoder-0000002.pt"

    result, ran = _train(out, data_workers=workers)
    assert result is not None and result.resumed_from == ("decoder", 2)
    assert ran == [("decoder", 3)]
    assert result.losses.read_text() == reference.losses.read_text()
    ours = json.loads((result.model_dir / CHECKSUMS_FILE).read_text())
    theirs = json.loads((reference.model_dir / CHECKSUMS_FILE).read_text())
    assert ours == theirs  # the same bytes as the uninterrupted run
    runs = json.loads((out / ENVIRONMENT_FILE).read_text())
    assert [run["resumed_from"] for run in runs] == [
        None, "vae-0000002.pt", "unet-0000002.pt", "decoder-0000002.pt"
    ]  # fmt: skip


def test_a_finished_folder_reruns_without_training(reference: ToyTrainResult) -> None:
    before = (reference.model_dir / CHECKSUMS_FILE).read_text()
    result, ran = _train(reference.out_dir)
    assert ran == [] and result.resumed_from == ("decoder", 3)
    assert (result.model_dir / CHECKSUMS_FILE).read_text() == before


def test_resuming_with_another_recipe_or_fewer_steps_is_refused(
    reference: ToyTrainResult,
) -> None:
    with pytest.raises(InvalidParamsError) as excinfo:
        prepare_training_folder(
            ToyTrainParams(out=str(reference.out_dir), **{**FEW_STEPS, "batch_size": 8})
        )
    message = str(excinfo.value)
    assert "batch_size (--batch-size) = 8" in message and "started with 4" in message
    assert "--no-resume" in message
    with pytest.raises(InvalidParamsError, match=r"--unet-steps\) = 2.*already has 3 UNet"):
        _train(reference.out_dir, unet_steps=2)
    with pytest.raises(InvalidParamsError, match=r"--vae-steps\) = 5.*Pass --vae-steps 3"):
        _train(reference.out_dir, vae_steps=5)
    with pytest.raises(InvalidParamsError, match=r"--unet-steps\) = 4.*has started phase c"):
        _train(reference.out_dir, unet_steps=4)  # the decoder was tuned after 3 UNet steps
    with pytest.raises(InvalidParamsError, match=r"--decoder-steps\) = 5, but .* started with 3"):
        _train(reference.out_dir, decoder_steps=5)  # its learning rate decays to 0 at its end


@pytest.fixture(scope="module")
def without_phase_c(tmp_path_factory: pytest.TempPathFactory) -> ToyTrainResult:
    """The reference's recipe with another phase c (none, at another batch size)."""
    out = tmp_path_factory.mktemp("toy-train") / "no-phase-c"
    result, _ = _train(out, decoder_steps=0, decoder_batch_size=None)
    return result


def test_phase_c_changes_the_decoder_only(
    reference: ToyTrainResult, without_phase_c: ToyTrainResult
) -> None:
    """The fine-tuned decoder is a drop-in: encoder (so the latents), text encoder, UNet equal."""
    without = without_phase_c
    ours = json.loads((reference.model_dir / CHECKSUMS_FILE).read_text())
    theirs = json.loads((without.model_dir / CHECKSUMS_FILE).read_text())
    assert {k: v for k, v in ours.items() if not k.startswith("vae/")} == {
        k: v for k, v in theirs.items() if not k.startswith("vae/")
    }
    name = "vae/diffusion_pytorch_model.safetensors"
    tuned, plain = load_file(reference.model_dir / name), load_file(without.model_dir / name)
    changed = {key for key in tuned if not torch.equal(tuned[key], plain[key])}
    assert changed and all(key.startswith(("decoder.", "post_quant_conv.")) for key in changed)


def test_a_branch_from_the_end_of_phase_b_equals_a_whole_run_of_its_recipe(
    reference: ToyTrainResult, without_phase_c: ToyTrainResult, tmp_path: Path
) -> None:
    """--start-from: phase c alone is trained, and the bytes are the reference's.

    With phase c alongside asked for (the default) too: phase b has no step left, so phase c
    trains in this process, on all the threads, as the reference's did.
    """
    source = list_checkpoints(without_phase_c.out_dir)[-1]
    assert source.name == "unet-0000003.pt"
    out = tmp_path / "branch"
    result, ran = _train(out, start_from=str(source), decoder_alongside=True)
    assert ran == [("decoder", 1), ("decoder", 2), ("decoder", 3)]  # here, not in a second one
    ours = json.loads((result.model_dir / CHECKSUMS_FILE).read_text())
    theirs = json.loads((reference.model_dir / CHECKSUMS_FILE).read_text())
    assert ours == theirs
    assert result.losses.read_text() == reference.losses.read_text()
    runs = json.loads((out / ENVIRONMENT_FILE).read_text())
    assert [run["resumed_from"] for run in runs] == [str(source)]
    again, ran = _train(out, start_from=str(source))  # the branch's own checkpoints now
    assert ran == [] and again.resumed_from == ("decoder", 3)


def test_a_branch_that_would_not_match_its_recipe_is_refused(
    reference: ToyTrainResult, without_phase_c: ToyTrainResult, tmp_path: Path
) -> None:
    source = list_checkpoints(without_phase_c.out_dir)[-1]
    with pytest.raises(InvalidParamsError) as excinfo:
        _train(tmp_path / "seed", start_from=str(source), seed=1)
    message = str(excinfo.value)
    assert f"start_from (--start-from) = '{source}'" in message
    assert "seed (--seed) = 1, but the checkpoint was trained with 0" in message
    assert "only phase c's settings may differ" in message
    assert "decoder" not in message.split("):")[1]  # phase c's own changes are allowed
    assert not any((tmp_path / "seed").iterdir())  # nothing claimed: the fixed rerun works
    inside_c = list_checkpoints(reference.out_dir)[0]
    assert inside_c.name == "decoder-0000002.pt"
    with pytest.raises(InvalidParamsError, match=r"phase c had started there(.|\n)*--decoder-lr"):
        _train(tmp_path / "lr", start_from=str(inside_c), decoder_learning_rate=1e-4)
    with pytest.raises(InvalidParamsError, match=r"--vae-steps 3 .*--start-from an earlier"):
        _train(tmp_path / "vae", start_from=str(source), vae_steps=2)  # its VAE has 3 steps
    with pytest.raises(InvalidParamsError, match=r"--start-from\) = '.*missing.pt' is not a file"):
        prepare_training_folder(
            ToyTrainParams(out=str(tmp_path / "x"), start_from=str(tmp_path / "missing.pt"))
        )


@pytest.mark.parametrize(("decoder_batch_size", "expected"), [(None, 4), (2, 2)])
def test_phase_c_batches_take_decoder_batch_size_else_batch_size(
    decoder_batch_size: int | None, expected: int, tmp_path: Path
) -> None:
    params = ToyTrainParams(
        out=str(tmp_path / "run"), **{**FEW_STEPS, "decoder_batch_size": decoder_batch_size}
    )
    trainer = ToyTrainer(params, progress=False)
    images, weights = trainer.batch_maker("decoder")(1)
    assert len(images) == len(weights) == expected
    images, captions, cell_weights = trainer.batch_maker("unet")(1)
    assert len(images) == len(captions) == 4
    assert cell_weights is not None and cell_weights.shape == (4, 16, 16)  # the default weights


def test_unet_batch_without_object_weights_is_the_plain_training_batch() -> None:
    """Object weight 1 and area balance 0 (the defaults before the weighted recipe shipped): the
    batch phase b always had, and no weights, so the step computes its loss as it always did
    and such a run's bytes do not change."""
    images, captions, weights = unet_batch(0, 3, 6, 0.5, 64, 4)
    expected_images, expected_captions = training_batch(0, "unet", 3, 6, 0.5, 64)
    assert (images == expected_images).all() and captions == expected_captions
    assert weights is None


def test_unet_batch_weighs_the_latent_cells_under_objects() -> None:
    """Each cell weighs the mean of its 4 x 4 pixels' weights, scaled to a mean of 1 per image."""
    images, _, weights = unet_batch(0, 3, 6, 0.1, 64, 4, object_weight=3.0, area_balance=1.0)
    assert (images == training_batch(0, "unet", 3, 6, 0.1, 64)[0]).all()
    assert weights is not None and weights.shape == (6, 16, 16)
    assert weights.mean(axis=(1, 2)) == pytest.approx(np.ones(6), rel=1e-5)
    scenes, _ = training_scenes(0, "unet", 3, 6, 0.1)
    pixels = object_pixel_weights(scenes, 64, 3.0, 1.0)
    for weight, pixel in zip(weights, pixels, strict=True):
        cells = pixel.reshape(16, 4, 16, 4).mean(axis=(1, 3))
        assert weight == pytest.approx(cells / cells.mean(), rel=1e-5)
        empty = cells == 1.0  # no object pixel in the cell
        assert empty.any() and (~empty).any()
        assert (weight[~empty] > weight[empty].max()).all()


def test_a_weighted_phase_b_step_trains_on_the_weighted_loss(tmp_path: Path) -> None:
    """First steps of models with the same initial weights, on the same images: with all cell
    weights 1 the weighted loss is the plain mean's; with the recipe's weights it is not."""

    def first_loss(name: str, object_weight: float, ones: bool = False) -> float:
        params = ToyTrainParams(
            out=str(tmp_path / name),
            **FEW_STEPS,
            unet_object_weight=object_weight,
            unet_area_balance=0.0 if object_weight == 1.0 else 1.0,
        )
        trainer = ToyTrainer(params, progress=False)
        trainer.scaling_factor = 1.0
        images, captions, weights = trainer.batch_maker("unet")(1)
        if ones:
            weights = np.ones((len(images), 16, 16), dtype=np.float32)
        return trainer.phase_step("unet")(1, (images, captions, weights))["loss"]

    plain = first_loss("plain", 1.0)
    assert first_loss("ones", 3.0, ones=True) == pytest.approx(plain, rel=1e-6)
    assert first_loss("weighted", 3.0) != pytest.approx(plain, rel=1e-3)


def test_decoder_batch_weighs_object_pixels() -> None:
    images, weights = decoder_batch(seed=0, step=1, batch_size=4, object_weight=10.0, image_size=64)
    assert images.shape == (4, 64, 64, 3) and weights.shape == (4, 64, 64)
    assert weights.mean() == pytest.approx(1.0)
    values = np.unique(weights.round(5))
    assert len(values) == 2 and values[1] / values[0] == pytest.approx(10.0, rel=1e-4)


def test_decoder_batch_with_area_balance_1_weighs_small_objects_as_the_reference() -> None:
    """An object under the reference area weighs object_weight x that area in all.

    Pixel weight / background weight = 3 * reference / area for such an object, so weight x
    pixel count over (3 * reference) counts the objects of one area: a whole number (objects
    never overlap). Larger objects keep 3 per pixel, as with area_balance 0.
    """
    _, weights = decoder_batch(
        seed=0, step=1, batch_size=8, object_weight=3.0, image_size=64, area_balance=1.0
    )
    reference = REFERENCE_OBJECT_SHARE * 64**2
    assert reference == 100
    small_areas, large = set(), 0
    for weight in weights:
        values, counts = np.unique(weight, return_counts=True)
        background = values[counts.argmax()]  # most of every scene
        ratios, counts = values[values != background] / background, counts[values != background]
        large += np.isclose(ratios, 3.0).sum()
        small = ~np.isclose(ratios, 3.0)
        assert (ratios[small] > 3.0).all()
        objects = ratios[small] * counts[small] / (3.0 * reference)
        assert objects == pytest.approx(np.round(objects), abs=1e-3) and (objects > 0.5).all()
        small_areas.update(np.round(counts[small] / np.round(objects)).astype(int).tolist())
    assert large > 0 and len(small_areas) > 2  # both kinds in the batch


def test_random_crops_cut_every_batch_alike_on_latent_cell_borders() -> None:
    """Images and their pixel weights get the same window; windows start on multiples of 4."""
    images, weights = decoder_batch(seed=0, step=1, batch_size=16, object_weight=3.0, image_size=64)
    coords = np.indices((64, 64)).transpose(1, 2, 0)  # (y, x) of every pixel
    where = np.broadcast_to(coords, (16, 64, 64, 2))
    crops = random_crops(0, "decoder", 1, 32, 4, images, weights, where)
    assert [crop.shape[:3] for crop in crops] == [(16, 32, 32)] * 3
    starts = crops[2][:, 0, 0]
    assert (starts % 4 == 0).all() and (starts <= 32).all()
    for index, (y, x) in enumerate(starts):
        assert (crops[0][index] == images[index, y : y + 32, x : x + 32]).all()
        assert (crops[1][index] == weights[index, y : y + 32, x : x + 32]).all()
    assert len({tuple(start) for start in starts}) > 4  # not one window for all
    again = random_crops(0, "decoder", 1, 32, 4, where)[0]
    assert (again == crops[2]).all()  # a function of (seed, phase, step)
    assert not (random_crops(0, "decoder", 2, 32, 4, where)[0] == crops[2]).all()


def test_a_run_on_crops_trains_phase_a_on_crops_and_exports_a_whole_scene_model(
    reference: ToyTrainResult, tmp_path: Path
) -> None:
    """Phase a sees crops, so its losses (and the VAE after it) differ from whole scenes'."""
    cropped, _ = _train(tmp_path / "crops", vae_crop_size=32)
    ours, theirs = (json.loads(r.losses.read_text()) for r in (cropped, reference))
    assert ours["vae"] != theirs["vae"] and ours["decoder"] != theirs["decoder"]
    assert json.loads((cropped.out_dir / CONFIG_FILE).read_text())["vae_crop_size"] == 32
    # A crop's KL counts as a whole scene's would: a quarter of the area, 4 times the weight.
    assert kl_scale(NARROW.image_size, 32) == (NARROW.image_size / 32) ** 2 > 1
    for records, scale in ((ours, kl_scale(NARROW.image_size, 32)), (theirs, 1.0)):
        for record in records["vae"]:
            kl_term = record["loss"] - record["mse"]
            assert kl_term == pytest.approx(
                ToyTrainParams.model_fields["kl_weight"].default * scale * record["kl"], rel=1e-3
            )
    pipe = load_pipeline(str(cropped.model_dir))
    assert pipe.vae.config.sample_size == 64  # the model itself still works on whole scenes
    with pytest.raises(InvalidParamsError, match=r"\(--vae-crop-size\) = 64, but .* 32"):
        _train(cropped.out_dir)  # the crop is part of the recipe


def test_learning_rate_warms_up_then_stays_or_decays_to_zero() -> None:
    assert learning_rate(1.0, 1, warmup=100) == pytest.approx(0.01)
    assert learning_rate(1.0, 100, warmup=100) == learning_rate(1.0, 5000, warmup=100) == 1.0
    decayed = [learning_rate(1.0, step, 100, decay_until=1000) for step in range(100, 1001)]
    assert decayed[0] == 1.0 and decayed[450] == pytest.approx(0.5)  # half way
    assert decayed[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(later <= earlier for earlier, later in itertools.pairwise(decayed))


@pytest.fixture(scope="module")
def one_thread_run(tmp_path_factory: pytest.TempPathFactory) -> ToyTrainResult:
    """The reference's recipe, every phase on one torch thread: what phase c alongside phase
    b (one thread each when torch has one) must reproduce."""
    result, _ = _train_one_thread(tmp_path_factory.mktemp("toy-train") / "one-thread")
    return result


def _train_one_thread(out: Path, **overrides: object) -> tuple:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(out, **overrides)
    finally:
        torch.set_num_threads(threads)


def _same_model_and_losses(result: ToyTrainResult, other: ToyTrainResult) -> bool:
    ours = json.loads((result.model_dir / CHECKSUMS_FILE).read_text())
    theirs = json.loads((other.model_dir / CHECKSUMS_FILE).read_text())
    return ours == theirs and result.losses.read_text() == other.losses.read_text()


def test_phase_c_alongside_phase_b_gives_the_sequential_run_s_bytes(
    one_thread_run: ToyTrainResult, tmp_path: Path
) -> None:
    """--decoder-alongside: phase c in a second process, merged into this folder at the end."""
    result, ran = _train_one_thread(tmp_path / "run", decoder_alongside=True)
    assert ran == [(phase, step) for phase in ("vae", "unet") for step in (1, 2, 3)]  # c: there
    assert _same_model_and_losses(result, one_thread_run)
    out = result.out_dir
    assert [path.name for path in list_checkpoints(out)] == [
        "unet-0000003.pt",
        "decoder-0000003.pt",
    ]
    samples = sorted(path.name for path in (out / "samples").iterdir())
    assert samples == sorted(path.name for path in (one_thread_run.out_dir / "samples").iterdir())
    assert not (out / ALONGSIDE_DIR).exists()  # merged, then removed
    assert json.loads((out / ENVIRONMENT_FILE).read_text())[0]["alongside_threads"] == [1, 1]


def test_phase_c_alongside_resumes_with_phase_b(
    one_thread_run: ToyTrainResult, tmp_path: Path
) -> None:
    """Phase b interrupted: the second process is stopped too; a rerun resumes both."""
    out = tmp_path / "run"
    result, ran = _train_one_thread(out, stop_at=("unet", 2), decoder_alongside=True)
    assert result is None and ran[-1] == ("unet", 2)
    assert list_checkpoints(out / ALONGSIDE_DIR)  # phase c's folder, seeded before phase b
    result, ran = _train_one_thread(out, decoder_alongside=True)
    assert ran == [("unet", 3)] and result.resumed_from == ("unet", 2)
    assert _same_model_and_losses(result, one_thread_run)


def test_a_failed_phase_c_process_fails_the_run_after_phase_b_saying_how_to_resume(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    _train_one_thread(out, stop_at=("unet", 1), decoder_alongside=True)  # phase c's folder
    for path in list_checkpoints(out / ALONGSIDE_DIR):
        path.write_bytes(b"not a checkpoint")  # so the second process fails as it starts
    with pytest.raises(RuntimeError, match=r"exit code 1 .* Phase b is complete; rerun"):
        _train_one_thread(out, decoder_alongside=True)
    assert list_checkpoints(out)[-1].name == "unet-0000003.pt"  # phase b's work is kept


def test_a_failed_phase_c_process_is_told_at_the_next_checkpoint_once(tmp_path: Path) -> None:
    """Phase b goes on to its end, so the user hears of a failure at once, not hours later."""
    trainer = ToyTrainer(ToyTrainParams(out=str(tmp_path / "run"), **FEW_STEPS), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trainer.warn_if_alongside_failed()  # not started
        trainer.alongside = types.SimpleNamespace(exitcode=None)
        trainer.warn_if_alongside_failed()  # still running
    trainer.alongside = types.SimpleNamespace(exitcode=1)
    with pytest.warns(UserWarning, match=r"exit code 1 .* stop it now and rerun"):
        trainer.warn_if_alongside_failed()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trainer.warn_if_alongside_failed()  # once


def test_an_alongside_folder_resumed_without_the_flag_says_so(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _train_one_thread(out, stop_at=("unet", 1), decoder_alongside=True)
    with pytest.warns(UserWarning, match=r"phase-c-alongside holds phase c .* --decoder-along"):
        result, ran = _train_one_thread(out, stop_at=("unet", 2))
    assert result is None and ran == [("unet", 1), ("unet", 2)]  # from vae-3: it goes on


def test_a_fallback_given_as_its_value_resumes_the_folder(tmp_path: Path) -> None:
    """A folder whose config left the crop and phase c's batch out (as an earlier release's
    defaults did) resumes with their fallbacks passed as values: they train the same bytes."""
    out = tmp_path / "run"
    old = ToyTrainParams(out=str(out), vae_crop_size=None, decoder_batch_size=None)
    prepare_training_folder(old)
    size, batch = old.model.image_size, old.batch_size
    whole = vae_batch(0, 1, 2, size, None, old.model.vae_factor)
    assert np.array_equal(vae_batch(0, 1, 2, size, size, old.model.vae_factor), whole)
    assert kl_scale(size, size) == kl_scale(size, None)
    same = {"out": str(out), "vae_crop_size": size, "decoder_batch_size": batch}
    prepare_training_folder(ToyTrainParams(**same))  # not refused
    with pytest.raises(InvalidParamsError) as excinfo:
        prepare_training_folder(ToyTrainParams(**{**same, "vae_crop_size": size // 2}))
    assert f"vae_crop_size (--vae-crop-size) = {size // 2}, but" in str(excinfo.value)
    assert f"started with {size}" in str(excinfo.value)
    with pytest.raises(InvalidParamsError, match=rf"--decoder-batch-size\) = {batch // 2}, but"):
        prepare_training_folder(ToyTrainParams(**{**same, "decoder_batch_size": batch // 2}))


def test_no_resume_starts_a_training_folder_over(tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "unet-0000009.pt").write_bytes(b"old")
    (out / "losses.json").write_text("{}")
    (out / CONFIG_FILE).write_text("{}")
    (out / ENVIRONMENT_FILE).write_text("[]")  # the earlier runs' machines: gone with them
    (out / ALONGSIDE_DIR / "checkpoints").mkdir(parents=True)  # a phase c of the earlier run
    prepare_training_folder(ToyTrainParams(out=str(out), resume=False))
    assert sorted(path.name for path in out.iterdir()) == [CONFIG_FILE]
    assert json.loads((out / CONFIG_FILE).read_text())["resume"] is False


def test_a_foreign_or_unwritable_out_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"not ours")
    with pytest.raises(OutputDirError, match="not a toy training folder"):
        prepare_training_folder(ToyTrainParams(out=str(foreign)))
    with pytest.raises(OutputDirError, match="is a file"):
        prepare_training_folder(ToyTrainParams(out=str(foreign / "cat.jpg" / "run")))
    assert sorted(path.name for path in foreign.iterdir()) == ["cat.jpg"]
    monkeypatch.setattr(imagic.toyworld.folder.os, "access", lambda *args, **kwargs: False)
    with pytest.raises(OutputDirError, match="permission denied"):
        prepare_training_folder(ToyTrainParams(out=str(tmp_path / "new")))
    assert not (tmp_path / "new").exists()
