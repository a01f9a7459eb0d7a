"""Does phase c alongside phase b (`imagic toy train --decoder-alongside`) pay on this machine?

Usage:
    python benchmarks/toy_alongside_speed.py [--steps 40] [--warmup 5] [--decoder-batch-size 16]
                                             [--unet-steps 8000] [--decoder-steps 10500]
                                             [--out FILE.json]

Why: phase c reads only the VAE, which phase b freezes, so the two can run at once, each on
half of torch's threads. That pays where a second thread speeds a step up by less than two
times, as on this project's 2-core CPU for these small models. This measures, on the CPU with
the real trainer's step functions (random initial weights: a step's speed does not depend on
them):

- the baseline: phase b's and then phase c's seconds per step, one after the other, on all of
  torch's threads (what a sequential run does);
- alongside: the same two phases at the same time, phase c in a second process, on the
  thread counts `--decoder-alongside` gives them (`imagic.toyworld.train.alongside_threads`).

`work_per_second_ratio` is the share of each phase's baseline speed that it keeps alongside,
summed over the two phases: above 1, running them at once trains more steps per minute. The
projection applies the measured rates to a recipe's step counts (`--unet-steps`,
`--decoder-steps`): minutes of phases b and c one after the other against at once (the longer
of the two, then the rest of the other at its baseline rate would be better still, but the
thread count of a phase stays fixed so that a run is reproducible). An estimate: the rates
of a shared machine move by several percent between runs.

The JSON goes to stdout (and to --out); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from report import emit, require_positive
from toy_train_speed import log, seconds_per_step

from imagic.toyworld.config import ToyTrainParams
from imagic.toyworld.train import ToyTrainer, alongside_threads


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="measured steps per phase")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured steps first")
    parser.add_argument("--decoder-batch-size", type=int, default=16, help="phase c's batch")
    parser.add_argument("--unet-steps", type=int, default=8000, help="for the projection")
    parser.add_argument("--decoder-steps", type=int, default=10500, help="for the projection")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    require_positive(parser, args, "steps", "decoder_batch_size", "unet_steps", "decoder_steps")
    if args.warmup < 0:
        parser.error(f"--warmup {args.warmup} must not be negative")
    return args


def median_seconds(
    phase: str, threads: int, steps: int, warmup: int, batch: int, start: Any = None
) -> float:
    """Median seconds per step of `phase` on `threads` torch threads, in this process.

    `start`: a barrier both processes of `alongside` pass after their warm-up steps, so that
    their measured steps run at the same time."""
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as workdir:
        params = ToyTrainParams(out=str(Path(workdir) / "run"), decoder_batch_size=batch)
        trainer = ToyTrainer(params, progress=False)
        if phase == "unet":
            trainer.scaling_factor = 1.0  # any value: it scales the latents, not the work
        seconds_per_step(trainer, phase, warmup, 0)
        if start is not None:
            start.wait()
        return statistics.median(seconds_per_step(trainer, phase, steps, 0))


def _decoder_in_child(
    threads: int, steps: int, warmup: int, batch: int, start: Any, result: Any
) -> None:
    result.put(median_seconds("decoder", threads, steps, warmup, batch, start))


def alongside(threads: int, args: argparse.Namespace) -> tuple[float, float]:
    """Phase b here and phase c in a second process, at once: their median seconds per step.

    Phase c measures twice the steps, so that it is still running while phase b is measured
    (its steps are the shorter ones)."""
    unet_threads, decoder_threads = alongside_threads(threads)
    context = multiprocessing.get_context("spawn")
    start, queue = context.Barrier(2), context.Queue()
    child = context.Process(
        target=_decoder_in_child,
        args=(decoder_threads, 2 * args.steps, args.warmup, args.decoder_batch_size, start, queue),
    )
    child.start()
    try:
        unet = median_seconds(
            "unet", unet_threads, args.steps, args.warmup, args.decoder_batch_size, start
        )
        decoder = queue.get(timeout=3600)
    finally:
        child.join()
        torch.set_num_threads(threads)
    return unet, decoder


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    batch = args.decoder_batch_size
    log(f"baseline: phases b then c on {threads} threads")
    base_unet = median_seconds("unet", threads, args.steps, args.warmup, batch)
    base_decoder = median_seconds("decoder", threads, args.steps, args.warmup, batch)
    log("alongside: both at once")
    unet, decoder = alongside(threads, args)
    kept = {"unet": base_unet / unet, "decoder": base_decoder / decoder}
    sequential_min = (args.unet_steps * base_unet + args.decoder_steps * base_decoder) / 60
    together_min = max(args.unet_steps * unet, args.decoder_steps * decoder) / 60
    report = {
        "torch": torch.__version__,
        "torch_threads": threads,
        "alongside_threads": list(alongside_threads(threads)),
        "decoder_batch_size": batch,
        "steps": args.steps,
        "cases": [
            {"case": "baseline", "phase": "unet", "median_s_per_step": round(base_unet, 4)},
            {"case": "baseline", "phase": "decoder", "median_s_per_step": round(base_decoder, 4)},
            {"case": "alongside", "phase": "unet", "median_s_per_step": round(unet, 4)},
            {"case": "alongside", "phase": "decoder", "median_s_per_step": round(decoder, 4)},
        ],
        "speed_kept_alongside": {phase: round(value, 3) for phase, value in kept.items()},
        "work_per_second_ratio": round(sum(kept.values()), 3),
        "projection": {
            "unet_steps": args.unet_steps,
            "decoder_steps": args.decoder_steps,
            "phases_b_and_c_sequential_min": round(sequential_min, 1),
            "phases_b_and_c_alongside_min": round(together_min, 1),
            "ratio": round(together_min / sequential_min, 3),
        },
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
