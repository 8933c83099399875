"""Decode compressed pixel data in a child process: a crashing decoder costs one file.

The JPEG, JPEG-LS, JPEG 2000 and RLE decoders are C, C++ and Rust libraries. On corrupt
input some of them panic (a ``BaseException``) or abort the whole process (GDCM throws
a C++ exception nobody catches). Here each compressed file is decoded in a child of a
small process pool, under a memory cap (``RLIMIT_AS``) and a time limit: a crash, an
allocation past the cap or a hang ends that child and becomes a ``DecodeFailed`` for
that one file, while the web server or worker carries on. Native (uncompressed) pixel
data never comes here: numpy reads it in-process.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import resource
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

import numpy as np

__all__ = ["DecodeFailed", "decode_isolated", "shutdown"]

#: Address-space cap of a decoding child; env ``DICOM_DECODE_MAX_BYTES``.
DEFAULT_MAX_BYTES = 4 * 1024**3
#: Seconds one file may take to decode; env ``DICOM_DECODE_TIMEOUT_S``.
DEFAULT_TIMEOUT_S = 120.0

_lock = threading.Lock()
#: One decode at a time: a hang or crash restarts the pool, which must not take
#: down a file that another ingest thread has queued behind it.
_decode_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


class DecodeFailed(Exception):
    """The decoder crashed, ran out of its memory cap, or took too long.

    Cause: corrupt or hostile compressed pixel data (or a decoder bug).
    Fix: none for the file as it is; the caller rejects that file and goes on.
    """


def _limit_child(max_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))


def _decode(data: bytes) -> np.ndarray:
    import pydicom

    return pydicom.dcmread(io.BytesIO(data)).pixel_array


def _get_pool() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            max_bytes = int(os.environ.get("DICOM_DECODE_MAX_BYTES", DEFAULT_MAX_BYTES))
            # forkserver: children never inherit the web server's threads or locks.
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["numpy", "pydicom"])
            _pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=context,
                initializer=_limit_child,
                initargs=(max_bytes,),
            )
        return _pool


def shutdown() -> None:
    """Stop the decoding child (it is started again on the next decode)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)


def decode_isolated(data: bytes, timeout_s: float | None = None) -> np.ndarray:
    """``pydicom.dcmread(data).pixel_array``, computed in a disposable child process.

    Raises:
        DecodeFailed: the child crashed, hit its memory cap or its time limit, or the
            decoder raised; the message says which.
    """
    if timeout_s is None:
        timeout_s = float(os.environ.get("DICOM_DECODE_TIMEOUT_S", DEFAULT_TIMEOUT_S))
    with _decode_lock:
        return _decode_in_child(data, timeout_s)


def _decode_in_child(data: bytes, timeout_s: float) -> np.ndarray:
    future = _get_pool().submit(_decode, data)
    try:
        return future.result(timeout=timeout_s)
    except FutureTimeout as exc:
        shutdown()
        raise DecodeFailed(f"decoder took longer than {timeout_s:.0f} s") from exc
    except BrokenProcessPool as exc:
        shutdown()
        raise DecodeFailed("decoder crashed (process ended abnormally)") from exc
    except MemoryError as exc:
        raise DecodeFailed("decoder ran out of its memory cap") from exc
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a Rust panic is a BaseException, not an Exception
        text = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise DecodeFailed(f"decoder failed: {text}") from exc
