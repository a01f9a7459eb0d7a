"""`benchmarks/toy_vae_capacity.py`, run as users run it, with tiny settings.

The benchmark takes most of an hour at its defaults; a script error should fail CI, not that
hour. Tiny VAEs reconstruct nothing yet, so only the report's shape and bookkeeping are checked,
and that each variant really has its latent channels.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from diffusers import AutoencoderKL

from tests.e2e.benchmark_runs import refusal, run_benchmark

SCRIPT = "toy_vae_capacity.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_benchmark(SCRIPT, *args)


@pytest.mark.slow
def test_toy_vae_capacity_trains_each_variant_and_reports_against_the_first(
    tmp_path: Path,
) -> None:
    out = tmp_path / "capacity.json"
    run = _run(
        "--latent-channels", "4", "8", "--vae-steps", "2", "--decoder-steps", "2",
        "--scenes", "4", "--batch-size", "2", "--vae-crop-size", "32",
        "--workdir", str(tmp_path / "work"), "--out", str(out),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert json.loads(run.stdout) == result
    assert result["baseline_latent_channels"] == 4
    assert result["vae_crop_size"] == 32
    for channels in (4, 8):  # every variant's phase a ran on the crops
        config = tmp_path / "work" / f"latent-{channels}" / "train_config.json"
        assert json.loads(config.read_text())["vae_crop_size"] == 32
    assert [v["latent_channels"] for v in result["variants"]] == [4, 8]
    baseline, wider = result["variants"]
    assert baseline["ok_minus_baseline"] == 0 and baseline["train_time_ratio"] == 1
    assert wider["train_time_ratio"] == round(wider["train_s"] / baseline["train_s"], 3)
    assert sum(group["count"] for group in baseline["by_group"].values()) >= 4
    for channels in (4, 8):
        vae_dir = tmp_path / "work" / f"latent-{channels}" / "model" / "vae"
        assert AutoencoderKL.load_config(vae_dir)["latent_channels"] == channels


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--vae-steps", "0"], "--vae-steps must be at least 1, not 0"),
        (["--scenes", "-3"], "--scenes must be at least 1, not -3"),
        (["--latent-channels", "4", "0"], "--latent-channels must all be at least 1"),
        (["--vae-crop-size", "30"], "--vae-crop-size 30: Value error, a crop must be a multiple"),
    ],
)
def test_toy_vae_capacity_refuses_bad_settings_before_training(
    args: list[str], message: str
) -> None:
    assert message in refusal(SCRIPT, *args)
