"""Stored files: generated names, atomic writes (temp file + rename) and SHA-256s."""

from __future__ import annotations

import hashlib
import io
import time
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from django.conf import settings

TEMP_SUFFIX = ".partial"
CHUNK = 1024 * 1024


def media_path(name: str) -> Path:
    """Absolute path of a stored name; refuses names that would leave MEDIA_ROOT."""
    root = Path(settings.MEDIA_ROOT).resolve()
    path = (root / name).resolve()
    if root not in path.parents:
        raise ValueError(f"storage: {name!r} is outside MEDIA_ROOT")
    return path


def generated_name(kind: str, suffix: str) -> str:
    token = uuid.uuid4().hex
    return f"{kind}/{token[:2]}/{token}{suffix}"


def _write_atomic(name: str, chunks: Iterator[bytes]) -> tuple[str, int]:
    """Write chunks to a temp file beside the target, fsync, then rename into place.

    A crash at any point leaves either no file or the complete file under ``name``;
    temp files (``*.partial``) are removed by the orphan sweep.
    """
    target = media_path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                digest.update(chunk)
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o640)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest.hexdigest(), target.stat().st_size


def store_bytes(name: str, data: bytes) -> str:
    """Store bytes under ``name``; returns their SHA-256."""
    sha, _ = _write_atomic(name, iter([data]))
    return sha


def store_array(name: str, array: np.ndarray) -> str:
    """Store an array as ``.npy``; returns the SHA-256 of the file."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    view = buffer.getbuffer()
    return store_bytes(name, bytes(view))


def load_array(name: str, mmap: bool = True) -> np.ndarray:
    return np.load(media_path(name), mmap_mode="r" if mmap else None, allow_pickle=False)


def file_sha256(name: str) -> str:
    digest = hashlib.sha256()
    with open(media_path(name), "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def array_sha256(array: np.ndarray) -> str:
    """Checksum of the array's values (float32, C order), independent of file format."""
    data = np.ascontiguousarray(array, dtype=np.float32)
    return hashlib.sha256(data.tobytes()).hexdigest()


def sweep_orphans(max_age_s: float = 3600.0) -> int:
    """Remove temp files older than ``max_age_s`` left by crashed writes; returns count."""
    root = Path(settings.MEDIA_ROOT)
    if not root.exists():
        return 0
    cutoff = time.time() - max_age_s
    removed = 0
    for path in root.rglob(f"*{TEMP_SUFFIX}"):
        if path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
