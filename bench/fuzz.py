"""Long property-based fuzz of the ingest entry point (``upload_ingest``).

``python -m bench fuzz [--seconds 300] [--batch 200]`` feeds Hypothesis-generated
uploads (mutated real and synthetic DICOM files, random bytes, ZIP archives with
hostile entry names) to the ingest service on a throw-away SQLite database and
prints one JSON object with the number of inputs tried. Any exception that is not
the project's own rejection is a bug: it is printed with the input that caused it;
the run goes on, reports each distinct failure once and exits 1.
``tests/radiology/test_fuzz_ingest.py`` runs the same properties briefly.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from functools import cache
from pathlib import Path

from hypothesis import strategies as st

from bench._django import throwaway_django

__all__ = ["check_upload", "seed_files", "uploads"]

_TESTDATA = (
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "JPEG-LL.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "rtplan.dcm",
)
_HOSTILE_NAMES = st.sampled_from(
    ["../../etc/passwd", "/abs/x.dcm", "a\x00b.dcm", "x" * 600, "..", "", "é/ü.dcm"]
)


@cache
def seed_files() -> tuple[bytes, ...]:
    """Valid files to mutate: a small synthetic CT series and pydicom's test files."""
    from pydicom.data import get_testdata_file

    from dicomio.synthetic import phantom_volume, write_series

    with tempfile.TemporaryDirectory(prefix="fuzz-seed-") as tmp:
        paths = write_series(
            Path(tmp), phantom_volume((3, 16, 16), seed=4), spacing_mm=(2, 1, 1)
        )
        synthetic = tuple(p.read_bytes() for p in sorted(paths))
    bundled = tuple(Path(get_testdata_file(n)).read_bytes() for n in _TESTDATA)
    return synthetic + bundled


@st.composite
def _mutated(draw) -> bytes:
    seeds = seed_files()
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 8))):
        offset = draw(st.integers(0, len(data) - 1))
        data[offset] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(max_size=64))
    if draw(st.booleans()):
        del data[draw(st.integers(0, len(data))) :]
    return bytes(data)


_payloads = st.one_of(
    _mutated(),
    st.deferred(lambda: st.sampled_from(seed_files())),
    st.binary(max_size=2048),
    st.just(b""),
)


@st.composite
def _archive(draw) -> bytes:
    buffer = io.BytesIO()
    method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for index in range(draw(st.integers(0, 4))):
            name = draw(st.one_of(_HOSTILE_NAMES, st.text(min_size=1, max_size=40)))
            info = zipfile.ZipInfo(name or f"e{index}")
            info.compress_type = method
            if draw(st.integers(0, 9)) == 0:
                info.create_system = 3
                info.external_attr = 0o120777 << 16  # a symbolic link entry
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # duplicate entry names are wanted
                archive.writestr(info, draw(_payloads))
    data = bytearray(buffer.getvalue())
    if draw(st.integers(0, 4)) == 0 and data:
        del data[draw(st.integers(0, len(data) - 1)) :]
    return bytes(data)


_names = st.one_of(
    _HOSTILE_NAMES, st.text(min_size=0, max_size=80), st.just("IM0001.dcm")
)


def uploads() -> st.SearchStrategy[list[tuple[str, bytes]]]:
    """One upload: 1 to 6 ``(display name, bytes)`` files, some of them ZIP archives."""
    return st.lists(
        st.tuples(_names, st.one_of(_payloads, _archive())), min_size=1, max_size=6
    )


def check_upload(files: list[tuple[str, bytes]], owner, workdir: Path) -> int:
    """Ingest ``files`` and check the report; returns the number of rejections.

    Raises:
        AssertionError: when the report breaks a property (an unnamed rejection,
            files of a stored series lost).
        Exception: anything else ``upload_ingest`` lets escape is a bug.
    """
    from radiology.services.fixity import fixity_check
    from radiology.services.ingest import upload_ingest

    sources = []
    for index, (name, data) in enumerate(files):
        path = workdir / f"{index:03d}"
        path.write_bytes(data)
        sources.append((path, name))
    report = upload_ingest(sources=sources, owner=owner)
    for rejection in report.rejections:
        assert isinstance(rejection["name"], str) and rejection["name"], rejection
        assert isinstance(rejection["reason"], str) and rejection["reason"], rejection
        assert "\x00" not in rejection["name"], rejection
    for series in report.series:
        assert fixity_check(series=series).ok, f"series {series.pk} fails fixity"
    return len(report.rejections)


def _setup_django(root: Path):
    user = throwaway_django(root, "fuzz")
    # Rejections are the expected outcome here; pydicom's warnings about them are noise.
    logging.disable(logging.ERROR)
    return user


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench fuzz", description=__doc__)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument(
        "--batch", type=int, default=200, help="examples per Hypothesis run"
    )
    args = parser.parse_args(argv)

    from hypothesis import HealthCheck, Phase, given, settings

    warnings.simplefilter("ignore")
    counts = {"inputs": 0, "files": 0, "rejections": 0}
    failures: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as tmp:
        root = Path(tmp)
        owner = _setup_django(root)
        workdir = root / "upload"
        workdir.mkdir()
        deadline = time.monotonic() + args.seconds

        # No shrinking: a long run keeps going after a failure and reports each
        # distinct one (by exception type and the line that raised it) once.
        @settings(
            max_examples=args.batch,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(files=uploads())
        def run(files):
            if time.monotonic() > deadline:
                return
            counts["inputs"] += 1
            counts["files"] += len(files)
            try:
                counts["rejections"] += check_upload(files, owner, workdir)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # a Rust decoder's panic is a BaseException
                frame = traceback.extract_tb(exc.__traceback__)[-1]
                key = f"{type(exc).__name__} at {frame.filename}:{frame.lineno}"
                if key not in failures:
                    failures[key] = {
                        "error": f"{type(exc).__name__}: {exc}"[:500],
                        "input": repr(files)[:1500],
                        "traceback": traceback.format_exc()[-3000:],
                    }
                raise RuntimeError(key) from None

        started = time.monotonic()
        batches = 0
        while time.monotonic() < deadline:
            try:
                run()
            except Exception:
                pass  # recorded in ``failures``
            batches += 1
        elapsed = time.monotonic() - started
    print(
        json.dumps(
            {
                "benchmark": "fuzz",
                "target": "radiology.services.ingest.upload_ingest",
                "engine": "hypothesis",
                "seconds": round(elapsed, 1),
                "batches": batches,
                "inputs_tried": counts["inputs"],
                "files_tried": counts["files"],
                "rejections": counts["rejections"],
                "inputs_per_s": round(counts["inputs"] / max(elapsed, 1e-9), 1),
                "failures": list(failures.values()),
            },
            indent=2,
        )
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
