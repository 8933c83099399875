"""Exceptions raised by the inference package, each with its cause and fix."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "InferenceError",
    "BundleError",
    "BundleExistsError",
    "ModelNotFoundError",
    "ModelIntegrityError",
]


class InferenceError(Exception):
    """Base class of every error raised by :mod:`inference`."""


class BundleError(InferenceError, ValueError):
    """A model bundle or its metadata is malformed.

    Cause: ``configs/metadata.json`` is missing, is not JSON, lacks a required key or
    has a value of the wrong shape (see ``models/README.md``), or the weights do not
    fit the network the metadata describes.
    Fix: re-export the bundle with :func:`inference.bundle.write_bundle`, which
    validates the metadata before anything is written.
    """


class BundleExistsError(BundleError, FileExistsError):
    """A bundle would overwrite an existing folder or an existing ``(name, version)``.

    Cause: a version, once written, is never overwritten (``models/README.md``).
    Fix: bump ``version`` (and add a ``changelog`` entry) or write to a new folder.
    """


class ModelNotFoundError(InferenceError, LookupError):
    """No bundle matches the requested name and version.

    Cause: the name or version is misspelt, ``MODELS_ROOT`` points at the wrong
    folder, or ``models/DEFAULT`` is missing or names a bundle that is not there.
    Fix: list what is registered with :func:`inference.list_models` (or
    ``python manage.py models``) and ask for one of those, or fix ``models/DEFAULT``.
    """


class ModelIntegrityError(InferenceError):
    """The weights file does not hash to the ``weights_sha256`` in the metadata.

    Cause: ``models/model.pt`` was modified, truncated or replaced after export, or
    the metadata was edited by hand. Running such weights would make every output's
    provenance a lie, so the bundle is refused.
    Fix: restore the bundle from version control or re-export it; never edit
    ``weights_sha256`` to match.

    Attributes:
        path: the weights file that was hashed.
        expected: the hex SHA-256 recorded in the metadata.
        actual: the hex SHA-256 of the file as read.
    """

    def __init__(self, path: Path | str, expected: str, actual: str) -> None:
        self.path = Path(path)
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"load_model: {self.path}: weights SHA-256 is {actual}, metadata "
            f"expects {expected}; refusing a modified bundle"
        )
