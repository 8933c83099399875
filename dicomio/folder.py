"""Decode every DICOM file of a folder on disk, as an upload is decoded."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DicomRejected
from .reader import Instance, read_instance
from .sources import Limits, iter_members
from .volume import SeriesVolume, assemble_series

__all__ = ["read_folder", "read_series"]


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


def read_series(path: str | os.PathLike[str], modality: str) -> SeriesVolume:
    """The series of ``modality`` in a folder, assembled as the app assembles an
    upload (:func:`assemble_series`): slices sorted along the normal, the order
    every held-out slice range counts in. Of several series the one with the most
    slices is taken; only single-frame files with a position and an orientation
    count (a localiser or an enhanced object is not part of it).

    Raises:
        DicomRejected: when the folder is missing or has no readable slices of
            ``modality``.
    """
    root = Path(path)
    if not root.is_dir():
        raise DicomRejected(str(root), "not a directory")
    instances, _ = read_folder(root)
    members = [
        i
        for i in instances
        if i.modality == modality
        and i.n_frames == 1
        and i.positions[0] is not None
        and i.orientations[0] is not None
    ]
    found = assemble_series(members).series
    if not found:
        raise DicomRejected(str(root), f"no readable {modality} slices")
    return max(found, key=lambda series: series.shape[0])
