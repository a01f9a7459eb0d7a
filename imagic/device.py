"""Where the method runs and in which precision.

Policy (DESIGN.md): fp32 on CPU and MPS; on CUDA, bf16 autocast where the GPU supports it,
else fp16 autocast. What is trained (the embedding in A, the UNet or its LoRA adapters in B)
always keeps fp32 master weights: autocast only lowers the precision of the forward pass.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from imagic.errors import DeviceUnavailableError

_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Runtime:
    """A resolved device and the autocast dtype used on it (None: plain fp32)."""

    device: torch.device
    autocast_dtype: torch.dtype | None

    @property
    def precision(self) -> str:
        """The precision name actually used, for manifests and tracking."""
        if self.autocast_dtype is None:
            return "fp32"
        return "bf16" if self.autocast_dtype == torch.bfloat16 else "fp16"

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """Autocast on CUDA with the chosen dtype; a no-op in fp32."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)


def resolve_device(name: str = "auto") -> torch.device:
    """Pick cuda, then mps, then cpu for "auto"; refuse a device this machine does not have."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"device = {name!r}: no CUDA GPU is visible to PyTorch "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda is not None}). "
                "Use --device cpu (or auto), or install a CUDA build of torch on a GPU machine."
            )
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise DeviceUnavailableError(
                f"device = {name!r}: only {torch.cuda.device_count()} CUDA device(s) exist; "
                f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}."
            )
        return torch.device(name)
    if name == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailableError(
            "device = 'mps': Apple's MPS backend is not available here; use --device cpu or auto."
        )
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`; None means fp32 without autocast."""
    if precision == "fp32":
        return None
    if device.type != "cuda":
        if precision == "auto":
            return None
        raise DeviceUnavailableError(
            f"precision = {precision!r} on device {device.type!r}: mixed precision is only "
            "used on CUDA; use --precision fp32 (or auto) on this device."
        )
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise DeviceUnavailableError(
            f"precision = 'bf16': GPU {torch.cuda.get_device_name(device)} does not support "
            "bfloat16; use --precision fp16 or auto."
        )
    return _AUTOCAST_DTYPES[precision]


def resolve_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    """Resolve both at once, so a bad combination fails before any model is loaded."""
    torch_device = resolve_device(device)
    return Runtime(torch_device, resolve_precision(precision, torch_device))


@contextlib.contextmanager
def peak_memory_tracking(device: torch.device) -> Iterator[dict[str, int]]:
    """Measure the peak accelerator memory of a block (bytes; 0 where it cannot be measured)."""
    stats = {"peak_memory_bytes": 0}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield stats
    if device.type == "cuda":
        stats["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)


def device_name(device: torch.device) -> str:
    """The model name of `device`: the GPU's, or on a CPU the processor's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return cpu_model_name()


def cpu_model_name() -> str:
    """The CPU's marketing name where Linux exposes it (platform.processor() is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"
