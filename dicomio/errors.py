"""Exceptions raised by the DICOM core when an input cannot be used."""

from __future__ import annotations

__all__ = ["DicomIOError", "DicomRejected"]


class DicomIOError(Exception):
    """Base class of every error raised on purpose by :mod:`dicomio`.

    Cause: an input (file, archive member or series) could not be used.
    Fix: catch this class to handle all of the package's errors at once; the
    subclasses say what went wrong.
    """


class DicomRejected(DicomIOError):
    """An input was refused; ``name`` says which one and ``reason`` says why.

    Cause: the bytes are not a usable greyscale DICOM image (not DICOM at all,
    truncated, corrupt compressed pixels, a non-image object such as a
    structured report, a colour image, dimensions beyond the configured
    :class:`~dicomio.sources.Limits`, an invalid UID), or the
    instance does not fit the series it claims to belong to.
    Fix: the reason names the offending value; re-export the study from the
    modality or PACS, or raise the limit if the file is legitimate.

    Args:
        name: display name of the rejected input (never a file-system path
            taken from an archive).
        reason: one-line explanation, without the name.
    """

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason

    def __reduce__(self) -> tuple[type[DicomRejected], tuple[str, str]]:
        # Keeps the two-argument signature picklable for Celery results.
        return (type(self), (self.name, self.reason))
