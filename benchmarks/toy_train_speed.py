"""How fast `imagic toy train` steps, per phase, with and without data worker processes.

Usage:
    python benchmarks/toy_train_speed.py [--device cpu] [--precision fp32] [--workers 0 4]
                                         [--steps 100] [--warmup 10] [--batch-size 32]
                                         [--decoder-batch-size N]
                                         [--profile FILE] [--profile-steps 10]
                                         [--out FILE.json]

Why: every training batch is rendered with PIL, about 25 ms of one core for 32 scenes. On this
project's 2-core CPU a phase b step takes about 320 ms, so the data is a small share; on a GPU
a step's model work is as short as that, so the model waits for its data unless worker
processes render the next batches meanwhile (`--data-workers`, `imagic.toyworld.train.
phase_batches`). This measures the seconds per step of each phase for each `--workers` value
with the real trainer's step functions on the default toy model (random initial weights: the
speed of a step does not depend on them). The first value is the baseline; the others are
reported as ratios to it, measured in the same run, so the figures compare rather than
promise. Each phase runs `--warmup` steps unmeasured first (allocations, kernel choice).

`--profile FILE` also writes torch.profiler's table of the most expensive operators over a
few phase b steps with the last `--workers` value: where a step's time goes.

The JSON goes to stdout (and to --out); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from report import emit, require_positive

from imagic.toyworld.config import ToyTrainParams
from imagic.toyworld.train import ToyTrainer, phase_batches

PHASES = ("vae", "unet", "decoder")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    parser.add_argument(
        "--precision", default=ToyTrainParams.model_fields["precision"].default,
        help="as `imagic toy train --precision`: fp32, auto (bf16/fp16 autocast on CUDA), ...",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[0, 4],
        help="data worker processes to compare; the first is the baseline",
    )  # fmt: skip
    parser.add_argument("--steps", type=int, default=100, help="measured steps per phase")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured steps first")
    parser.add_argument(
        "--batch-size", type=int, default=ToyTrainParams.model_fields["batch_size"].default,
        help="scenes per step of phases a and b",
    )  # fmt: skip
    parser.add_argument(
        "--decoder-batch-size", type=int,
        default=ToyTrainParams.model_fields["decoder_batch_size"].default,
        help="scenes per step of phase c",
    )  # fmt: skip
    parser.add_argument("--profile", type=Path, help="write a phase b operator profile here")
    parser.add_argument("--profile-steps", type=int, default=10, help="phase b steps profiled")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    require_positive(parser, args, "steps", "batch_size", "profile_steps")
    if args.decoder_batch_size is not None:
        require_positive(parser, args, "decoder_batch_size")
    if args.warmup < 0 or min(args.workers) < 0:
        parser.error(f"--warmup {args.warmup} and --workers {args.workers} must not be negative")
    try:  # the training command's own checks, so both refuse the same values
        ToyTrainParams(out=".", device=args.device, precision=args.precision)
    except ValidationError as exc:
        error = exc.errors()[0]
        flag = "--" + str(error["loc"][0]).replace("_", "-")
        parser.error(f"{flag} {error['input']!r}: {error['msg']}")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def step_function(trainer: ToyTrainer, phase: str) -> Callable[[int, Any], dict[str, float]]:
    """The trainer's own step of `phase`, with the models in that phase's state."""
    if phase == "unet" and trainer.scaling_factor is None:
        trainer.scaling_factor = 1.0  # any value: it scales the latents, not the work
    return trainer.phase_step(phase)


def seconds_per_step(trainer: ToyTrainer, phase: str, steps: int, warmup: int) -> list[float]:
    """Wall seconds of each measured step, batch wait included (each step ends in `.item()`,
    which waits for the device, so the clock sees the whole step)."""
    step_fn = step_function(trainer, phase)
    batches = phase_batches(trainer.batch_maker(phase), 1, warmup + steps, trainer.data_workers)
    times: list[float] = []
    started = time.perf_counter()
    for step, batch in enumerate(batches, start=1):
        step_fn(step, batch)
        now = time.perf_counter()
        if step > warmup:
            times.append(now - started)
        started = now
    return times


def profile_table(trainer: ToyTrainer, steps: int) -> str:
    """torch.profiler's operators of `steps` phase b steps, by self CPU time."""
    step_fn = step_function(trainer, "unet")
    activities = [torch.profiler.ProfilerActivity.CPU]
    if trainer.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    batches = list(phase_batches(trainer.batch_maker("unet"), 1, steps, 0))
    with torch.profiler.profile(activities=activities) as profiler:
        for step, batch in enumerate(batches, start=1):
            step_fn(step, batch)
    return profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    recipe = {"batch_size": args.batch_size, "decoder_batch_size": args.decoder_batch_size}
    report: dict[str, Any] = {
        "device": args.device,
        "batch_size": args.batch_size,
        "decoder_batch_size": ToyTrainParams(out=".", **recipe).phase_c_batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cases": [],
    }
    baseline: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as workdir:
        for workers in args.workers:
            params = ToyTrainParams(
                out=str(Path(workdir) / f"workers-{workers}"),
                device=args.device,
                precision=args.precision,
                **recipe,
                data_workers=workers,
            )
            trainer = ToyTrainer(params, progress=False)
            report["precision"] = trainer.runtime.precision
            for phase in PHASES:
                times = seconds_per_step(trainer, phase, args.steps, args.warmup)
                median = statistics.median(times)
                baseline.setdefault(phase, median)
                case = {
                    "phase": phase,
                    "data_workers": workers,
                    "median_s_per_step": round(median, 5),
                    "steps_per_s": round(1 / median, 2),
                    "ratio_to_baseline": round(median / baseline[phase], 3),
                    "total_s": round(sum(times), 2),
                }
                report["cases"].append(case)
                log(f"{phase} workers {workers}: {median * 1000:.1f} ms/step")
            if args.profile is not None and workers == args.workers[-1]:
                args.profile.parent.mkdir(parents=True, exist_ok=True)
                args.profile.write_text(profile_table(trainer, args.profile_steps) + "\n")
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
