"""User-facing errors.

Every error a user can fix by changing their input is an `ImagicError`. The CLI prints its
message and exits with code 2 (no traceback), so each message must name the field, the value
that was given and what to do instead. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ImagicError(Exception):
    """Base class for errors caused by the user's input or environment, not by a bug."""


class InvalidImageError(ImagicError):
    """The input image cannot be read, is too small, too large, or otherwise unusable."""


class InvalidTextError(ImagicError):
    """The target text is empty or cannot be encoded by the model's tokenizer."""


class InvalidParamsError(ImagicError):
    """A parameter (eta, seeds, steps, learning rate, ...) is out of its allowed range."""


class ModelLoadError(ImagicError):
    """The model folder or hub id does not lead to a usable diffusers pipeline."""


class DeviceUnavailableError(ImagicError):
    """The requested device or precision is not available on this machine."""


class OutputDirError(ImagicError):
    """The output folder cannot be written, or would overwrite earlier results."""


class FinetunedStateError(ImagicError):
    """Stored fine-tuned weights are missing, incomplete or do not fit the base model."""


class StorageError(ImagicError):
    """The artifact store cannot be reached, is misconfigured, or refuses the request."""


class StorageUnavailableError(StorageError):
    """The store could not be reached or was briefly overloaded: retrying later can succeed.

    The only storage failure that orchestrators retry; every other StorageError needs a fix.
    """


class InvalidKeyError(StorageError):
    """A key or file name would escape the store or is otherwise unsafe."""


class ChecksumMismatchError(StorageError):
    """A stored file does not match the sha256 its stage manifest recorded: never use it."""


class StageNotFoundError(ImagicError):
    """A stage needs the committed output of an earlier stage, which does not exist."""


class TrackingError(ImagicError):
    """MLflow tracking was required but the tracking server cannot be used."""
