"""The README's main command, exactly as written there, in a fresh folder.

Keeps the README honest: if the documented command stops working, this fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from imagic.toyworld import demo
from imagic.toyworld.shipped import SHIPPED_MODEL

ROOT = Path(__file__).resolve().parents[2]


def readme_block_after(heading: str) -> str:
    """The first ```bash block after the line containing `heading`."""
    text = (ROOT / "README.md").read_text()
    start = text.index(heading)
    match = re.search(r"```bash\n(.*?)```", text[start:], re.DOTALL)
    assert match, f"no bash block after {heading!r} in README.md"
    return match.group(1).strip()


def test_readme_documents_install_main_and_test_commands() -> None:
    assert "pip install torch==2.13.0" in readme_block_after("1. Install")
    assert readme_block_after("3. Run the tests") == "python -m pytest"
    ci = (ROOT / ".ci" / "run").read_text()
    assert readme_block_after("1. Install") in ci
    assert "python -m pytest" in ci


@pytest.mark.slow
def test_readme_main_command(tmp_path: Path) -> None:
    """`imagic demo`, in a folder with nothing in it: the shipped model, scene and settings."""
    command = readme_block_after("2. Run an edit")
    bin_dir = str(Path(sys.executable).parent)  # where the `imagic` console script lives
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("IMAGIC_MODEL", None)
    result = subprocess.run(
        ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    out = tmp_path / demo.DEMO_OUT
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spec"]["model"] == SHIPPED_MODEL
    assert manifest["spec"]["text"] == demo.DEMO_TEXT
    pairs = [(item["seed"], item["eta"]) for item in manifest["images"]]
    assert pairs == [(seed, eta) for seed in demo.DEMO_SEEDS for eta in demo.DEMO_ETAS]
    assert all((out / item["file"]).is_file() for item in manifest["images"])
    assert (out / "grid.png").is_file()
