"""`imagic demo` and the shipped toy model as a user meets them on the command line.

The demo's full default run is the README's main command (tests/e2e/test_readme.py); here are
its shortened happy path with a text the toy model does not know, and its bad inputs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagic.cli import main
from imagic.toyworld import demo, shipped
from imagic.toyworld.scenes import render_array

SHORT = ["--steps-a", "4", "--steps-b", "4", "--steps-c", "3", "--seeds", "0", "--no-tracking"]


def _imagic(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "imagic", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_demo_warns_about_words_the_toy_model_does_not_know(tmp_path: Path) -> None:
    text = "a large red dragon on the left on a white background"
    run = _imagic("demo", "--text", text, "--eta", "0", "1", *SHORT, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "does not know 1 word(s)" in run.stderr and "'dragon'" in run.stderr
    out = tmp_path / demo.DEMO_OUT
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spec"]["model"] == shipped.SHIPPED_MODEL
    assert manifest["spec"]["text"] == text
    assert [item["eta"] for item in manifest["images"]] == [0.0, 1.0]
    assert np.array_equal(
        np.asarray(Image.open(out / "input.png").convert("RGB")), render_array(demo.DEMO_SCENE)
    )


def test_demo_refuses_corrupted_shipped_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "weights"
    shutil.copytree(shipped.SHIPPED_DIR, copy)
    monkeypatch.setattr(shipped, "SHIPPED_DIR", copy)
    name = "text_encoder/model.safetensors"
    expected = json.loads((copy / "checksums.json").read_text())[name]
    (copy / name).write_bytes((copy / name).read_bytes()[:-10])  # truncated, as by a bad copy
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--no-tracking"]) == 2
    err = capsys.readouterr().err
    assert name in err and expected in err and "imagic toy train" in err
    assert "Traceback" not in err
    assert not (tmp_path / demo.DEMO_OUT).exists()


def test_demo_refuses_a_non_empty_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / demo.DEMO_OUT
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--no-tracking"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


def test_demo_refuses_a_sampler_that_cannot_follow_the_toy_schedule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--scheduler", "pndm", "--no-tracking"]) == 2
    err = capsys.readouterr().err
    assert "scheduler = 'pndm'" in err and "zero-terminal-SNR" in err and "'ddim'" in err
    assert "Traceback" not in err
    assert not (tmp_path / demo.DEMO_OUT).exists() and not (tmp_path / "imagic-data").exists()
