"""How every benchmark hands back its result: JSON on stdout, and in `--out` when given.

The scripts are run as `python benchmarks/NAME.py`, so this folder is on `sys.path` and they
import this module as `report`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def require_positive(
    parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str
) -> None:
    """Stop with a usage error naming the flag and value when one of `names` is below 1."""
    for name in names:
        if getattr(args, name) < 1:
            parser.error(
                f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}"
            )


def emit(result: dict[str, Any], out: Path | None) -> None:
    """Print `result` as indented JSON and, when `out` is given, write the same text there."""
    text = json.dumps(result, indent=2)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
