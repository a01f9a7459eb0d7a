"""`benchmarks/toy_train_speed.py`, run as users run it, with tiny settings.

A script error should fail CI, not a GPU call: this is the benchmark `gpu_run.sh` runs there.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.benchmark_runs import refusal, run_benchmark

SCRIPT = "toy_train_speed.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_benchmark(SCRIPT, *args)


@pytest.mark.slow
def test_toy_train_speed_times_each_phase_per_worker_count_against_the_first(
    tmp_path: Path,
) -> None:
    out, profile = tmp_path / "speed.json", tmp_path / "profile.txt"
    run = _run(
        "--workers", "0", "1", "--steps", "2", "--warmup", "1", "--batch-size", "2",
        "--decoder-batch-size", "3",
        "--profile", str(profile), "--profile-steps", "1", "--out", str(out),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert json.loads(run.stdout) == result
    assert result["precision"] == "fp32" and result["device"] == "cpu"
    assert (result["batch_size"], result["decoder_batch_size"]) == (2, 3)
    cases = result["cases"]
    assert [(case["phase"], case["data_workers"]) for case in cases] == [
        (phase, workers) for workers in (0, 1) for phase in ("vae", "unet", "decoder")
    ]
    baseline = {case["phase"]: case["median_s_per_step"] for case in cases[:3]}
    for case in cases:
        assert case["median_s_per_step"] > 0
        expected = case["median_s_per_step"] / baseline[case["phase"]]
        assert case["ratio_to_baseline"] == pytest.approx(expected, abs=0.002)
    assert "aten::" in profile.read_text()  # torch.profiler's operator table


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "--steps must be at least 1, not 0"),
        (["--decoder-batch-size", "0"], "--decoder-batch-size must be at least 1, not 0"),
        (["--workers", "0", "-1"], "--workers [0, -1] must not be negative"),
        (["--precision", "fp64"], "--precision 'fp64': Input should be 'auto', 'fp32'"),
        (["--device", "gpu"], "--device 'gpu': Value error, use one of auto, cpu"),
    ],
)
def test_toy_train_speed_refuses_bad_settings_before_training(
    args: list[str], message: str
) -> None:
    assert message in refusal(SCRIPT, *args)
