"""Exceptions the radiology app raises on purpose, each with its cause and fix.

The DICOM core has its own (:mod:`dicomio.errors`). The modules that raise
these import them from here, and keep them importable under their old names.
"""

from __future__ import annotations

__all__ = [
    "AuditImmutableError",
    "AuditKeyError",
    "DicomwebError",
    "ExportError",
    "JobRequestError",
    "JobSuperseded",
    "TransientJobError",
]


class JobRequestError(ValueError):
    """A denoise request that cannot be honoured.

    Cause: a derived series, an unknown model or version, a bad parameter, a model
    whose weights no longer hash as the job recorded, or a series changed since the
    request. Fix: the message says which; nothing was queued or stored.
    """


class JobSuperseded(RuntimeError):
    """This attempt no longer owns its job (requeued, cancelled or taken over).

    Cause: the reconciler or a redelivered message gave the job to another attempt.
    Fix: none needed; the attempt stops and discards its temp files, and the job's
    owner goes on.
    """


class TransientJobError(RuntimeError):
    """A failure worth retrying: the database connection dropped, storage was briefly
    full.

    Cause: the environment, not the input. Fix: none by hand; the task retries with
    back-off, and after the last retry the job fails with the reason.
    """


class ExportError(ValueError):
    """An export that cannot be made.

    Cause: the job has not finished, an output is missing, or the folder is in use.
    Fix: the message says which; nothing was written.
    """


class DicomwebError(Exception):
    """A request the DICOMweb service refuses; ``status`` is the HTTP answer.

    Cause: a malformed or unsupported request (media type, query attribute, frame
    number). Fix: the message says what was expected.

    Args:
        status: the HTTP status to answer with.
        detail: the reason, shown to the client.
    """

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class AuditImmutableError(Exception):
    """An audit row was about to be changed or deleted.

    Cause: code called ``save()`` on an existing event, or ``update()``/``delete()``.
    Fix: write a new event with ``audit.record`` instead; the log is append-only.
    """


class AuditKeyError(Exception):
    """The audit key file is missing, unreadable or malformed.

    Cause: ``AUDIT_KEY_FILE`` names no file (production never makes one by itself), a
    line is not ``<key id> <hex secret>``, or an event or checkpoint names a key id
    the file no longer holds. Fix: create or extend the file with ``manage.py
    audit_key --new``; keep every retired key's line, since the events it signed are
    verified with it.
    """
