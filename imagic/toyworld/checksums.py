"""sha256 checksums of a model folder, so shipped toy weights are never used half-copied.

The toy model's weights travel as files (in the repository, a release asset or a cache), and a
truncated or altered file loads as a model that merely draws badly, which no test would notice.
`checksums.json` records every file's sha256 when the model is saved; `verify_checksums`
refuses a folder that does not match and says how to rebuild it. No torch: checking is cheap.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from imagic.errors import ModelLoadError

CHECKSUMS_FILE = "checksums.json"
RETRAIN_HINT = "imagic toy train --out DIR"
FOLDER_FIX = f"copy the whole model folder again, or retrain it with `{RETRAIN_HINT}`"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_checksums(folder: str | Path) -> dict[str, str]:
    """sha256 of every file under `folder` (except `checksums.json`), by POSIX relative path."""
    root = Path(folder)
    return {
        path.relative_to(root).as_posix(): sha256_file(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.relative_to(root).as_posix() != CHECKSUMS_FILE
    }


def write_checksums(folder: str | Path) -> dict[str, str]:
    """Write `checksums.json` into `folder` (after everything else was written); return it."""
    sums = folder_checksums(folder)
    (Path(folder) / CHECKSUMS_FILE).write_text(json.dumps(sums, indent=2, sort_keys=True) + "\n")
    return sums


def verify_checksums(folder: str | Path, *, name: str | None = None, fix: str = FOLDER_FIX) -> None:
    """Raise `ModelLoadError` unless every file `checksums.json` lists is present and intact.

    The message names the file, the expected and the actual checksum, and how to rebuild the
    model (`fix`; `name` is how the message calls the model, by default its folder). Files the
    list does not name are ignored (an OS may add its own, e.g. .DS_Store).
    """
    root = Path(folder)
    label = name or f"'{root}'"
    listing = root / CHECKSUMS_FILE
    if not listing.is_file():
        raise ModelLoadError(
            f"model = {label}: no {CHECKSUMS_FILE} in {root}, so its files cannot be checked; "
            f"{fix}."
        )
    try:
        expected = json.loads(listing.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"model = {label}: {root / CHECKSUMS_FILE} is unreadable ({exc}); {fix}."
        ) from exc
    for file_name, checksum in sorted(expected.items()):
        path = root / file_name
        if not path.is_file():
            raise ModelLoadError(
                f"model = {label}: file {path} is missing (expected sha256 {checksum}); {fix}."
            )
        actual = sha256_file(path)
        if actual != checksum:
            raise ModelLoadError(
                f"model = {label}: file {path} is corrupted: sha256 {actual}, expected "
                f"{checksum}; {fix}."
            )
