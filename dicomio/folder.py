"""Decode every DICOM file of a folder on disk, as an upload is decoded."""

from __future__ import annotations

import os

from .errors import DicomRejected
from .reader import Instance, read_instance
from .sources import Limits, iter_members

__all__ = ["read_folder"]


def read_folder(
    path: str | os.PathLike[str], *, limits: Limits | None = None
) -> tuple[list[Instance], list[tuple[str, str]]]:
    """Decode the files of a folder (walked in sorted order), a ZIP archive or one
    file, with the checks an upload gets (:func:`iter_members`,
    :func:`read_instance`): training, the benchmarks and the app read alike.

    Args:
        path: a folder, ZIP archive or file on disk.
        limits: resource caps; defaults to :class:`Limits` ().

    Returns:
        The decoded instances in walk order, and ``(name, reason)`` for every file
        that is not a usable image (a README, a colour image, a truncated file).
        Names are display names: the folder's own name, then the path inside it.
    """
    instances: list[Instance] = []
    rejections: list[tuple[str, str]] = []
    for member in iter_members(path, limits=limits):
        try:
            instances.append(read_instance(member.read(), member.name, limits=limits))
        except DicomRejected as exc:
            rejections.append((exc.name, exc.reason))
    return instances, rejections
