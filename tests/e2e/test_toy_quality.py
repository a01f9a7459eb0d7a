"""`benchmarks/toy_quality.py`, run as users run it, with tiny settings.

At its defaults it samples 200 captions and runs 6 Imagic edits (minutes); a script error
should fail CI, not that run. Two samples cannot measure adherence, so only the report's shape
and settings are checked here; the figures are in the README.
"""

from __future__ import annotations

import importlib
import itertools
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from imagic.toyworld.scenes import sample_scene
from tests.e2e.benchmark_runs import ROOT, refusal, run_benchmark

SCRIPT = "toy_quality.py"


@pytest.mark.slow
def test_toy_quality_samples_captions_with_its_guidance_and_frames_them_with_references(
    tmp_path: Path,
) -> None:
    out, grid = tmp_path / "quality.json", tmp_path / "grid.png"
    run = run_benchmark(
        SCRIPT, "--captions", "2", "--edits", "0", "--grid", str(grid), "--out", str(out),
        "--scenes", "check",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert json.loads(run.stdout) == result
    adherence = result["caption_adherence"]
    assert adherence["captions"] == 2
    assert (adherence["scenes"], adherence["first_scene_seed"]) == ("check", 10**9 + 800_000)
    assert (adherence["guidance"], adherence["guidance_rescale"]) == (2.0, 0.7)
    assert (adherence["steps"], adherence["scheduler"]) == (25, "ddim")
    assert adherence["reference_ground_truth_renders"]["ok"] == 1.0  # the checker's ceiling
    for name in ("samples", "reference_vae_round_trip", "reference_mismatched_captions"):
        assert 0.0 <= adherence[name]["ok"] <= 1.0
    assert "imagic_edits" not in result
    assert Image.open(grid).size[0] > 0


def test_toy_quality_passes_its_sampling_settings_to_the_sampler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    toy_quality = importlib.import_module("toy_quality")
    calls: list[dict[str, Any]] = []

    def fake_pipe(texts: list[str], **kwargs: Any) -> SimpleNamespace:
        calls.append(kwargs)
        return SimpleNamespace(images=np.zeros((len(texts), 4, 4, 3)))

    sampling = toy_quality.Sampling(guidance=2.5, guidance_rescale=0.3, steps=7)
    images = toy_quality.sample_captions(fake_pipe, ["a", "b"], 0, sampling)
    assert len(images) == 2
    assert (calls[0]["guidance_scale"], calls[0]["guidance_rescale"]) == (2.5, 0.3)
    assert calls[0]["num_inference_steps"] == 7


def test_toy_quality_caption_ranges_are_disjoint_and_seeded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Recipes are chosen on `selection`, never on `benchmark`: the ranges must not overlap."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    toy_quality = importlib.import_module("toy_quality")
    firsts = sorted(toy_quality.SCENE_RANGES.values())
    assert all(later - earlier >= 100_000 for earlier, later in itertools.pairwise(firsts))
    scenes, texts = toy_quality.held_out_captions("selection", 3)
    assert scenes == [sample_scene(10**9 + 700_000 + index) for index in range(3)]
    assert texts == toy_quality.held_out_captions("selection", 3)[1]
    assert texts != toy_quality.held_out_captions("benchmark", 3)[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--captions", "0"], "--captions must be at least 1, not 0"),
        (["--edits", "-1"], "--edits must not be negative (0: no edits), not -1"),
        (["--guidance", "-1"], "--guidance must be 0 or more (<= 1: no guidance), not -1.0"),
        (["--guidance", "nan"], "--guidance must be 0 or more (<= 1: no guidance), not nan"),
        (["--guidance-rescale", "1.5"], "--guidance-rescale must be from 0 to 1, not 1.5"),
        (["--scenes", "train"], "--scenes: invalid choice: 'train'"),
        (["--sample-steps", "0"], "--sample-steps must be at least 1, not 0"),
        (["--scheduler", "heun"], "--scheduler: invalid choice: 'heun'"),
        (["--scheduler", "pndm"], "--scheduler pndm: scheduler = 'pndm': this model was trained"),
    ],
)
def test_toy_quality_refuses_bad_settings_before_sampling(args: list[str], message: str) -> None:
    assert message in refusal(SCRIPT, *args)
