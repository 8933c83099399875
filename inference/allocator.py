"""Host memory for inference: large freed blocks are kept for the next batch.

glibc maps every block above its mmap threshold on its own and unmaps it when freed,
so a denoising pass (tens of MB of activations per batch) would fault in and zero
fresh pages on every batch. :func:`keep_freed_blocks` raises the mmap and trim
thresholds so such blocks come from, and stay on, the heap (up to
:data:`TRIM_THRESHOLD_BYTES`), and caps new heaps at one per CPU;
:func:`release_freed_blocks` hands the free memory back when a pass is over, so an
idle worker does not keep its peak. Why it is needed, measured:
``bench/results/fast-paths.md``.

All of it is a no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

__all__ = [
    "MMAP_THRESHOLD_BYTES",
    "TRIM_THRESHOLD_BYTES",
    "GROWTH_MARGIN_BYTES",
    "GrowthLimit",
    "anonymous_bytes",
    "keep_freed_blocks",
    "release_freed_blocks",
    "reusing_freed_blocks",
]

logger = logging.getLogger(__name__)

#: Blocks up to this size come from the heap (larger ones are still mapped alone).
MMAP_THRESHOLD_BYTES = 1 << 30
#: Free memory at the top of a heap beyond this goes back to the system at once:
#: more than a batch of the default model needs (a 512 x 512 or 1024 x 1024 batch
#: then faults in nothing), little enough to bound what an idle heap keeps.
TRIM_THRESHOLD_BYTES = 256 << 20
#: How far a long pass's anonymous memory may rise above its settled level before
#: :class:`GrowthLimit` releases the freed fragments (``bench/results/fast-paths.md``).
GROWTH_MARGIN_BYTES = 128 << 20

_P = ParamSpec("_P")
_R = TypeVar("_R")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (only glibc has it)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError, TypeError):  # TypeError: CDLL(None) on Windows
        return None
    return libc


@functools.cache
def keep_freed_blocks() -> bool:
    """Keep large freed blocks in the heap for reuse, from now on, for the whole
    process (glibc has no per-thread or per-call setting): in a worker process
    that has denoised once, other work keeps its freed blocks too, until the next
    pass releases them. Idempotent.

    Returns:
        Whether the C library took the settings (``False`` where it is not glibc).
    """
    libc = _glibc()
    if libc is None:
        return False
    # Some glibc versions cap the threshold at its documented maximum, 32 MB.
    threshold = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) or libc.mallopt(
        _M_MMAP_THRESHOLD, 32 << 20
    )
    # New heaps (arenas) stop at one per CPU: threads beyond that share heaps
    # instead of each growing one more (glibc allows 8 per CPU). Heaps already
    # there stay.
    libc.mallopt(_M_ARENA_MAX, max(2, len(os.sched_getaffinity(0))))
    applied = bool(threshold) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    if not applied:
        logger.warning("mallopt refused the inference memory settings")
    return applied


def release_freed_blocks() -> None:
    """Return the heap's free memory to the system (``malloc_trim(0)``)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def reusing_freed_blocks(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Decorate a pass: from its first call on, the process keeps freed blocks
    (:func:`keep_freed_blocks`, which stays in force after the pass), and the free
    memory is released before each call starts (what earlier work in the process
    kept) and when it returns or raises."""

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        keep_freed_blocks()
        release_freed_blocks()
        try:
            return function(*args, **kwargs)
        finally:
            release_freed_blocks()

    return wrapper


def anonymous_bytes() -> int | None:
    """The process's resident anonymous memory (``RssAnon``), or ``None`` where
    ``/proc`` does not tell."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


class GrowthLimit:
    """Keeps a long pass from piling up freed fragments: checked between chunks,
    it releases the free memory (:func:`release_freed_blocks`) whenever the
    process's anonymous memory stands more than ``margin_bytes`` above where it
    stood once the pass had settled (at the second check, when the first chunk's
    working set is there and kept for reuse). A steady pass never releases, so its
    blocks stay reused; one whose heaps fragment is held to that margin, whatever
    the depth of the series.
    """

    def __init__(self, margin_bytes: int = GROWTH_MARGIN_BYTES) -> None:
        self.margin_bytes = margin_bytes
        self.releases = 0
        self._checks = 0
        self._settled: int | None = None

    def check(self) -> bool:
        """Release if over the limit; returns whether it did."""
        self._checks += 1
        if self._checks < 2:
            return False
        anon = anonymous_bytes()
        if anon is None:
            return False
        if self._settled is None:
            self._settled = anon
            return False
        if anon <= self._settled + self.margin_bytes:
            return False
        release_freed_blocks()
        self.releases += 1
        return True
