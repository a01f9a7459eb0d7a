"""How every benchmark hands back its result: JSON on stdout, and in `--out` when given.

The scripts are run as `python benchmarks/NAME.py`, so this folder is on `sys.path` and they
import this module as `report`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit(result: dict[str, Any], out: Path | None) -> None:
    """Print `result` as indented JSON and, when `out` is given, write the same text there."""
    text = json.dumps(result, indent=2)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
