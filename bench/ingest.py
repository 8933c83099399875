"""Ingest speed: our full ingest vs a bare ``pydicom.dcmread`` + ``pixel_array`` loop.

``python -m bench ingest [--slices 300] [--size 512] [--json]`` generates a CT series,
times both over the same files in one run, and prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench._django import throwaway_django


def _bare_rate(files: list[Path]) -> float:
    import pydicom

    start = time.perf_counter()
    for path in files:
        ds = pydicom.dcmread(path)
        ds.pixel_array  # noqa: B018  (decoding is the point)
    return len(files) / (time.perf_counter() - start)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench ingest", description=__doc__)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--json", action="store_true", help="(output is always JSON)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        owner = throwaway_django(root, "bench")
        from dicomio.synthetic import phantom_volume, write_series
        from radiology.services.ingest import upload_ingest

        series_dir = root / "series"
        series_dir.mkdir()
        volume = phantom_volume((args.slices, args.size, args.size), seed=1)
        files = write_series(series_dir, volume, spacing_mm=(1.0, 0.7, 0.7))

        bare = _bare_rate(files)
        start = time.perf_counter()
        report = upload_ingest(sources=[(series_dir, "series")], owner=owner)
        ours_s = time.perf_counter() - start
        bare_again = _bare_rate(files)  # both sides of the ours run: noise shows
        bare_rate = (bare + bare_again) / 2
        ours = len(files) / ours_s
        result = {
            "benchmark": "ingest",
            "files": len(files),
            "shape": [args.slices, args.size, args.size],
            "series": len(report.series),
            "rejected": len(report.rejections),
            "ours_files_per_s": round(ours, 1),
            "bare_pydicom_files_per_s": round(bare_rate, 1),
            "bare_runs_files_per_s": [round(bare, 1), round(bare_again, 1)],
            "ratio": round(ours / bare_rate, 3),
            "goal_ratio": 0.7,
        }
    print(json.dumps(result))
    return 0 if result["series"] == 1 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
