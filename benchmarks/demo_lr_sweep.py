"""Which stage B learning rate suits the toy model? The demo's edit at several rates.

Usage:
    python benchmarks/demo_lr_sweep.py [--model imagic:toy] [--lr 1e-5 5e-6 ...] [--out F.json]

Stage B (fine-tuning) trades the two things Imagic must do at once: too little and eta 0 no
longer gives the input back; too much and the fine-tuned model redraws the input whatever the
embedding, so the edit never comes in. The toy model is far smaller than SD, so SD's 2e-6 is
no guide; this script is how `imagic.toyworld.demo.DEMO_LR_B` was picked, on the demo's edit
alone (the other edits of `toy_quality.py` then check the choice). For each rate: the demo's
settings, seeds 0-2 and the demo's etas; per seed the eta 0 PSNR against the input and the
etas whose image passes the adherence check for the edited scene. A rate is usable when every
seed keeps eta 0 at >= 25 dB and shows the edit at some eta in [0.5, 1].

The JSON goes to stdout (and to --out); progress lines go to stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from report import emit
from toy_quality import log, psnr, run_toy_edit

from imagic.toyworld import demo
from imagic.toyworld.adherence import check_sample
from imagic.toyworld.scenes import edit_ground_truth
from imagic.toyworld.shipped import SHIPPED_MODEL

DEFAULT_RATES = (1e-5, 5e-6, 3e-6, 2e-6, 1.5e-6, 1e-6)
EDIT_WINDOW = (0.5, 1.0)
"""The etas where the issue asks to see the edit."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=SHIPPED_MODEL, help="toy model folder or imagic:toy")
    parser.add_argument("--lr", type=float, nargs="+", default=list(DEFAULT_RATES))
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    return parser.parse_args(argv)


def sweep_rate(model: str, learning_rate: float) -> dict[str, Any]:
    truth = edit_ground_truth(demo.DEMO_SCENE, demo.DEMO_EDIT)
    source = np.asarray(truth.source_image)
    images, seconds = run_toy_edit(
        model,
        demo.DEMO_SCENE,
        truth.text,
        learning_rate_b=learning_rate,
        seeds=demo.DEMO_SEEDS,
        etas=demo.DEMO_ETAS,
    )
    seeds = {}
    for seed in demo.DEMO_SEEDS:
        target = truth.target
        applied = [eta for eta in demo.DEMO_ETAS if check_sample(images[seed, eta], target).ok]
        seeds[str(seed)] = {
            "eta0_psnr_db": round(float(psnr(images[seed, 0.0], source)), 2),
            "etas_with_edit_applied": applied,
        }
    usable = all(
        report["eta0_psnr_db"] >= 25
        and any(EDIT_WINDOW[0] <= eta <= EDIT_WINDOW[1] for eta in report["etas_with_edit_applied"])
        for report in seeds.values()
    )
    return {"learning_rate": learning_rate, "seconds": round(seconds, 1), "usable": usable,
            "seeds": seeds}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rates = []
    for rate in args.lr:
        rates.append(sweep_rate(args.model, rate))
        log(f"lr {rate:g}: {rates[-1]}")
    emit({"model": args.model, "demo_lr_b": demo.DEMO_LR_B, "rates": rates}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
