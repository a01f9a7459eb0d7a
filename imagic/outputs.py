"""An edit's output folder, written all-or-nothing.

Everything is written into a hidden staging folder beside the target and renamed into place at
the end, so a crash or a bad input never leaves a half-written result under the target name and
never touches what was there before. An existing non-empty folder is only replaced when the
user asks for it (`--overwrite`), and then only once the new result is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from imagic.errors import OutputDirError


def check_output_dir(out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Fail before any work starts if the result could not be committed to `out_dir`."""
    target = Path(out_dir).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise OutputDirError(f"out = '{target}': is a file, not a folder; choose another --out.")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise OutputDirError(
            f"out = '{target}': folder exists and is not empty. Choose a new --out, or pass "
            "--overwrite to replace it (the old contents are kept until the new edit succeeds)."
        )
    parent = _nearest_existing_parent(target)
    if not parent.is_dir():
        raise OutputDirError(
            f"out = '{target}': '{parent}' is a file, not a folder; choose another --out."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputDirError(
            f"out = '{target}': cannot write into '{parent}' (permission denied); choose a "
            "folder you can write to."
        )
    return target


def _nearest_existing_parent(path: Path) -> Path:
    for candidate in (path.parent, *path.parent.parents):
        if candidate.exists():
            return candidate
    return Path("/")


@contextlib.contextmanager
def staged_output_dir(
    out_dir: str | os.PathLike[str], *, overwrite: bool = False
) -> Iterator[Path]:
    """Yield a staging folder; on success it becomes `out_dir`, on failure it is removed."""
    target = check_output_dir(out_dir, overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    try:
        yield staging
        _commit(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _commit(staging: Path, target: Path) -> None:
    """Swap the finished staging folder into place, keeping the old one until the swap is done."""
    if not target.exists():
        staging.rename(target)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    retired.rmdir()
    target.rename(retired)
    try:
        staging.rename(target)
    except BaseException:
        retired.rename(target)
        raise
    shutil.rmtree(retired, ignore_errors=True)
