"""Speed (and memory) of the three Imagic stages, as ratios to a baseline measured in the same run.

Usage:
    python benchmarks/stage_speed.py [--model PATH_OR_ID] [--device auto] [--precision auto]
                                     [--steps 20] [--repeats 3] [--threads N] [--out FILE.json]

Why ratios: absolute seconds depend on the machine (and on whatever else it is running), so
they cannot be compared across machines or turned into pass/fail thresholds. Ratios between
cases timed back to back in one process on one machine mostly cancel that out, which is why
every figure here comes with its baseline from the same run (project rule: speed and memory
goals live in benchmarks/, never as timed assertions in tests).

What is timed:
    A  optimize_embedding, seconds per optimizer step, timesteps_per_step 1 and 4.
    B  finetune, seconds per optimizer step: full (the BASELINE), LoRA rank 4, full with
       gradient checkpointing, full with timesteps_per_step 4. Each case on a freshly loaded
       pipeline, because fine-tuning changes the UNet in place and LoRA injects adapters.
    C  generate, seconds per image at 10 inference steps, 8 images, batch_size 1 vs 4.

How: each A/B case is one call of the library function with 1 + repeats * steps optimizer
steps, timed from its own progress callback (called after every step, once the loss has been
read back, i.e. after the device finished the step). The first step (warm-up: lazy kernel
selection, allocator growth, first-touch of optimizer state) is dropped, the rest is cut into
`repeats` windows of `steps` steps, and the median window is reported. Setup (pipeline load,
adapter injection, optimizer creation) is outside every window. A C case is a warm-up call of
one batch, then `repeats` timed calls of 8 images each; the median is divided by 8.

The JSON goes to stdout (and to --out); progress lines go to stderr.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import StableDiffusionPipeline
from report import emit

from imagic.config import FinetuneParams, GenerateParams, OptimizeParams
from imagic.device import Runtime, device_name, peak_memory_tracking, resolve_runtime
from imagic.errors import ImagicError
from imagic.images import fit_to_resolution, image_to_tensor, read_image
from imagic.method import (
    StageProgress,
    encode_image,
    encode_text,
    finetune,
    generate,
    optimize_embedding,
)
from imagic.models import load_pipeline, model_resolution, prediction_type
from imagic.tiny_model import save_tiny_pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE_PATH = REPO_ROOT / "examples" / "red-square.png"
TEXT = "a red circle on the left"
TINY_MODEL_ID = "tiny (imagic.tiny_model.save_tiny_pipeline, random weights)"
WARMUP_STEPS = 1
C_INFERENCE_STEPS = 10
C_ETAS = [0.6, 0.7]
C_SEEDS = [0, 1, 2, 3]
C_IMAGES = len(C_ETAS) * len(C_SEEDS)  # 8
LORA_RANK = 4
SCHEMA_VERSION = 1
CONTENTION_SHARE = 0.05
"""others_cpu_share from which a case's timing is flagged as disturbed by other processes."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Seconds per step of Imagic stages A, B, C, as ratios to same-run baselines.",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="diffusers folder or hub id (default: a tiny random pipeline built in a temp dir)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, mps, cuda or cuda:N")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    parser.add_argument("--steps", type=_positive_int, default=20, help="steps per timed window")
    parser.add_argument("--repeats", type=_positive_int, default=3, help="timed windows per case")
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch.set_num_threads(N) before timing (default: leave torch's choice alone)",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    return parser.parse_args(argv)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def log(message: str) -> None:
    """Progress to stderr, so stdout stays pure JSON for `> result.json` or a pipe."""
    print(message, file=sys.stderr, flush=True)


# --- measuring -------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so a timestamp means the step has really finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def peak_rss_bytes() -> int:
    """Process peak resident set size so far (a high-water mark: it never goes down)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


class StepClock:
    """A progress callback that timestamps the end of every optimizer step."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stamps: list[float] = []

    def __call__(self, progress: StageProgress) -> None:
        synchronize(self.device)
        self.stamps.append(time.perf_counter())

    def window_seconds_per_step(self, steps: int, repeats: int) -> list[float]:
        """Mean seconds per step of each window, the warm-up step(s) excluded."""
        expected = WARMUP_STEPS + steps * repeats
        if len(self.stamps) != expected:
            raise RuntimeError(f"expected {expected} step timestamps, got {len(self.stamps)}")
        start = WARMUP_STEPS - 1  # stamp at the end of the last warm-up step
        return [
            (self.stamps[start + (k + 1) * steps] - self.stamps[start + k * steps]) / steps
            for k in range(repeats)
        ]


def machine_busy_cpu_seconds() -> float | None:
    """CPU seconds all processes on the machine have used since boot (Linux), else None.

    Counts hypervisor steal too: on a VM, a neighbour taking our cores slows us the same way.
    """
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        ticks = [int(value) for value in fields[1:9]]
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def measure_case(device: torch.device) -> Iterator[dict[str, Any]]:
    """Peak accelerator memory (None off CUDA), process peak RSS, and how busy others were.

    `others_cpu_share` is the fraction of the machine's CPU capacity that other processes
    used while the case ran (machine-wide busy CPU time minus this process's, over wall time
    times CPUs). The load average cannot tell this: it counts this process's own threads and
    lags by a minute. On a 2-core machine even a share of 0.2 can slow torch's CPU steps
    several-fold, because its threads wait for each other at every parallel region.
    """
    figures: dict[str, Any] = {}
    busy_before, own_before = machine_busy_cpu_seconds(), own_cpu_seconds()
    wall_before = time.perf_counter()
    with peak_memory_tracking(device) as stats:
        yield figures
    wall = time.perf_counter() - wall_before
    busy_after, own_after = machine_busy_cpu_seconds(), own_cpu_seconds()
    figures["peak_accelerator_memory_bytes"] = (
        stats["peak_memory_bytes"] if device.type == "cuda" else None
    )
    figures["process_peak_rss_bytes"] = peak_rss_bytes()
    if busy_before is None or busy_after is None or wall <= 0:
        figures["others_cpu_share"] = None
    else:
        others = (busy_after - busy_before) - (own_after - own_before)
        figures["others_cpu_share"] = round(max(others, 0.0) / (wall * (os.cpu_count() or 1)), 3)


def summarize(windows: list[float], unit: str) -> dict[str, Any]:
    """The median, the fastest window, every window and max/min as a one-number spread.

    The median is what ratios use; the minimum is the better guess at the undisturbed cost
    when a case was flagged for contention (other work only ever adds time).
    """
    return {
        f"median_seconds_per_{unit}": statistics.median(windows),
        f"min_seconds_per_{unit}": min(windows),
        f"window_seconds_per_{unit}": windows,
        "window_spread_max_over_min": max(windows) / min(windows),
    }


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def free_memory(device: torch.device) -> None:
    """Drop the previous case's pipeline before the next one loads, so peaks do not stack."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --- the stages ------------------------------------------------------------------------------


class Inputs:
    """The one input image's latent and the target text's embedding, shared by every case.

    Neither depends on the UNet, so they are computed once on the first pipeline and reused
    by every freshly loaded one (VAE and text encoder are never trained).
    """

    def __init__(self, pipe: StableDiffusionPipeline) -> None:
        size = model_resolution(pipe)
        image = fit_to_resolution(read_image(IMAGE_PATH), size)
        self.latents = encode_image(pipe, image_to_tensor(image))
        self.e_tgt = encode_text(pipe, TEXT)


def bench_stage_a(
    pipe: StableDiffusionPipeline, inputs: Inputs, runtime: Runtime, steps: int, repeats: int
) -> tuple[dict[str, Any], torch.Tensor]:
    """Stage A per-step cost at 1 and 4 timesteps per step; also returns an e_opt for stage C.

    Stage A leaves the UNet's weights untouched, so both cases share one pipeline.
    """
    cases: dict[str, Any] = {}
    e_opt = inputs.e_tgt
    for tps in (1, 4):
        name = f"timesteps_per_step_{tps}"
        params = OptimizeParams(steps=WARMUP_STEPS + steps * repeats, timesteps_per_step=tps)
        clock = StepClock(runtime.device)
        with measure_case(runtime.device) as memory:
            result = optimize_embedding(pipe, inputs.latents, inputs.e_tgt, params, runtime, clock)
        if tps == 1:
            e_opt = result.e_opt
        cases[name] = {
            "timesteps_per_step": tps,
            **summarize(clock.window_seconds_per_step(steps, repeats), "step"),
            "trainable_parameters": inputs.e_tgt.numel(),
            **memory,
        }
        log(f"A {name}: {cases[name]['median_seconds_per_step']:.4f} s/step")
    tps1 = cases["timesteps_per_step_1"]["median_seconds_per_step"]
    tps4 = cases["timesteps_per_step_4"]["median_seconds_per_step"]
    return {
        "cases": cases,
        "ratios": {"timesteps_per_step_4_over_1": ratio(tps4, tps1)},
    }, e_opt


STAGE_B_CASES: dict[str, dict[str, Any]] = {
    "full": {},
    f"lora_rank_{LORA_RANK}": {"lora": True, "lora_rank": LORA_RANK},
    "full_gradient_checkpointing": {"gradient_checkpointing": True},
    "full_timesteps_per_step_4": {"timesteps_per_step": 4},
}
STAGE_B_BASELINE = "full"


def bench_stage_b(
    load: Callable[[], StableDiffusionPipeline],
    inputs: Inputs,
    e_opt: torch.Tensor,
    runtime: Runtime,
    steps: int,
    repeats: int,
) -> dict[str, Any]:
    """Stage B per-step cost of each fine-tune variant, each on a freshly loaded pipeline.

    Fresh because `finetune` trains the UNet in place and LoRA leaves adapters in it; reusing
    one pipeline would time a LoRA-carrying (slower) UNet in every case after the LoRA one.
    """
    cases: dict[str, Any] = {}
    for name, overrides in STAGE_B_CASES.items():
        free_memory(runtime.device)
        pipe = load()
        params = FinetuneParams(steps=WARMUP_STEPS + steps * repeats, **overrides)
        clock = StepClock(runtime.device)
        with measure_case(runtime.device) as memory:
            result = finetune(pipe, inputs.latents, e_opt, params, runtime, clock)
        cases[name] = {
            "params": overrides,
            **summarize(clock.window_seconds_per_step(steps, repeats), "step"),
            "trainable_parameters": result.trainable_parameters,
            **memory,
        }
        del pipe, result
        log(f"B {name}: {cases[name]['median_seconds_per_step']:.4f} s/step")
    baseline = cases[STAGE_B_BASELINE]["median_seconds_per_step"]
    for case in cases.values():
        case["ratio_to_baseline"] = ratio(case["median_seconds_per_step"], baseline)
    return {"baseline": STAGE_B_BASELINE, "cases": cases}


def bench_stage_c(
    pipe: StableDiffusionPipeline,
    inputs: Inputs,
    e_opt: torch.Tensor,
    runtime: Runtime,
    repeats: int,
) -> dict[str, Any]:
    """Stage C seconds per image for 8 images at batch_size 1 and 4 (10 DDIM steps, CFG on)."""
    cases: dict[str, Any] = {}
    for batch_size in (1, 4):
        name = f"batch_size_{batch_size}"
        params = GenerateParams(
            etas=C_ETAS,
            seeds=C_SEEDS,
            num_inference_steps=C_INFERENCE_STEPS,
            batch_size=batch_size,
        )
        warmup = params.model_copy(update={"etas": C_ETAS[:1], "seeds": C_SEEDS[:batch_size]})
        with measure_case(runtime.device) as memory:
            generate(pipe, inputs.e_tgt, e_opt, warmup, runtime)
            windows = []
            for _ in range(repeats):
                synchronize(runtime.device)
                start = time.perf_counter()
                images = generate(pipe, inputs.e_tgt, e_opt, params, runtime)
                synchronize(runtime.device)
                windows.append((time.perf_counter() - start) / len(images))
        cases[name] = {
            "batch_size": batch_size,
            "images": C_IMAGES,
            "num_inference_steps": C_INFERENCE_STEPS,
            **summarize(windows, "image"),
            **memory,
        }
        log(f"C {name}: {cases[name]['median_seconds_per_image']:.4f} s/image")
    batch1 = cases["batch_size_1"]["median_seconds_per_image"]
    batch4 = cases["batch_size_4"]["median_seconds_per_image"]
    return {"cases": cases, "ratios": {"batch_size_4_over_1_per_image": ratio(batch4, batch1)}}


# --- report ----------------------------------------------------------------------------------


def machine_info(runtime: Runtime) -> dict[str, Any]:
    """Enough to tell two result files' machines apart; the numbers mean nothing without it."""
    device = runtime.device
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(affinity) if affinity is not None else None,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "diffusers": diffusers.__version__,
        "device": str(device),
        "device_name": device_name(device),
        "precision": runtime.precision,
    }


def contention_warnings(report: dict[str, Any]) -> list[str]:
    """Name the cases during which other processes took a noticeable share of the CPUs."""
    found = []
    for stage in ("stage_a", "stage_b", "stage_c"):
        for name, case in report[stage]["cases"].items():
            share = case.get("others_cpu_share")
            if share is not None and share >= CONTENTION_SHARE:
                found.append(
                    f"{stage} {name}: other processes used {share:.0%} of the CPUs meanwhile; "
                    "its timing (and ratios built on it) may be inflated, rerun on an idle machine"
                )
    return found


def model_info(pipe: StableDiffusionPipeline, model_id: str) -> dict[str, Any]:
    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    width, height = model_resolution(pipe)
    return {
        "id": model_id,
        "resolution": [width, height],
        "prediction_type": prediction_type(pipe),
        "parameters": {
            "unet": count(pipe.unet),
            "text_encoder": count(pipe.text_encoder),
            "vae": count(pipe.vae),
        },
    }


def run(args: argparse.Namespace, runtime: Runtime, model: str, model_id: str) -> dict[str, Any]:
    started = time.perf_counter()
    machine = machine_info(runtime)

    def load() -> StableDiffusionPipeline:
        return load_pipeline(model, device=runtime.device)

    pipe = load()
    inputs = Inputs(pipe)
    report: dict[str, Any] = {
        "benchmark": "stage_speed",
        "schema_version": SCHEMA_VERSION,
        "machine": machine,
        "model": model_info(pipe, model_id),
        "settings": {
            "image": IMAGE_PATH.relative_to(REPO_ROOT).as_posix(),
            "text": TEXT,
            "steps_per_window": args.steps,
            "repeats": args.repeats,
            "warmup_steps": WARMUP_STEPS,
            "threads_flag": args.threads,
            "statistic": "median over repeats windows",
        },
    }
    stage_a, e_opt = bench_stage_a(pipe, inputs, runtime, args.steps, args.repeats)
    report["stage_a"] = stage_a
    report["stage_c"] = bench_stage_c(pipe, inputs, e_opt, runtime, args.repeats)
    del pipe
    report["stage_b"] = bench_stage_b(load, inputs, e_opt, runtime, args.steps, args.repeats)
    # Reorder so the report reads A, B, C like the method.
    report["stage_c"] = report.pop("stage_c")
    report["process_peak_rss_bytes"] = peak_rss_bytes()
    report["warnings"] = contention_warnings(report)
    report["total_wall_seconds"] = time.perf_counter() - started
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        # Before any model is built or loaded: a device/precision mistake fails in a second.
        runtime = resolve_runtime(args.device, args.precision)
        with tempfile.TemporaryDirectory(prefix="imagic-bench-") as scratch:
            if args.model is None:
                model = str(save_tiny_pipeline(Path(scratch) / "tiny-sd"))
                model_id = TINY_MODEL_ID
            else:
                model = model_id = args.model
            report = run(args, runtime, model, model_id)
    except ImagicError as exc:
        log(f"error: {exc}")
        return 2
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
