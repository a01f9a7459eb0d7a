"""`benchmarks/toy_alongside_speed.py`, run as users run it, with tiny settings."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.benchmark_runs import refusal, run_benchmark

SCRIPT = "toy_alongside_speed.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_benchmark(SCRIPT, *args)


@pytest.mark.slow
def test_toy_alongside_speed_sets_both_phases_at_once_against_one_after_the_other(
    tmp_path: Path,
) -> None:
    out = tmp_path / "alongside.json"
    run = _run(
        "--steps", "2", "--warmup", "1", "--decoder-batch-size", "2",
        "--unet-steps", "30", "--decoder-steps", "20", "--out", str(out),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert json.loads(run.stdout) == result
    seconds = {(case["case"], case["phase"]): case["median_s_per_step"] for case in result["cases"]}
    assert set(seconds) == {
        (case, phase) for case in ("baseline", "alongside") for phase in ("unet", "decoder")
    }
    assert all(value > 0 for value in seconds.values())
    kept = result["speed_kept_alongside"]
    for phase in ("unet", "decoder"):
        expected = seconds["baseline", phase] / seconds["alongside", phase]
        assert kept[phase] == pytest.approx(expected, rel=0.01)
    assert result["work_per_second_ratio"] == pytest.approx(sum(kept.values()), abs=0.002)
    projection = result["projection"]
    sequential = (30 * seconds["baseline", "unet"] + 20 * seconds["baseline", "decoder"]) / 60
    together = max(30 * seconds["alongside", "unet"], 20 * seconds["alongside", "decoder"]) / 60
    assert projection["phases_b_and_c_sequential_min"] == pytest.approx(sequential, abs=0.06)
    assert projection["phases_b_and_c_alongside_min"] == pytest.approx(together, abs=0.06)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "--steps must be at least 1, not 0"),
        (["--decoder-steps", "-5"], "--decoder-steps must be at least 1, not -5"),
        (["--warmup", "-1"], "--warmup -1 must not be negative"),
    ],
)
def test_toy_alongside_speed_refuses_bad_settings_before_training(
    args: list[str], message: str
) -> None:
    assert message in refusal(SCRIPT, *args)
