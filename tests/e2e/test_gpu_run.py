"""`benchmarks/gpu_run.sh`, tried on the CPU with tiny settings.

GPU time is lent for minutes at a time; a script that breaks there (a missing `bc` once cost a
call its timings) wastes it. Here every step must exit 0 and leave its files.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_run_script_runs_every_step_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OUT": str(out),
        "DEVICE": "cpu",
        "PRECISIONS": "fp32",
        # The deadline only has to stop a hung step; 300 s failed once on 2 shared cores.
        "BUDGET": "540",
        "DEMO_ARGS": "--steps-a 2 --steps-b 2 --steps-c 2 --eta 0 1 --seeds 0",
        "TRAIN_ARGS": "--vae-steps 2 --unet-steps 2 --decoder-steps 2 --grid-size 2 "
        "--sample-steps 2",
        "STAGE_ARGS": "--steps 1 --repeats 1",
        "TRAIN_SPEED_ARGS": "--steps 1 --warmup 0 --workers 0 1 --batch-size 2 "
        "--decoder-batch-size 2",
    }
    run = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_run.sh")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    info = (out / "info.txt").read_text()
    steps = dict(re.findall(r"^(\S+) rc=(\d+) seconds=\d+\.\d{3}$", info, re.MULTILINE))
    assert steps == {
        "gpu-tests": "0",
        "demo-fp32": "0",
        "toy-train": "0",
        "stage-speed": "0",
        "train_speed": "0",
        "train_speed_autocast": "0",
    }, info
    for name in ("demo-fp32.png", "train.log", "model.tar"):
        assert (out / name).stat().st_size > 0, name
    with tarfile.open(out / "model.tar") as tar:
        names = set(tar.getnames())
    assert {"losses.json", "grid.png", "model/checksums.json"} <= names
    assert (out / "stage_speed.json").read_text().startswith("{")
    assert json.loads((out / "train_speed.json").read_text())["precision"] == "fp32"
    assert len(list(out.iterdir())) <= 8  # what one device call brings back
