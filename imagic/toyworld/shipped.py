"""The toy model that ships inside the package: the model an edit uses when none is named.

`SHIPPED_MODEL` ("imagic:toy") is a model id like a hub id, not a path, so a request, a batch
manifest or a Prefect run form that names it means the same weights on every machine and in
every container (a path would differ between them). `resolve_model` turns it into the
package's `weights/` folder after checking every file against `checksums.json`, so a
half-copied or altered file is refused, naming the file, before it can load as a model that
merely draws badly. The id cannot be mistaken for a folder or a hub id (`owner/name` has no
colon).

A toy model (the shipped one or one `imagic toy train` made) knows only the toy vocabulary;
`warn_unknown_words_for` warns when an edit's text has other words. No torch here.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from imagic.toyworld.checksums import verify_checksums
from imagic.toyworld.tokenizer import tokenizer_vocab, warn_unknown_words

SHIPPED_MODEL = "imagic:toy"
SHIPPED_DIR = Path(__file__).with_name("weights")
RESTORE_HINT = (
    "restore the package's files (`git checkout -- imagic/toyworld/weights` in a clone, or "
    "`pip install --force-reinstall imagic-pipeline`), or retrain them with `imagic toy train "
    "--out DIR` and pass --model DIR/model"
)


@cache
def _verified(folder: Path, stamp: tuple[tuple[str, int, int], ...]) -> None:
    """Checksums of `folder` as of `stamp` (name, size, mtime of each file): checked once."""
    verify_checksums(folder, name=f"{SHIPPED_MODEL!r} (the shipped toy weights)", fix=RESTORE_HINT)


def _stamp(folder: Path) -> tuple[tuple[str, int, int], ...]:
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)


def shipped_model_dir() -> Path:
    """The shipped weights' folder, after checking it is complete and intact."""
    _verified(SHIPPED_DIR, _stamp(SHIPPED_DIR))
    return SHIPPED_DIR


def resolve_model(model: str) -> str:
    """The folder or hub id to load for `model`: the shipped folder for `SHIPPED_MODEL`."""
    return str(shipped_model_dir()) if model == SHIPPED_MODEL else model


def is_toy_model(model: str) -> bool:
    """True for the shipped model and any local folder whose tokenizer is the toy one."""
    if model == SHIPPED_MODEL:
        return True
    vocab_file = Path(model).expanduser() / "tokenizer" / "vocab.json"
    try:
        return json.loads(vocab_file.read_text(encoding="utf-8")) == tokenizer_vocab()
    except (OSError, ValueError):
        return False


def warn_unknown_words_for(text: str, model: str) -> list[str]:
    """Warn when `model` is a toy model and `text` has words it was never trained on."""
    return warn_unknown_words(text) if is_toy_model(model) else []
