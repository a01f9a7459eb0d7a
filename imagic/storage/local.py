"""The `file://` backend: a directory on a local or mounted filesystem (the embedded default)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from imagic.errors import StorageError
from imagic.storage.base import ArtifactStore
from imagic.storage.keys import validate_key


class FileStore(ArtifactStore):
    """Objects are files under `root`; every write goes to a temp file and is renamed in."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"store = '{self.uri}': cannot create the store folder ({exc.strerror}); "
                "choose a writable folder with --store or IMAGIC_STORE."
            ) from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(
                f"store = '{self.uri}': folder is not writable; choose another with --store."
            )

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def upload_file(self, local_path: Path, key: str) -> None:
        self._atomic_write(key, lambda temp: shutil.copyfile(local_path, temp))

    def write_bytes(self, key: str, data: bytes) -> None:
        self._atomic_write(key, lambda temp: Path(temp).write_bytes(data))

    def download_file(self, key: str, local_path: Path) -> None:
        source = self._require(key)
        _replace_atomically(Path(local_path), lambda temp: shutil.copyfile(source, temp))

    def read_bytes(self, key: str) -> bytes:
        return self._require(key).read_bytes()

    def _require(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise StorageError(f"'{self.uri_for(key)}' does not exist in the store.")
        return path

    def _atomic_write(self, key: str, write: Callable[[str], object]) -> None:
        _replace_atomically(self._path(key), write)


def _replace_atomically(target: Path, write: Callable[[str], object]) -> None:
    """Write through a temp file beside `target` and rename it in: never a partial file.

    The temp file gets the usual umask-based mode (mkstemp's 0600 would make stored files
    unreadable to the other users of a shared store).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    try:
        write(temp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(temp, 0o666 & ~mask)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
