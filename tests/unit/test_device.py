"""Unit tests for imagic.device: device and precision resolution, with CUDA/MPS simulated."""

from __future__ import annotations

import pytest
import torch

from imagic.device import (
    Runtime,
    peak_memory_tracking,
    resolve_device,
    resolve_precision,
    resolve_runtime,
)
from imagic.errors import DeviceUnavailableError, ImagicError

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


@pytest.fixture
def no_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither CUDA nor MPS, whatever the machine running the tests has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two visible CUDA devices, as far as the code under test can tell (bf16 supported)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args, **kwargs: "Fake GPU T4")


# --- resolve_device ---------------------------------------------------------------------------


def test_auto_is_cpu_without_accelerators(no_accelerator: None) -> None:
    assert resolve_device("auto") == CPU
    assert resolve_device() == CPU


@pytest.mark.skipif(
    torch.cuda.is_available() or torch.backends.mps.is_available(),
    reason="this machine has an accelerator",
)
def test_auto_is_cpu_on_this_machine() -> None:
    assert resolve_device("auto") == CPU


def test_auto_prefers_cuda_then_mps(monkeypatch: pytest.MonkeyPatch, no_accelerator: None) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == CUDA


def test_cpu_is_always_available(no_accelerator: None) -> None:
    assert resolve_device("cpu") == CPU


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_cuda_is_refused_with_a_fix(no_accelerator: None, name: str) -> None:
    with pytest.raises(DeviceUnavailableError) as excinfo:
        resolve_device(name)
    message = str(excinfo.value)
    assert f"device = {name!r}" in message
    assert "no CUDA GPU" in message
    assert "--device cpu" in message


def test_mps_unavailable_is_refused_with_a_fix(no_accelerator: None) -> None:
    with pytest.raises(DeviceUnavailableError, match=r"device = 'mps'.*--device cpu"):
        resolve_device("mps")


def test_mps_available_is_used(monkeypatch: pytest.MonkeyPatch, no_accelerator: None) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("mps") == torch.device("mps")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("cuda", torch.device("cuda")), ("cuda:0", torch.device("cuda:0")), ("cuda:1", "cuda:1")],
)
def test_visible_cuda_devices_resolve(fake_cuda: None, name: str, expected: object) -> None:
    assert resolve_device(name) == torch.device(expected)  # type: ignore[arg-type]


def test_cuda_index_past_the_visible_devices_is_refused(fake_cuda: None) -> None:
    with pytest.raises(DeviceUnavailableError) as excinfo:
        resolve_device("cuda:2")
    message = str(excinfo.value)
    assert "device = 'cuda:2'" in message
    assert "only 2 CUDA device(s)" in message
    assert "cuda:0 .. cuda:1" in message


def test_device_errors_are_imagic_errors() -> None:
    assert issubclass(DeviceUnavailableError, ImagicError)


# --- resolve_precision ------------------------------------------------------------------------


@pytest.mark.parametrize("device", [CPU, torch.device("mps")])
def test_auto_and_fp32_mean_plain_fp32_off_cuda(device: torch.device) -> None:
    assert resolve_precision("auto", device) is None
    assert resolve_precision("fp32", device) is None


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_off_cuda_is_refused_with_a_fix(precision: str) -> None:
    with pytest.raises(DeviceUnavailableError) as excinfo:
        resolve_precision(precision, CPU)
    message = str(excinfo.value)
    assert f"precision = {precision!r}" in message
    assert "'cpu'" in message
    assert "--precision fp32" in message


def test_auto_on_cuda_with_bf16_is_bfloat16(fake_cuda: None) -> None:
    assert resolve_precision("auto", CUDA) == torch.bfloat16


def test_auto_on_cuda_without_bf16_is_float16(
    monkeypatch: pytest.MonkeyPatch, fake_cuda: None
) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert resolve_precision("auto", CUDA) == torch.float16


def test_forced_precisions_on_cuda(fake_cuda: None) -> None:
    assert resolve_precision("fp16", CUDA) == torch.float16
    assert resolve_precision("bf16", CUDA) == torch.bfloat16
    assert resolve_precision("fp32", CUDA) is None


def test_bf16_on_a_gpu_without_bf16_is_refused(
    monkeypatch: pytest.MonkeyPatch, fake_cuda: None
) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    with pytest.raises(DeviceUnavailableError) as excinfo:
        resolve_precision("bf16", CUDA)
    message = str(excinfo.value)
    assert "precision = 'bf16'" in message
    assert "Fake GPU T4" in message
    assert "--precision fp16 or auto" in message


# --- Runtime ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "name"), [(None, "fp32"), (torch.float16, "fp16"), (torch.bfloat16, "bf16")]
)
def test_runtime_precision_names(dtype: torch.dtype | None, name: str) -> None:
    assert Runtime(CUDA, dtype).precision == name


def test_runtime_autocast_is_a_no_op_in_fp32_on_cpu() -> None:
    runtime = Runtime(CPU, None)
    a = torch.ones(4, 4)
    with runtime.autocast():
        assert not torch.is_autocast_enabled("cpu")
        product = a @ a
    assert product.dtype == torch.float32
    assert torch.equal(product, torch.full((4, 4), 4.0))


def test_runtime_autocast_lowers_precision_when_a_dtype_is_set() -> None:
    runtime = Runtime(CPU, torch.bfloat16)
    with runtime.autocast():
        assert torch.is_autocast_enabled("cpu")
        product = torch.ones(4, 4) @ torch.ones(4, 4)
    assert product.dtype == torch.bfloat16


def test_runtime_is_frozen() -> None:
    runtime = Runtime(CPU, None)
    with pytest.raises(AttributeError):
        runtime.device = CUDA  # type: ignore[misc]


# --- resolve_runtime --------------------------------------------------------------------------


def test_resolve_runtime_cpu_defaults(no_accelerator: None) -> None:
    runtime = resolve_runtime("auto", "auto")
    assert runtime == Runtime(CPU, None)
    assert runtime.precision == "fp32"


@pytest.mark.parametrize("precision", ["auto", "bf16", "fp16", "fp32"])
def test_resolve_runtime_cuda_fails_on_the_device_first(
    no_accelerator: None, precision: str
) -> None:
    with pytest.raises(DeviceUnavailableError) as excinfo:
        resolve_runtime("cuda", precision)
    message = str(excinfo.value)
    assert "device = 'cuda'" in message
    assert "--device cpu" in message
    assert "precision" not in message


def test_resolve_runtime_cpu_with_fp16_is_refused(no_accelerator: None) -> None:
    with pytest.raises(DeviceUnavailableError, match=r"precision = 'fp16'.*--precision fp32"):
        resolve_runtime("cpu", "fp16")


def test_resolve_runtime_on_fake_cuda(fake_cuda: None) -> None:
    runtime = resolve_runtime("cuda:1", "auto")
    assert runtime.device == torch.device("cuda:1")
    assert runtime.autocast_dtype == torch.bfloat16
    assert runtime.precision == "bf16"


def test_peak_memory_is_zero_off_cuda() -> None:
    with peak_memory_tracking(CPU) as stats:
        torch.ones(1000)
    assert stats == {"peak_memory_bytes": 0}
