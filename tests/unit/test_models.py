"""Unit tests for imagic.models: pipeline loading, schedulers and the stored fine-tuned state."""

from __future__ import annotations

import json
import re
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, UNet2DConditionModel
from peft import get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import imagic.models
from imagic.errors import FinetunedStateError, ImagicError, ModelLoadError
from imagic.models import (
    FINETUNED_MARKER,
    LORA_ADAPTER_NAME,
    REQUIRED_COMPONENTS,
    SCHEDULERS,
    add_lora_adapter,
    has_lora_adapter,
    load_finetuned_state,
    load_pipeline,
    make_scheduler,
    model_resolution,
    prediction_type,
    save_finetuned_state,
    sd1_ddim_scheduler,
)
from imagic.tiny_model import build_tiny_pipeline

UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"


class Boom(RuntimeError):
    pass


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """The tiny models gain nothing from threads; on a busy 2-core machine they cost seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def pipe():
    return build_tiny_pipeline(seed=0)


def perturb_(module: torch.nn.Module, *, only: str = "", scale: float = 0.05) -> None:
    """Add seeded noise to the parameters (those whose name contains `only`), in place."""
    generator = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if only in name:
                noise = torch.randn(parameter.shape, generator=generator)
                parameter.add_(noise * scale)


def cloned_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def assert_states_equal(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype, key
        assert torch.equal(actual[key], value), key


def unet_output(unet: UNet2DConditionModel) -> torch.Tensor:
    """The UNet's prediction on one fixed small input."""
    generator = torch.Generator().manual_seed(7)
    sample = torch.randn(1, 4, 16, 16, generator=generator)
    context = torch.randn(1, 8, unet.config.cross_attention_dim, generator=generator)
    with torch.no_grad():
        return unet(sample, torch.tensor([500]), encoder_hidden_states=context).sample


def lora_state(unet: UNet2DConditionModel) -> dict[str, torch.Tensor]:
    state = get_peft_model_state_dict(unet, adapter_name=LORA_ADAPTER_NAME)
    return {key: value.detach().clone() for key, value in state.items()}


def other_architecture_unet() -> UNet2DConditionModel:
    """Like the tiny UNet but with other channel widths: no tensor shape matches."""
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=48,
        attention_head_dim=8,
        norm_num_groups=16,
    )


def stored_dtypes(path: Path) -> set[torch.dtype]:
    with safe_open(str(path), framework="pt") as handle:
        return {handle.get_tensor(key).dtype for key in handle.keys()}  # noqa: SIM118


# --- load_pipeline ----------------------------------------------------------------------------


def test_load_local_folder_with_default_scheduler(tiny_model_dir: Path) -> None:
    loaded = load_pipeline(str(tiny_model_dir))
    assert type(loaded.scheduler) is DDIMScheduler
    assert prediction_type(loaded) == "epsilon"
    assert loaded.unet.dtype == torch.float32
    assert loaded.unet.device.type == "cpu"
    assert loaded.unet.config.sample_size == 32


def test_loaded_weights_are_the_saved_ones(tiny_model_dir: Path, pipe: Any) -> None:
    loaded = load_pipeline(str(tiny_model_dir))
    assert_states_equal(cloned_state(loaded.unet), cloned_state(pipe.unet))


def test_euler_scheduler_keeps_v_prediction(tiny_vpred_model_dir: Path) -> None:
    loaded = load_pipeline(str(tiny_vpred_model_dir), scheduler="euler")
    assert type(loaded.scheduler) is EulerDiscreteScheduler
    assert loaded.scheduler.config.prediction_type == "v_prediction"
    assert prediction_type(loaded) == "v_prediction"
    assert loaded.scheduler.config.beta_schedule == "scaled_linear"


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_keeps_the_model_config(name: str) -> None:
    config = build_tiny_pipeline("v_prediction").scheduler.config
    scheduler = make_scheduler(name, config)
    assert type(scheduler) is SCHEDULERS[name]
    assert scheduler.config.prediction_type == "v_prediction"
    assert scheduler.config.beta_end == pytest.approx(0.012)
    assert scheduler.config.num_train_timesteps == config.num_train_timesteps


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_zero_terminal_snr_survives_every_scheduler_or_is_refused(name: str) -> None:
    config = sd1_ddim_scheduler("v_prediction", zero_terminal_snr=True).config
    if name == "pndm":  # PNDM has no rescale_betas_zero_snr: it would sample another schedule
        with pytest.raises(ModelLoadError, match=r"scheduler = 'pndm'.*zero-terminal-SNR.*'ddim'"):
            make_scheduler(name, config)
        return
    scheduler = make_scheduler(name, config)
    assert scheduler.config.rescale_betas_zero_snr is True
    assert scheduler.config.timestep_spacing == "trailing"
    assert float(scheduler.alphas_cumprod[-1]) < 1e-6  # x_T is pure noise


def test_zero_terminal_snr_needs_v_prediction() -> None:
    with pytest.raises(ValueError, match="prediction_type = 'epsilon' with zero_terminal_snr"):
        sd1_ddim_scheduler("epsilon", zero_terminal_snr=True)


def test_unknown_scheduler_is_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError) as excinfo:
        load_pipeline(str(tiny_model_dir), scheduler="karras")
    message = str(excinfo.value)
    assert "scheduler = 'karras': unknown" in message
    assert "'ddim'" in message and "'euler'" in message


def test_model_resolution_of_the_tiny_model(pipe: Any) -> None:
    assert model_resolution(pipe) == (64, 64)
    scale = pipe.vae_scale_factor
    assert model_resolution(pipe) == (pipe.unet.config.sample_size * scale,) * 2


def test_model_resolution_follows_the_unet_config(pipe: Any) -> None:
    pipe.unet.register_to_config(sample_size=48)
    assert model_resolution(pipe) == (48 * pipe.vae_scale_factor,) * 2
    pipe.unet.register_to_config(sample_size=(40, 24))  # (height, width)
    assert model_resolution(pipe) == (24 * pipe.vae_scale_factor, 40 * pipe.vae_scale_factor)


@pytest.mark.parametrize("relative", [False, True])
def test_missing_folder_is_refused_with_a_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relative: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    model = "./no-such-model" if relative else str(tmp_path / "no" / "such-model")
    with pytest.raises(ModelLoadError) as excinfo:
        load_pipeline(model)
    message = str(excinfo.value)
    assert f"model = {model!r}" in message
    assert "no such folder" in message
    assert "imagic tiny-model" in message


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as excinfo:
        load_pipeline(str(tmp_path))
    message = str(excinfo.value)
    assert f"model = '{tmp_path}'" in message
    assert "no model_index.json" in message
    assert "save_pretrained" in message


def test_folder_missing_components_names_them(tiny_model_dir: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(tiny_model_dir / "model_index.json", partial)
    for name in ("unet", "scheduler"):
        shutil.copytree(tiny_model_dir / name, partial / name)
    with pytest.raises(ModelLoadError) as excinfo:
        load_pipeline(str(partial))
    message = str(excinfo.value)
    assert f"model = '{partial}'" in message
    assert "missing vae, text_encoder, tokenizer." in message
    assert "download the whole pipeline folder again" in message


def test_required_components_exist_in_a_saved_pipeline(tiny_model_dir: Path) -> None:
    for name in REQUIRED_COMPONENTS:
        assert (tiny_model_dir / name).is_dir(), name


def test_a_file_is_refused(tmp_path: Path) -> None:
    model_file = tmp_path / "model.safetensors"
    model_file.write_bytes(b"not a folder")
    with pytest.raises(ModelLoadError) as excinfo:
        load_pipeline(str(model_file))
    message = str(excinfo.value)
    assert f"model = '{model_file}': is a file" in message
    assert "pass the pipeline's folder" in message


def test_corrupt_weights_are_reported_as_a_model_error(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "unet" / UNET_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match=r"could not load it as a Stable Diffusion pipeline"):
        load_pipeline(str(broken))


def test_unknown_hub_id_offline_fails_fast_without_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import huggingface_hub.constants

    attempts: list[Any] = []

    def no_network(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise OSError("network access attempted in a unit test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads HF_HUB_OFFLINE once, when it is imported: set the value it uses too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = "someone/nonexistent-model"
    with pytest.raises(ModelLoadError) as excinfo:
        load_pipeline(model)
    message = str(excinfo.value)
    assert f"model = {model!r}" in message
    assert "Hugging Face Hub" in message
    assert "--model" in message
    assert "hf download someone/nonexistent-model --local-dir ./nonexistent-model" in message
    assert attempts == []


def test_model_errors_are_imagic_errors() -> None:
    assert issubclass(ModelLoadError, ImagicError)
    assert issubclass(FinetunedStateError, ImagicError)


# --- save_finetuned_state ---------------------------------------------------------------------


def test_save_full_state_is_float16_by_default(pipe: Any, tmp_path: Path) -> None:
    target = tmp_path / "state"
    assert save_finetuned_state(pipe.unet, target) == target
    assert sorted(p.name for p in target.iterdir()) == [FINETUNED_MARKER, "unet"]
    assert (target / "unet" / "config.json").is_file()
    assert stored_dtypes(target / "unet" / UNET_WEIGHTS) == {torch.float16}
    marker = json.loads((target / FINETUNED_MARKER).read_text())
    assert marker["kind"] == "full"
    assert marker["dtype"] == "float16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]  # no staging left


def test_save_full_state_as_float32(pipe: Any, tmp_path: Path) -> None:
    target = save_finetuned_state(pipe.unet, tmp_path / "state", save_dtype="float32")
    stored = load_file(target / "unet" / UNET_WEIGHTS)
    assert {value.dtype for value in stored.values()} == {torch.float32}
    assert stored.keys() == pipe.unet.state_dict().keys()
    assert json.loads((target / FINETUNED_MARKER).read_text())["dtype"] == "float32"


def test_stored_unet_is_loadable_by_diffusers(pipe: Any, tmp_path: Path) -> None:
    target = save_finetuned_state(pipe.unet, tmp_path / "state", save_dtype="float32")
    reloaded = UNet2DConditionModel.from_pretrained(target / "unet")
    assert_states_equal(cloned_state(reloaded), cloned_state(pipe.unet))


def test_save_lora_state(pipe: Any, tmp_path: Path) -> None:
    add_lora_adapter(pipe.unet, rank=4)
    assert has_lora_adapter(pipe.unet)
    target = save_finetuned_state(pipe.unet, tmp_path / "nested" / "lora")
    assert sorted(p.name for p in target.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        FINETUNED_MARKER,
    ]
    marker = json.loads((target / FINETUNED_MARKER).read_text())
    assert marker["kind"] == "lora"
    assert marker["rank"] == 4
    stored = load_file(target / "adapter_model.safetensors")
    assert stored  # some adapter weights, and only adapter weights
    assert all("lora_A" in key or "lora_B" in key for key in stored)
    assert {value.dtype for value in stored.values()} == {torch.float32}
    assert json.loads((target / "adapter_config.json").read_text())["r"] == 4


def test_fresh_unet_has_no_lora_adapter(pipe: Any) -> None:
    assert not has_lora_adapter(pipe.unet)


def test_existing_folder_is_refused_and_left_alone(pipe: Any, tmp_path: Path) -> None:
    target = tmp_path / "state"
    target.mkdir()
    (target / "keep.txt").write_text("earlier run")
    with pytest.raises(FinetunedStateError) as excinfo:
        save_finetuned_state(pipe.unet, target)
    message = str(excinfo.value)
    assert str(target) in message
    assert "already exists" in message
    # a user error must say what to do instead
    assert re.search(r"remove it|delete it|choose another|another folder", message), message
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
    assert (target / "keep.txt").read_text() == "earlier run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


@pytest.mark.parametrize("lora", [False, True])
def test_crash_while_saving_leaves_nothing_behind(
    pipe: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lora: bool
) -> None:
    if lora:
        add_lora_adapter(pipe.unet, rank=4)
    calls: list[Path] = []
    real_save_file = imagic.models.save_file

    def save_then_crash(tensors: dict[str, torch.Tensor], filename: Any, *args: Any) -> None:
        real_save_file(tensors, filename, *args)
        calls.append(Path(filename))
        raise Boom("disk full")

    monkeypatch.setattr(imagic.models, "save_file", save_then_crash)
    target = tmp_path / "state"
    with pytest.raises(Boom):
        save_finetuned_state(pipe.unet, target)
    assert len(calls) == 1  # the weights were written before the crash ...
    assert not calls[0].exists()  # ... and cleaned up with their staging folder
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


# --- load_finetuned_state ---------------------------------------------------------------------


def test_full_state_round_trip_float32(pipe: Any, tmp_path: Path) -> None:
    perturb_(pipe.unet)
    tuned = cloned_state(pipe.unet)
    save_finetuned_state(pipe.unet, tmp_path / "state", save_dtype="float32")
    fresh = build_tiny_pipeline(seed=0)
    assert not torch.equal(unet_output(fresh.unet), unet_output(pipe.unet))
    assert load_finetuned_state(fresh, tmp_path / "state") == "full"
    assert_states_equal(cloned_state(fresh.unet), tuned)
    assert torch.equal(unet_output(fresh.unet), unet_output(pipe.unet))


def test_full_state_round_trip_float16(pipe: Any, tmp_path: Path) -> None:
    perturb_(pipe.unet)
    tuned = cloned_state(pipe.unet)
    save_finetuned_state(pipe.unet, tmp_path / "state")
    fresh = build_tiny_pipeline(seed=0)
    assert load_finetuned_state(fresh, tmp_path / "state") == "full"
    loaded = cloned_state(fresh.unet)
    assert_states_equal(loaded, {k: v.half().float() for k, v in tuned.items()})
    assert any(not torch.equal(loaded[k], tuned[k]) for k in tuned)  # fp16 rounding applied


def test_lora_round_trip(pipe: Any, tmp_path: Path) -> None:
    base_output = unet_output(pipe.unet)
    add_lora_adapter(pipe.unet, rank=4)
    perturb_(pipe.unet, only="lora_", scale=0.2)
    trained_adapter = lora_state(pipe.unet)
    trained_output = unet_output(pipe.unet)
    assert not torch.equal(trained_output, base_output)  # the adapter changes the UNet
    save_finetuned_state(pipe.unet, tmp_path / "lora")

    fresh = build_tiny_pipeline(seed=0)
    assert load_finetuned_state(fresh, tmp_path / "lora") == "lora"
    assert has_lora_adapter(fresh.unet)
    assert_states_equal(lora_state(fresh.unet), trained_adapter)
    assert torch.equal(unet_output(fresh.unet), trained_output)


def test_lora_loads_onto_a_unet_that_already_has_the_adapter(pipe: Any, tmp_path: Path) -> None:
    add_lora_adapter(pipe.unet, rank=4)
    perturb_(pipe.unet, only="lora_", scale=0.2)
    trained_adapter = lora_state(pipe.unet)
    save_finetuned_state(pipe.unet, tmp_path / "lora")
    other = build_tiny_pipeline(seed=0)
    add_lora_adapter(other.unet, rank=4)
    assert load_finetuned_state(other, tmp_path / "lora") == "lora"
    assert_states_equal(lora_state(other.unet), trained_adapter)


def test_missing_marker_is_refused(pipe: Any, tmp_path: Path) -> None:
    target = save_finetuned_state(pipe.unet, tmp_path / "state")
    (target / FINETUNED_MARKER).unlink()
    with pytest.raises(FinetunedStateError) as excinfo:
        load_finetuned_state(build_tiny_pipeline(), target)
    message = str(excinfo.value)
    assert str(target) in message
    assert FINETUNED_MARKER in message
    assert "Run the fine-tune stage again" in message


def test_missing_folder_is_refused(pipe: Any, tmp_path: Path) -> None:
    with pytest.raises(FinetunedStateError, match="Run the fine-tune stage again"):
        load_finetuned_state(pipe, tmp_path / "never-written")


def test_full_state_into_another_architecture_is_refused(pipe: Any, tmp_path: Path) -> None:
    target = save_finetuned_state(pipe.unet, tmp_path / "state")
    other = build_tiny_pipeline()
    other.unet = other_architecture_unet()
    with pytest.raises(FinetunedStateError) as excinfo:
        load_finetuned_state(other, target)
    message = str(excinfo.value)
    assert str(target) in message
    assert "does not fit this model's UNet" in message
    assert "size mismatch" in message


@pytest.mark.parametrize("mismatch", ["other_architecture", "dropped_key"])
def test_refused_full_state_leaves_the_unet_unchanged(
    pipe: Any, tmp_path: Path, mismatch: str
) -> None:
    perturb_(pipe.unet)
    target = save_finetuned_state(pipe.unet, tmp_path / "state", save_dtype="float32")
    if mismatch == "dropped_key":
        weights = target / "unet" / UNET_WEIGHTS
        stored = load_file(weights)
        del stored["conv_in.weight"]
        save_file(stored, weights)
    other = build_tiny_pipeline()
    if mismatch == "other_architecture":
        other.unet = other_architecture_unet()
    before = cloned_state(other.unet)
    with pytest.raises(FinetunedStateError):
        load_finetuned_state(other, target)
    # a refused state must not be half applied (load_state_dict copies what fits, then raises)
    assert_states_equal(cloned_state(other.unet), before)


def test_full_state_with_a_dropped_key_is_refused(pipe: Any, tmp_path: Path) -> None:
    target = save_finetuned_state(pipe.unet, tmp_path / "state")
    weights = target / "unet" / UNET_WEIGHTS
    stored = load_file(weights)
    dropped = sorted(stored)[0]
    del stored[dropped]
    save_file(stored, weights)
    with pytest.raises(FinetunedStateError) as excinfo:
        load_finetuned_state(build_tiny_pipeline(), target)
    assert dropped in str(excinfo.value)


def test_full_state_with_missing_weights_file_is_refused(pipe: Any, tmp_path: Path) -> None:
    target = save_finetuned_state(pipe.unet, tmp_path / "state")
    (target / "unet" / UNET_WEIGHTS).unlink()  # e.g. an incomplete copy of the folder
    with pytest.raises(FinetunedStateError) as excinfo:
        load_finetuned_state(build_tiny_pipeline(), target)
    assert str(target) in str(excinfo.value)


def test_full_state_onto_a_lora_unet_is_refused(pipe: Any, tmp_path: Path) -> None:
    target = save_finetuned_state(pipe.unet, tmp_path / "state")
    other = build_tiny_pipeline()
    add_lora_adapter(other.unet, rank=4)
    with pytest.raises(FinetunedStateError) as excinfo:
        load_finetuned_state(other, target)
    message = str(excinfo.value)
    assert "LoRA" in message
    assert str(target) in message  # name the state that was refused


def test_lora_state_into_another_architecture_is_refused(pipe: Any, tmp_path: Path) -> None:
    add_lora_adapter(pipe.unet, rank=4)
    target = save_finetuned_state(pipe.unet, tmp_path / "lora")
    other = build_tiny_pipeline()
    other.unet = other_architecture_unet()
    with pytest.raises(FinetunedStateError) as excinfo:
        load_finetuned_state(other, target)
    assert str(target) in str(excinfo.value)


def test_lora_state_with_a_dropped_key_is_refused(pipe: Any, tmp_path: Path) -> None:
    add_lora_adapter(pipe.unet, rank=4)
    target = save_finetuned_state(pipe.unet, tmp_path / "lora")
    weights = target / "adapter_model.safetensors"
    stored = load_file(weights)
    del stored[sorted(stored)[0]]
    save_file(stored, weights)
    with pytest.raises(FinetunedStateError) as excinfo:
        load_finetuned_state(build_tiny_pipeline(), target)
    assert str(target) in str(excinfo.value)
