"""Turn an uploaded file, folder or ZIP archive into named byte payloads, safely."""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DicomRejected

__all__ = ["Limits", "Member", "archive_kind", "iter_members", "sanitise_name"]

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"
_S_IFLNK = 0o120000
_S_IFMT = 0o170000
# Below this many bytes a high ratio is harmless (a blank 512x512 slice deflates
# more than 200:1), so ratio caps only apply to entries and totals above it.
_RATIO_FLOOR_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Resource caps applied to every upload before and while it is decoded.

    Args:
        max_entries: most files in one folder walk or ZIP archive. Default 20000.
        max_uncompressed_bytes: most bytes decompressed from one archive,
            counted as they are produced. Default 4 GiB.
        max_ratio: highest compression ratio (uncompressed / compressed) of an
            archive entry and of an archive so far, checked once more than
            1 MiB has been produced. Default 200.
        max_file_bytes: largest single file or archive entry. Default 2 GiB.
        max_pixels: most pixels (rows x columns x frames) in one DICOM
            instance; bounds the float32 volume at 4 bytes per pixel.
            Default 1024 * 1024 * 2000.
        max_name_chars: longest display name kept; longer names are shortened
            in the middle. Default 255.
        chunk_bytes: read size when streaming files and archive entries.
            Default 1 MiB.

    Raises:
        ValueError: when a limit is not a positive number.
    """

    max_entries: int = 20000
    max_uncompressed_bytes: int = 4 * 1024**3
    max_ratio: float = 200.0
    max_file_bytes: int = 2 * 1024**3
    max_pixels: int = 1024 * 1024 * 2000
    max_name_chars: int = 255
    chunk_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        for name in (
            "max_entries",
            "max_uncompressed_bytes",
            "max_ratio",
            "max_file_bytes",
            "max_pixels",
            "max_name_chars",
            "chunk_bytes",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ValueError(
                    f"Limits.{name} must be a positive number, got {value!r}"
                )
        if self.max_name_chars < 16:
            raise ValueError(
                f"Limits.max_name_chars must be at least 16, got {self.max_name_chars}"
            )


@dataclass(frozen=True)
class Member:
    """One file found in an upload.

    Args:
        name: sanitised display name, e.g. ``"scan.zip/series1/IM0001"``; never
            meant to be used as a file-system path.
        error: why the member cannot be read (symbolic link, nested archive,
            encrypted entry, a cap that tripped...), or ``None``.
        size_bytes: size of the payload when known.
        opener: callable returning the payload; internal, use :meth:`read`.
    """

    name: str
    error: str | None = None
    size_bytes: int | None = None
    opener: Callable[[], bytes] | None = field(default=None, repr=False, compare=False)

    def read(self) -> bytes:
        """Return the member's bytes.

        Raises:
            DicomRejected: when the member carries an error or cannot be read.
        """
        if self.error is not None or self.opener is None:
            raise DicomRejected(self.name, self.error or "member has no content")
        return self.opener()


class _ArchiveCapTripped(Exception):
    """Internal: an archive-wide cap tripped; the message is the reason."""


def archive_kind(head: bytes) -> str | None:
    """Name the archive format the leading bytes belong to, if any.

    Args:
        head: the first bytes of a payload (at least 262 for tar detection).

    Returns:
        ``"zip"``, ``"gzip"``, ``"bzip2"``, ``"xz"``, ``"7z"``, ``"rar"``,
        ``"zstd"``, ``"tar"`` or ``None``. A DICOM file whose preamble happens
        to look like an archive (``DICM`` at offset 128) is not an archive.
    """
    if head[128:132] == b"DICM":
        return None
    if head[:4] in _ZIP_MAGIC:
        return "zip"
    for magic, kind in (
        (b"\x1f\x8b", "gzip"),
        (b"BZh", "bzip2"),
        (b"\xfd7zXZ\x00", "xz"),
        (b"7z\xbc\xaf\x27\x1c", "7z"),
        (b"Rar!\x1a\x07", "rar"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
    ):
        if head.startswith(magic):
            return kind
    if head[257:262] == b"ustar":
        return "tar"
    return None


def sanitise_name(raw: str, max_chars: int = 255) -> str:
    """Make an untrusted file or entry name safe to display and log.

    Control and format characters (NUL, newlines, bidi overrides) are removed,
    backslashes become slashes, empty, ``.`` and ``..`` components are dropped
    (so absolute and climbing paths lose their meaning) and names longer than
    ``max_chars`` are shortened in the middle.

    Args:
        raw: the name as found in the archive or upload.
        max_chars: longest result. Default 255.

    Returns:
        A non-empty display name.
    """
    printable = "".join(ch for ch in raw if ch.isprintable())
    parts = [p.strip() for p in printable.replace("\\", "/").split("/")]
    name = "/".join(p for p in parts if p not in ("", ".", ".."))
    if not name:
        name = "(unnamed)"
    if len(name) > max_chars:
        head = (max_chars - 1) // 2
        tail = max_chars - 1 - head
        name = f"{name[:head]}…{name[len(name) - tail :]}"
    return name


def iter_members(
    path: str | os.PathLike[str],
    display_name: str | None = None,
    limits: Limits | None = None,
) -> Iterator[Member]:
    """Yield every file of an upload, expanding folders and ZIP archives.

    A plain file gives one member; a folder is walked in sorted order without
    following symbolic links; a ZIP archive (found by its magic bytes, not its
    extension, also inside folders) is streamed one entry at a time. ZIP
    entries are decompressed while being counted against ``limits`` and are
    held in memory one at a time, so a member must be read before the next
    one is requested. Names are display names only.

    When an archive-wide cap trips (entry count, total uncompressed bytes,
    compression ratio), one member naming the archive and the cap is yielded
    and the rest of that archive is skipped; members already yielded stay
    valid.

    Args:
        path: a file or folder on disk (trusted: it was written by the server).
        display_name: name shown for ``path``; defaults to its base name.
        limits: resource caps; defaults to :class:`Limits` ().

    Yields:
        :class:`Member` objects, some carrying an ``error`` instead of content.
    """
    limits = limits or Limits()
    root = Path(path)
    shown = sanitise_name(display_name or root.name or str(root), limits.max_name_chars)
    try:
        info = root.stat()
    except OSError as exc:
        yield Member(shown, error=f"cannot open: {exc.strerror or exc}")
        return
    if stat.S_ISDIR(info.st_mode):
        yield from _iter_folder(root, shown, limits)
    elif not is_os_metadata(display_name or root.name):
        # A folder picked in the browser arrives file by file, .DS_Store included.
        yield from _iter_file(root, shown, info, limits)


def _iter_file(
    path: Path, shown: str, info: os.stat_result, limits: Limits
) -> Iterator[Member]:
    if not stat.S_ISREG(info.st_mode):
        yield Member(shown, error="not a regular file")
        return
    try:
        with path.open("rb") as fh:
            head = fh.read(262)
    except OSError as exc:
        yield Member(shown, error=f"cannot open: {exc.strerror or exc}")
        return
    if archive_kind(head) == "zip":
        yield from _iter_zip(path, shown, limits)
        return
    if info.st_size > limits.max_file_bytes:
        yield Member(
            shown,
            error=f"file is {info.st_size} bytes, above max_file_bytes "
            f"{limits.max_file_bytes}",
            size_bytes=info.st_size,
        )
        return
    yield Member(
        shown,
        size_bytes=info.st_size,
        opener=lambda: _read_file(path, shown, limits),
    )


def _read_file(path: Path, shown: str, limits: Limits) -> bytes:
    buf = io.BytesIO()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(limits.chunk_bytes):
                buf.write(chunk)
                if buf.tell() > limits.max_file_bytes:
                    raise DicomRejected(
                        shown,
                        f"file grew beyond max_file_bytes {limits.max_file_bytes}",
                    )
    except OSError as exc:
        raise DicomRejected(shown, f"cannot read: {exc.strerror or exc}") from exc
    return buf.getvalue()


# What operating systems add to folders and archives; never scans, so skipped silently.
_METADATA_DIRS = frozenset({"__MACOSX", ".Spotlight-V100", ".Trashes", ".fseventsd"})
_METADATA_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def is_os_metadata(relative: str) -> bool:
    """Whether a path inside an upload is the OS's own bookkeeping (or AppleDouble)."""
    parts = [part for part in relative.replace("\\", "/").split("/") if part]
    if not parts:
        return False
    name = parts[-1]
    return (
        any(part in _METADATA_DIRS for part in parts[:-1])
        or name in _METADATA_FILES
        or name.startswith("._")
    )


def _iter_folder(root: Path, shown: str, limits: Limits) -> Iterator[Member]:
    count = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        # os.walk lists symlinked folders but never enters them; report them.
        linked = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = sorted(
            d for d in dirnames if d not in linked and d not in _METADATA_DIRS
        )
        rel_dir = os.path.relpath(dirpath, root)
        for filename in sorted([*filenames, *linked]):
            if is_os_metadata(filename):
                continue
            count += 1
            if count > limits.max_entries:
                yield Member(
                    shown,
                    error=f"folder has more than max_entries {limits.max_entries} "
                    "files; the rest were not read",
                )
                return
            rel = filename if rel_dir == "." else f"{rel_dir}/{filename}"
            name = sanitise_name(f"{shown}/{rel}", limits.max_name_chars)
            full = Path(dirpath, filename)
            try:
                info = full.lstat()
            except OSError as exc:
                yield Member(name, error=f"cannot open: {exc.strerror or exc}")
                continue
            if stat.S_ISLNK(info.st_mode):
                yield Member(name, error="symbolic link is not followed")
                continue
            yield from _iter_file(full, name, info, limits)


def _declared_entry_count(fh: io.BufferedReader, size: int) -> int:
    """Read the entry count from the end-of-central-directory record.

    Done before :class:`zipfile.ZipFile` parses the directory so an archive
    declaring millions of entries costs nothing.
    """
    tail_len = min(size, 22 + 65535)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    pos = tail.rfind(_EOCD)
    if pos < 0 or pos + 22 > len(tail):
        raise zipfile.BadZipFile("end of central directory not found")
    (total,) = struct.unpack("<H", tail[pos + 10 : pos + 12])
    locator = pos - 20
    if (
        total == 0xFFFF
        and locator >= 0
        and tail[locator : locator + 4] == _ZIP64_LOCATOR
    ):
        (record_offset,) = struct.unpack("<Q", tail[locator + 8 : locator + 16])
        fh.seek(record_offset)
        record = fh.read(56)
        if len(record) == 56 and record[:4] == _ZIP64_EOCD:
            (total,) = struct.unpack("<Q", record[32:40])
    return total


class _ArchiveBudget:
    """Running totals for one archive, checked after every decompressed chunk."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.uncompressed = 0
        self.compressed = 0

    def add_entry(self, compressed: int) -> None:
        self.compressed += max(compressed, 1)

    def add_chunk(
        self, entry: str, produced: int, entry_total: int, entry_packed: int
    ) -> None:
        limits = self.limits
        self.uncompressed += produced
        if self.uncompressed > limits.max_uncompressed_bytes:
            raise _ArchiveCapTripped(
                f"archive expands beyond max_uncompressed_bytes "
                f"{limits.max_uncompressed_bytes} (while reading {entry})"
            )
        if entry_total > _RATIO_FLOOR_BYTES and entry_total > limits.max_ratio * max(
            entry_packed, 1
        ):
            raise _ArchiveCapTripped(
                f"entry {entry} expands more than max_ratio {limits.max_ratio:g}:1 "
                f"({entry_total} bytes from {entry_packed}); looks like a zip bomb"
            )
        if (
            self.uncompressed > _RATIO_FLOOR_BYTES
            and self.uncompressed > limits.max_ratio * self.compressed
        ):
            raise _ArchiveCapTripped(
                f"archive expands more than max_ratio {limits.max_ratio:g}:1 "
                f"({self.uncompressed} bytes from {self.compressed}); "
                "looks like a zip bomb"
            )


def _iter_zip(path: Path, shown: str, limits: Limits) -> Iterator[Member]:
    try:
        with path.open("rb") as raw:
            size = os.fstat(raw.fileno()).st_size
            declared = _declared_entry_count(raw, size)
            if declared > limits.max_entries:
                yield Member(
                    shown,
                    error=f"archive declares {declared} entries, above max_entries "
                    f"{limits.max_entries}; nothing was read",
                )
                return
            raw.seek(0)
            with zipfile.ZipFile(raw) as zf:
                infos = zf.infolist()
                if len(infos) > limits.max_entries:
                    yield Member(
                        shown,
                        error=f"archive has {len(infos)} entries, above max_entries "
                        f"{limits.max_entries}; nothing was read",
                    )
                    return
                budget = _ArchiveBudget(limits)
                for info in infos:
                    # Folders are implied by their files; OS bookkeeping is no scan.
                    if info.filename.endswith("/") or is_os_metadata(info.filename):
                        continue
                    yield _zip_member(zf, info, shown, budget)
    except _ArchiveCapTripped as exc:
        yield Member(shown, error=f"{exc}; the rest of the archive was not read")
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        OSError,
        ValueError,
    ) as exc:
        yield Member(shown, error=f"corrupt ZIP archive ({exc}); the rest was not read")


def _zip_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, shown: str, budget: _ArchiveBudget
) -> Member:
    limits = budget.limits
    name = sanitise_name(f"{shown}/{info.filename}", limits.max_name_chars)
    if not info.filename:
        return Member(name, error="entry with an empty name")
    if info.create_system == 3 and (info.external_attr >> 16) & _S_IFMT == _S_IFLNK:
        return Member(name, error="symbolic link entry is not followed")
    if info.flag_bits & 0x1:
        return Member(name, error="encrypted entry cannot be read")
    if info.file_size > limits.max_file_bytes:
        return Member(
            name,
            error=f"entry declares {info.file_size} bytes, above max_file_bytes "
            f"{limits.max_file_bytes}",
            size_bytes=info.file_size,
        )
    if info.file_size > _RATIO_FLOOR_BYTES and info.file_size > limits.max_ratio * max(
        info.compress_size, 1
    ):
        raise _ArchiveCapTripped(
            f"entry {name} declares compression ratio above max_ratio "
            f"{limits.max_ratio:g}:1 ({info.file_size} bytes from "
            f"{info.compress_size}); looks like a zip bomb"
        )
    budget.add_entry(info.compress_size)
    buf = io.BytesIO()
    try:
        with zf.open(info) as fh:
            while chunk := fh.read(limits.chunk_bytes):
                if buf.tell() == 0 and (kind := archive_kind(chunk)) is not None:
                    return Member(name, error=f"nested {kind} archive is not opened")
                buf.write(chunk)
                budget.add_chunk(name, len(chunk), buf.tell(), info.compress_size)
                if buf.tell() > limits.max_file_bytes:
                    return Member(
                        name,
                        error="entry expands beyond max_file_bytes "
                        f"{limits.max_file_bytes}",
                    )
    except _ArchiveCapTripped:
        raise
    except NotImplementedError as exc:
        return Member(name, error=f"unsupported ZIP compression ({exc})")
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        return Member(name, error=f"corrupt ZIP entry ({exc})")
    except Exception as exc:  # zlib.error, lzma/bz2 errors from corrupt streams
        return Member(name, error=f"corrupt ZIP entry ({type(exc).__name__}: {exc})")
    data = buf.getvalue()
    return Member(name, size_bytes=len(data), opener=lambda: data)
