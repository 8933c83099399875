"""``python -m bench quality --quick`` prints a valid JSON report within a minute."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest


@pytest.mark.slow
def test_quick_quality_benchmark_prints_valid_json():
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "bench", "quality", "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["benchmark"] == "quality" and report["quick"] is True
    assert {"CT dose_0.25", "CT dose_0.1", "MR sigma_0.05", "MR sigma_0.1"} <= set(
        report["datasets"]
    )
    ct = report["datasets"]["CT dose_0.25"]["methods"]
    for method in ("noisy", "gaussian", "nlm", "tv", "wavelet", "bm3d", "ours"):
        row = ct[method]
        for key in (
            "psnr_window",
            "ssim_window",
            "psnr_full",
            "ssim_full",
            "rmse",
            "residual_clean_corr",
            "seconds_per_512_slice",
        ):
            assert key in row, (method, key)
    assert ct["ours"]["psnr_window"] > ct["noisy"]["psnr_window"]
    assert elapsed < 60
