"""Pure DICOM core: safe upload unpacking, instance decoding, series assembly, and the
synthetic scans (phantoms, scanner noise, series) of training, demo and benchmarks.

The scanner physics (``noise``: projection-domain CT noise, Rician MR noise) lives
here with the phantoms because a synthetic scan is only as real as both, and the
demo, the benchmarks and training must make the same one.
"""

from __future__ import annotations

from .errors import DicomIOError, DicomRejected
from .folder import read_folder, read_series
from .reader import Instance, read_instance, validate_uid
from .sources import Limits, Member, iter_members, sanitise_name
from .synthetic import phantom_volume, write_series
from .volume import Assembly, SeriesVolume, SliceRef, assemble_series

__all__ = [
    "Assembly",
    "SeriesVolume",
    "SliceRef",
    "assemble_series",
    "phantom_volume",
    "write_series",
    "DicomIOError",
    "DicomRejected",
    "Instance",
    "Limits",
    "Member",
    "iter_members",
    "read_folder",
    "read_series",
    "read_instance",
    "sanitise_name",
    "validate_uid",
]
