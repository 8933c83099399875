"""Stored files: generated names, atomic writes (temp file + rename) and SHA-256s."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

logger = logging.getLogger(__name__)

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


def _temp_beside(target: Path) -> tuple[int, str]:
    target.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(dir=target.parent, prefix=".", suffix=TEMP_SUFFIX)


def npy_chunks(
    shape: Sequence[int], dtype: np.dtype, slabs: Iterable[np.ndarray]
) -> Iterator[bytes | memoryview]:
    """The bytes of a C-order ``.npy`` file (as ``np.save`` writes it), header
    first, then each slab along the first axis: an array goes to disk without a
    second copy of it in memory."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header,
        {
            "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
            "fortran_order": False,
            "shape": tuple(int(v) for v in shape),
        },
    )
    yield header.getvalue()
    for slab in slabs:
        yield np.ascontiguousarray(slab, dtype=dtype).data.cast("B")


class BatchWriter:
    """Write many files atomically: all data first, fsynced, then renames.

    Inside ``with BatchWriter() as batch:`` each ``batch.write(name, data)`` goes to a
    temp file beside its target, written and fsynced by a small thread pool while
    the caller goes on (file writes and flushes release the GIL, and a flush per
    file is the slow part of ingest); :meth:`write_chunks` writes and fsyncs on the
    caller's thread. :meth:`finish` (or a clean exit) awaits every write and only
    then renames the temp files into place, so a stored name always holds complete,
    durable data; names given up with :meth:`discard` are removed instead. On an
    exception before that, a failed write included, the temp files are removed and
    no name appears.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[str, Path]] = []
        self._writes: list[Future[tuple[str, Path]]] = []
        self._discarded: set[Path] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._finished = False
        self._placed: list[Path] = []

    def __enter__(self) -> BatchWriter:
        return self

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError("BatchWriter: the batch is finished; start another")

    def write(
        self, name: str, data: bytes | memoryview, *, sha256: str | None = None
    ) -> str:
        """Queue ``data`` for ``name``; returns its SHA-256 (``sha256`` when the caller
        already hashed these exact bytes). The bytes must not change until exit."""
        self._check_open()
        target = media_path(name)
        digest = sha256 or hashlib.sha256(data).hexdigest()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(_WRITERS, thread_name_prefix="store")
        self._writes.append(self._pool.submit(_write_temp, target, [data], sync=True))
        return digest

    def discard(self, name: str) -> None:
        """Give up a name queued with :meth:`write`: its temp file is removed at
        :meth:`finish` instead of renamed into place."""
        self._check_open()
        self._discarded.add(media_path(name))

    def write_chunks(
        self, name: str, chunks: Iterable[bytes | memoryview], *, hashed: bool = True
    ) -> str:
        """Write (and fsync) the concatenated ``chunks`` for ``name`` now, hashing
        each as it comes; returns the SHA-256 (``""`` when not ``hashed``)."""
        self._check_open()
        digest = hashlib.sha256()

        def hashing() -> Iterator[bytes | memoryview]:
            for chunk in chunks:
                if hashed:
                    digest.update(chunk)
                yield chunk

        self._pending.append(_write_temp(media_path(name), hashing(), sync=True))
        return digest.hexdigest() if hashed else ""

    def write_array(self, name: str, array: np.ndarray) -> str:
        """Write an array as a C-order ``.npy``; returns the SHA-256 of the file."""
        ordered = np.require(array, requirements="C")
        slabs = ordered if ordered.ndim > 1 else [ordered]
        return self.write_chunks(name, npy_chunks(ordered.shape, ordered.dtype, slabs))

    def _await_writes(self) -> BaseException | None:
        failure: BaseException | None = None
        for write in self._writes:
            try:
                tmp, target = write.result()
            except BaseException as error:  # the temp file is gone already
                failure = failure or error
            else:
                self._pending.append((tmp, target))
        self._writes.clear()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        return failure

    def _remove_temps(self) -> None:
        for tmp, _ in self._pending:
            Path(tmp).unlink(missing_ok=True)
        self._pending.clear()

    def finish(self) -> None:
        """Await every write (each is durable once written) and rename the files
        into place (the discarded ones are removed). Raises the first failed write,
        leaving nothing behind. Once finished, the batch takes no more files."""
        if self._finished:
            return
        self._finished = True
        failure = self._await_writes()
        if failure is not None:
            self._remove_temps()
            raise failure
        kept = [(tmp, t) for tmp, t in self._pending if t not in self._discarded]
        try:
            for tmp, target in self._pending:
                if target in self._discarded:
                    Path(tmp).unlink(missing_ok=True)
            for tmp, target in kept:
                os.replace(tmp, target)
                self._placed.append(target)
        except BaseException:
            self._remove_temps()
            raise
        for directory in {target.parent for _, target in kept}:
            _fsync_path(directory)

    def withdraw(self) -> None:
        """Remove the files :meth:`finish` put in place, for when the rows that were
        to name them are not written after all. Their names are new (generated),
        so nothing else can refer to them; never call it once those rows may have
        committed."""
        for target in self._placed:
            target.unlink(missing_ok=True)
        self._placed.clear()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish()
            return
        if not self._finished:
            self._finished = True
            self._await_writes()
            self._remove_temps()


#: Threads writing the files of one batch.
_WRITERS = 4


def _write_temp(
    target: Path, chunks: Iterable[bytes | memoryview], *, sync: bool = False
) -> tuple[str, Path]:
    """Write ``chunks`` to a new temp file beside ``target`` (and fsync it with
    ``sync``); (temp path, target). On any error the temp file is removed and the
    error raised."""
    fd, tmp = _temp_beside(target)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o640)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp, target


def _fsync_path(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def store_array(name: str, array: np.ndarray) -> str:
    """Store an array as ``.npy``; returns the SHA-256 of the file."""
    with BatchWriter() as batch:
        sha = batch.write_array(name, array)
    return sha


class ArrayFile:
    """A new ``.npy`` output, filled in place through a memory map, then committed.

    ``array`` is a writable memmap of a temp file beside ``name``; nothing shows under
    ``name`` until :meth:`commit`, which flushes, fsyncs, hashes (:meth:`prepare`)
    and links it into place (:meth:`link`). When ``name`` already exists (an earlier
    attempt got that far) the temp file is dropped and the stored one kept: outputs
    are never overwritten. A writer that fills the array slice by slice along its
    first axis can hand each finished run of slices to :meth:`hash_slices` while
    it is still in memory, so that :meth:`prepare` need not read the file back.
    """

    def __init__(self, name: str, shape: tuple[int, ...], dtype=np.float32) -> None:
        self.name = name
        self._sha256: str | None = None
        self._digest: Any = None
        self._hashed_to = 0
        target = media_path(name)
        fd, tmp = _temp_beside(target)
        os.close(fd)
        self._tmp = Path(tmp)
        try:
            self.array = np.lib.format.open_memmap(
                self._tmp, mode="w+", dtype=dtype, shape=tuple(shape)
            )
            # Reserve every block now: on a full disk this raises ENOSPC here, as an
            # OSError, instead of a SIGBUS later when a page of the map is written.
            fd = os.open(self._tmp, os.O_RDWR)
            try:
                os.posix_fallocate(fd, 0, os.path.getsize(self._tmp))
            finally:
                os.close(fd)
            with open(self._tmp, "rb") as handle:
                self._digest = hashlib.sha256(handle.read(self.array.offset))
        except BaseException:
            self.discard()
            raise

    def hash_slices(self, start: int, stop: int) -> None:
        """Hash slices ``[start, stop)`` (along the first axis; a 1D or 2D array is
        one slice) now, while they are in memory. They must be final, and runs
        must come in order from slice 0; any other call gives up, and
        :meth:`prepare` hashes the whole file from disk instead."""
        stack = self.array if self.array.ndim >= 3 else self.array[None]
        if self._digest is None or start != self._hashed_to or stop <= start:
            self._digest = None
            return
        self._digest.update(np.ascontiguousarray(stack[start:stop]).data.cast("B"))
        self._hashed_to = stop

    def commit(self) -> str:
        """Make the file durable and visible under ``name``; returns its SHA-256."""
        self.prepare()
        return self.link()

    def prepare(self) -> str:
        """Flush, fsync and hash the temp file (slow; safe to run beside another
        file's); nothing shows under ``name`` yet. Returns the SHA-256."""
        if self._sha256 is None:
            depth = self.array.shape[0] if self.array.ndim >= 3 else 1
            hashed = self._digest is not None and self._hashed_to == depth
            self.array.flush()
            del self.array
            _fsync_path(self._tmp)
            if hashed:
                self._sha256 = self._digest.hexdigest()
            else:
                self._sha256 = _sha256_path(self._tmp)
        return self._sha256

    def link(self) -> str:
        """Show the prepared file under ``name``; returns the SHA-256 stored there."""
        sha = self.prepare()
        target = media_path(self.name)
        os.chmod(self._tmp, 0o640)
        try:
            # link, not rename: it fails when the name exists, so a stored output is
            # never replaced, even by a late attempt that lost its job.
            os.link(self._tmp, target)
        except FileExistsError:
            self._tmp.unlink()
            stored = _sha256_path(target)
            if stored != sha:
                logger.warning(
                    "%s exists with other content; the stored one kept", target
                )
            return stored
        self._tmp.unlink()
        _fsync_path(target.parent)
        return sha

    def discard(self) -> None:
        self.__dict__.pop("array", None)
        self._tmp.unlink(missing_ok=True)


def load_array(name: str, mmap: bool = True) -> np.ndarray:
    return np.load(
        media_path(name), mmap_mode="r" if mmap else None, allow_pickle=False
    )


def _sha256_path(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(name: str) -> str:
    return _sha256_path(media_path(name))


def sweep_orphans(max_age_s: float = 3600.0) -> int:
    """Remove temp files older than ``max_age_s`` left by crashed writes; a count."""
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
