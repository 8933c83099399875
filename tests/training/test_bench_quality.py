"""``python -m bench quality --quick`` prints a valid JSON report with every section
the real-data evaluation asks for (its speed is the benchmark's business)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from dicomio.synthetic import write_series


@pytest.fixture
def thin_series(tmp_path):
    """A thin 'real' series stand-in: one anatomy in every slice, independent
    correlated noise per slice (the real shared series may not be on this machine)."""
    yy, xx = np.mgrid[:160, :160]
    anatomy = np.where(np.hypot(yy - 80, xx - 80) < 72, 40.0, -1000.0)
    for cy, cx, radius, value in [(60, 70, 12, 300.0), (100, 60, 8, -80.0)]:
        anatomy[np.hypot(yy - cy, xx - cx) < radius] = value
    anatomy[40:120:6, 95:125] = 150.0  # thin bright lines: fine structure
    rng = np.random.default_rng(0)
    noise = ndimage.gaussian_filter(rng.normal(size=(48, 160, 160)), (0, 0.8, 0.8))
    volume = anatomy[None] + noise * (6.0 / noise.std())
    write_series(
        tmp_path / "series", volume.astype(np.float32), spacing_mm=(1, 0.7, 0.7)
    )
    return tmp_path / "series"


@pytest.mark.slow
def test_quick_quality_benchmark_prints_every_section(thin_series):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "quality",
            "--quick",
            "--json",
            "--real-series",
            str(thin_series),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
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
    real = report["real_ct"]
    assert {"structure", "noise_removed", "gaussian"} <= set(real)
    # A 1-pixel blur takes structure, and the measure sees it.
    assert real["gaussian"]["structure"] > 0.2 > abs(real["structure"])
    assert report["quiet_scan"]["noise_sd"] == pytest.approx(6.0, rel=0.25)
    assert {"residual_sd", "ratio"} <= set(report["quiet_scan"])
    rows = report["lcd"]
    assert {(r["dose"], r["insert_mm"]) for r in rows} >= {(0.25, 10), (1.0, 3)}
    for row in rows:
        assert 0.0 <= row["auc_fbp"] <= 1.0 and 0.0 <= row["auc_denoised"] <= 1.0
    assert "real_ct_goal_met" in report["goals"]
