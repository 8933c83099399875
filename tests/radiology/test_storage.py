"""Stored files: atomic batches, never a partial file under a stored name, sweep."""

from __future__ import annotations

import errno
import os
import threading
import time

import numpy as np
import pytest

from radiology import storage


def test_batch_files_appear_only_after_a_clean_exit():
    with storage.BatchWriter() as batch:
        sha = batch.write("a/one.bin", b"abc")
        assert not storage.media_path("a/one.bin").exists()
    assert storage.media_path("a/one.bin").read_bytes() == b"abc"
    assert sha == storage.file_sha256("a/one.bin")


def test_failed_batch_leaves_nothing_behind():
    with pytest.raises(RuntimeError), storage.BatchWriter() as batch:
        batch.write("b/one.bin", b"abc")
        raise RuntimeError("crash before rename")
    folder = storage.media_path("b/one.bin").parent
    assert list(folder.iterdir()) == []


def test_disk_full_during_write_leaves_no_partial_file(monkeypatch):
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    with pytest.raises(OSError) as info:
        with storage.BatchWriter() as batch:
            batch.write("c/out.bin", b"x" * 100)
    assert info.value.errno == errno.ENOSPC
    assert list(storage.media_path("c/out.bin").parent.iterdir()) == []


@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.int16).reshape(2, 3, 4),
        np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
        np.arange(5, dtype=np.float64),
        np.array(7, dtype=np.int16),
    ],
)
def test_array_round_trip_keeps_dtype_and_values(array):
    storage.store_array("d/v.npy", array)
    loaded = storage.load_array("d/v.npy", mmap=False)
    assert loaded.dtype == array.dtype and loaded.shape == array.shape
    assert np.array_equal(loaded, array)


def test_sweep_removes_only_old_temp_files():
    folder = storage.media_path("e/x").parent
    folder.mkdir(parents=True)
    old = folder / ".old.partial"
    fresh = folder / ".fresh.partial"
    keep = folder / "kept.npy"
    for path in (old, fresh, keep):
        path.write_bytes(b"1")
    past = time.time() - 7200
    os.utime(old, (past, past))
    assert storage.sweep_orphans(max_age_s=3600) == 1
    assert not old.exists() and fresh.exists() and keep.exists()


def test_names_outside_media_root_are_refused():
    with pytest.raises(ValueError, match="outside MEDIA_ROOT"):
        storage.media_path("../../etc/passwd")


def test_array_file_is_invisible_until_committed():
    output = storage.ArrayFile("f/out.npy", (2, 3))
    output.array[:] = 7
    assert not storage.media_path("f/out.npy").exists()
    sha = output.commit()
    assert np.array_equal(storage.load_array("f/out.npy"), np.full((2, 3), 7.0))
    assert sha == storage.file_sha256("f/out.npy")
    assert [p.name for p in storage.media_path("f/out.npy").parent.iterdir()] == [
        "out.npy"
    ]


def test_array_file_reuses_an_identical_stored_output():
    for _ in range(2):
        output = storage.ArrayFile("g/out.npy", (4,))
        output.array[:] = 1
        output.commit()
    assert len(list(storage.media_path("g/out.npy").parent.iterdir())) == 1


def test_array_file_on_a_full_disk_raises_enospc_and_leaves_nothing(monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OSError) as info:
        storage.ArrayFile("h/out.npy", (64, 64))
    assert info.value.errno == errno.ENOSPC
    assert list(storage.media_path("h/out.npy").parent.iterdir()) == []


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_streamed_npy_is_byte_identical_to_np_save(tmp_path, dtype):
    array = (np.arange(60, dtype=np.float32).reshape(3, 4, 5) * 1.5 - 7).astype(dtype)
    np.save(tmp_path / "saved.npy", array)
    streamed = b"".join(
        bytes(chunk) for chunk in storage.npy_chunks(array.shape, array.dtype, array)
    )
    assert streamed == (tmp_path / "saved.npy").read_bytes()


def test_streamed_slabs_are_converted_to_the_file_dtype():
    slabs = [np.full((2, 3), v, np.float32) for v in (-1024.0, 0.0, 40.0)]
    with storage.BatchWriter() as batch:
        sha = batch.write_chunks(
            "f/v.npy", storage.npy_chunks((3, 2, 3), np.dtype(np.int16), slabs)
        )
    loaded = storage.load_array("f/v.npy")
    assert loaded.dtype == np.int16 and loaded.shape == (3, 2, 3)
    assert loaded[:, 0, 0].tolist() == [-1024, 0, 40]
    assert sha == storage.file_sha256("f/v.npy")


def test_a_failed_queued_write_fails_the_whole_batch(monkeypatch):
    real_write = storage._write_temp

    def flaky(target, chunks, **options):
        if target.name == "bad.bin":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(target, chunks, **options)

    monkeypatch.setattr(storage, "_write_temp", flaky)
    with pytest.raises(OSError) as info, storage.BatchWriter() as batch:
        batch.write("g/good.bin", b"ok")
        batch.write("g/bad.bin", b"no")
    assert info.value.errno == errno.ENOSPC
    assert list(storage.media_path("g/good.bin").parent.iterdir()) == []


def test_discarded_names_never_appear_and_the_rest_do():
    with storage.BatchWriter() as batch:
        batch.write("d/kept.bin", b"kept")
        batch.write("d/dropped.bin", b"dropped")
        batch.discard("d/dropped.bin")
    folder = storage.media_path("d/kept.bin").parent
    assert sorted(p.name for p in folder.iterdir()) == ["kept.bin"]
    assert storage.media_path("d/kept.bin").read_bytes() == b"kept"


def test_finish_inside_the_block_makes_files_visible_before_it_ends():
    with storage.BatchWriter() as batch:
        batch.write("f/a.bin", b"a")
        batch.write_chunks("f/b.bin", [b"b", b"c"])
        assert not storage.media_path("f/a.bin").exists()
        batch.finish()
        assert storage.media_path("f/a.bin").read_bytes() == b"a"
        assert storage.media_path("f/b.bin").read_bytes() == b"bc"
    folder = storage.media_path("f/a.bin").parent
    assert sorted(p.name for p in folder.iterdir()) == ["a.bin", "b.bin"]


def test_queued_writes_are_fsynced_on_the_writer_threads(monkeypatch):
    synced_on = []
    real_fsync = os.fsync

    def recording(fd):
        synced_on.append(threading.current_thread().name)
        return real_fsync(fd)

    monkeypatch.setattr(storage.os, "fsync", recording)
    with storage.BatchWriter() as batch:
        batch.write("s/one.bin", b"1")
        batch.write("s/two.bin", b"2")
    writer_syncs = [name for name in synced_on if name.startswith("store")]
    assert len(writer_syncs) == 2


@pytest.mark.parametrize(
    ("shape", "runs", "hashed_in_memory"),
    [
        ((5, 4, 3), [(0, 2), (2, 5)], True),
        ((4, 3), [(0, 1)], True),  # a 2D array is one slice
        ((5, 4, 3), [(0, 2)], False),  # not every slice: read back from disk
        ((5, 4, 3), [(2, 5), (0, 2)], False),  # out of order
        ((5, 4, 3), [(0, 2), (0, 2), (2, 5)], False),  # twice
    ],
)
def test_array_file_hashed_slice_by_slice_matches_the_file(
    monkeypatch, shape, runs, hashed_in_memory
):
    rng = np.random.default_rng(0)
    values = rng.normal(size=shape).astype(np.float32)
    output = storage.ArrayFile("k/out.npy", shape)
    stack = output.array if len(shape) == 3 else output.array[None]
    expected = values if len(shape) == 3 else values[None]
    read_back = []
    real = storage._sha256_path
    monkeypatch.setattr(
        storage, "_sha256_path", lambda path: read_back.append(path) or real(path)
    )
    for start, stop in runs:
        stack[start:stop] = expected[start:stop]
        output.hash_slices(start, stop)
    stack[:] = expected
    sha = output.commit()
    assert sha == real(storage.media_path("k/out.npy"))
    assert (not read_back) == hashed_in_memory


def test_a_finished_batch_takes_no_more_files():
    with storage.BatchWriter() as batch:
        batch.write("r/a.bin", b"a")
        batch.finish()
        for late in (
            lambda: batch.write("r/b.bin", b"b"),
            lambda: batch.write_chunks("r/c.bin", [b"c"]),
            lambda: batch.discard("r/a.bin"),
        ):
            with pytest.raises(RuntimeError, match="finished"):
                late()
    folder = storage.media_path("r/a.bin").parent
    assert sorted(p.name for p in folder.iterdir()) == ["a.bin"]


def test_withdraw_removes_what_finish_put_in_place():
    with storage.BatchWriter() as batch:
        batch.write("w/a.bin", b"a")
        batch.write_chunks("w/b.bin", [b"b"])
        batch.finish()
        batch.withdraw()
    assert list(storage.media_path("w/a.bin").parent.iterdir()) == []
