"""inference.allocator: large freed blocks are reused within a pass, released after."""

from __future__ import annotations

import resource
import sys

import numpy as np
import pytest

from inference import allocator
from inference.allocator import (
    keep_freed_blocks,
    release_freed_blocks,
    reusing_freed_blocks,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or allocator._glibc() is None,
    reason="the allocator settings are glibc's",
)

BLOCK = 64 << 20  # above glibc's largest default mmap threshold (32 MB)


def _faults_to_fill_a_block() -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.ones(BLOCK // 4, dtype=np.float32)
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _resident_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def test_a_freed_block_is_reused_without_new_page_faults() -> None:
    assert keep_freed_blocks()
    release_freed_blocks()  # whatever earlier tests left goes back first
    first = _faults_to_fill_a_block()
    again = _faults_to_fill_a_block()
    assert first > 100  # fresh pages, faulted in once
    assert again < first / 20  # the same pages again


def test_release_gives_the_free_memory_back() -> None:
    keep_freed_blocks()
    release_freed_blocks()  # whatever earlier tests left goes back first
    blocks = [np.ones(BLOCK // 4, dtype=np.float32) for _ in range(3)]  # < trim
    held = _resident_mb()
    del blocks
    kept = _resident_mb()
    release_freed_blocks()
    released = _resident_mb()
    assert kept > held - 32  # freed, but kept for reuse
    assert released < kept - 128


def test_a_decorated_pass_releases_even_when_it_raises() -> None:
    @reusing_freed_blocks
    def failing() -> None:
        # Below the trim threshold: without the release they would stay.
        blocks = [np.ones(BLOCK // 4, dtype=np.float32) for _ in range(3)]
        del blocks
        raise RuntimeError("boom")

    release_freed_blocks()
    before = _resident_mb()
    with pytest.raises(RuntimeError, match="boom"):
        failing()
    assert _resident_mb() < before + 64


def test_growth_limit_releases_only_memory_piled_up_past_its_margin() -> None:
    from inference.allocator import GrowthLimit, anonymous_bytes

    keep_freed_blocks()
    release_freed_blocks()
    limit = GrowthLimit(margin_bytes=BLOCK)
    assert not limit.check()  # the first chunk still builds its working set
    assert not limit.check()  # settled here
    assert not limit.check()  # nothing piled up
    blocks = [np.ones(BLOCK // 4, dtype=np.float32) for _ in range(3)]
    pinned = np.ones(1 << 20, dtype=np.float32)  # keeps them off the heap's top
    del blocks
    before = anonymous_bytes()
    assert limit.check() and limit.releases == 1
    assert anonymous_bytes() < before - 2 * BLOCK
    assert not limit.check()
    del pinned
