"""The real-data sections of ``python -m bench quality``: a real thin series, a quiet
scan, low-contrast detectability, the structure safeguard and the OOD check.

Every model output here comes from :func:`inference.denoise_volume` (whole series)
or :func:`inference.runner.denoise_images` (separate slices), the worker's path.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench._observer import cct189, cho_auc, insert_rois, roi_size
from training.neighbours import denoise_each, neighbour_noise_sd, neighbour_test

__all__ = [
    "LCD_DOSES",
    "bm3d_denoise",
    "gaussian_blur",
    "LCD_I0",
    "default_series",
    "lcd_section",
    "ood_section",
    "real_ct_section",
    "read_series",
    "safeguard_section",
]

#: Dose fractions of the LCD study.
LCD_DOSES = (0.10, 0.25, 0.55, 1.00)
#: Unattenuated counts per detector bin at full dose for the LCD phantom: gives
#: about 23 HU of noise at its centre at full dose, as in the LCD-CT tool's sample
#: images.
LCD_I0 = 7.5e5
_REPO = Path(__file__).resolve().parent.parent


def default_series() -> Path:
    """The shared real CT series beside the checkout."""
    return _REPO.parent / "shared" / "data" / "real-ct-head-phantom"


def read_series(path: Path) -> tuple[np.ndarray, list[float]]:
    """A CT series folder as a (z, y, x) HU volume in position order (the order
    the training's held-out range counts in: :func:`dicomio.read_series`) and its
    (z, y, x) spacing in mm."""
    import dicomio

    series = dicomio.read_series(path, "CT")
    if series.shape[0] < 3:
        raise ValueError(f"bench: {path}: fewer than 3 slices of one series")
    return np.stack(series.frames, dtype=np.float32), list(series.spacing_mm)


def bm3d_denoise(image: np.ndarray, sd: float) -> np.ndarray:
    """BM3D (the reference implementation) at noise SD ``sd``, image units."""
    import bm3d

    return np.asarray(bm3d.bm3d(image.astype(np.float64), sigma_psd=sd), np.float32)


def gaussian_blur(image: np.ndarray, _sd: float) -> np.ndarray:
    """A 1-pixel Gaussian blur: what removing structure looks like."""
    from scipy import ndimage

    return ndimage.gaussian_filter(image, 1.0)


def real_ct_section(
    model: Any, series: Path, held_out: tuple[int, int], *, quick: bool
) -> dict[str, Any]:
    """Neighbour-slice measures (``real_ct``) and the quiet-scan residual
    (``quiet_scan``) of the model, BM3D at the data's noise level (not in quick
    mode) and a 1-pixel Gaussian blur, on the held-out slices of a real series."""
    from inference import denoise_volume

    volume, spacing = read_series(series)
    start, stop = held_out
    slices = list(range(max(start + 1, 1), min(stop - 1, volume.shape[0] - 1)))
    if quick:
        slices = slices[:: max(1, len(slices) // 3)][:3]
    # Each slice is denoised alone by a 2D model: the scored ones are enough.
    ours_scored = denoise_volume(volume[slices], model, spacing=spacing, modality="CT")
    ours_volume = volume.astype(np.float32).copy()
    ours_volume[slices] = ours_scored.reconstruction
    # One noise level for the series (the median over the scored slices), so a
    # slice whose neighbours differ in anatomy does not mislead BM3D.
    series_sd = float(np.nanmedian([neighbour_noise_sd(volume, i) for i in slices]))
    noise_sd = [series_sd] * volume.shape[0]
    methods = {"ours": ours_volume}
    if not quick:
        methods["bm3d"] = denoise_each(volume, bm3d_denoise, noise_sd, slices)
    methods["gaussian"] = denoise_each(volume, gaussian_blur, noise_sd, slices)
    scores = {
        name: neighbour_test(volume, out, slices) for name, out in methods.items()
    }
    real = {
        name: {
            key: score[key]
            for key in ("structure", "noise_removed", "spectrum_distance")
        }
        for name, score in scores.items()
    }
    ours_score, bm3d_score = real["ours"], real.get("bm3d")
    real_ct = {
        "series": str(series),
        "slices": scores["ours"]["slices"],
        "noise_sd_hu": scores["ours"]["noise_sd"],
        "structure": ours_score["structure"],
        "noise_removed": ours_score["noise_removed"],
        "spectrum_distance": ours_score["spectrum_distance"],
        "bm3d": bm3d_score,
        "gaussian": real["gaussian"],
        "goal_met": bool(
            ours_score["structure"] <= 0.10
            and ours_score["noise_removed"] >= 0.60
            and (
                bm3d_score is None
                or ours_score["noise_removed"] >= bm3d_score["noise_removed"]
            )
        ),
        "flagged_slices": [slices[i] for i in ours_scored.metrics["flagged_slices"]],
        "warnings": ours_scored.warnings,
    }
    quiet = scores["ours"]
    quiet_scan = {
        "series": str(series),
        "residual_sd": quiet["residual_sd"],
        "noise_sd": quiet["noise_sd"],
        "ratio": quiet["residual_to_noise"],
        "bm3d_residual_sd": scores["bm3d"]["residual_sd"] if "bm3d" in scores else None,
        "goal_met": bool(
            quiet["residual_to_noise"] is not None and quiet["residual_to_noise"] <= 2.0
        ),
    }
    return {
        "real_ct": real_ct,
        "quiet_scan": quiet_scan,
        "_figure": (volume, methods, slices),
    }


def _simulate(
    job: tuple[np.ndarray, float, float, int, tuple[int, ...]],
) -> np.ndarray:
    from dicomio.noise import CTNoiseModel

    image, pixel_mm, dose, count, seed = job
    # One independent stream per (dose, present/absent, batch): never shared.
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    noise = CTNoiseModel(i0=LCD_I0).realisations(
        image, dose, count, pixel_mm=pixel_mm, rng=rng
    )
    return (image[None] + noise).astype(np.float32)


def lcd_section(
    model: Any,
    *,
    realisations: int,
    doses: tuple[float, ...] = LCD_DOSES,
    workers: int = 2,
) -> list[dict[str, Any]]:
    """AUC of the LG-CHO on FBP and denoised CCT189-like images, per dose and
    insert: ``realisations`` signal-present and as many signal-absent images per
    dose, each with its own projection-domain noise."""
    from inference.runner import denoise_images

    phantom = cct189()
    size = roi_size(phantom.diameters_px)
    jobs = []
    for d, dose in enumerate(doses):
        for s, image in enumerate((phantom.present, phantom.absent)):
            for part in range(0, realisations, 25):
                count = min(25, realisations - part)
                jobs.append((image, phantom.pixel_mm, dose, count, (d, s, part)))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        stacks = list(pool.map(_simulate, jobs))
    rows = []
    per_dose = len(jobs) // len(doses)
    for d, dose in enumerate(doses):
        group = stacks[d * per_dose : (d + 1) * per_dose]
        present = np.concatenate(group[: per_dose // 2])
        absent = np.concatenate(group[per_dose // 2 :])
        denoised = {
            "present": np.stack(
                denoise_images(
                    model.network,
                    list(present),
                    model.input_spec,
                    pixel_mm=phantom.pixel_mm,
                )
            ),
            "absent": np.stack(
                denoise_images(
                    model.network,
                    list(absent),
                    model.input_spec,
                    pixel_mm=phantom.pixel_mm,
                )
            ),
        }
        for mask, diameter, contrast, insert_mm in zip(
            phantom.masks,
            phantom.diameters_px,
            phantom.contrasts_hu,
            (3, 5, 7, 10),
            strict=True,
        ):
            width = 2 / 3 * diameter
            fbp, fbp_sd = cho_auc(
                insert_rois(present, mask, size), insert_rois(absent, mask, size), width
            )
            ours, ours_sd = cho_auc(
                insert_rois(denoised["present"], mask, size),
                insert_rois(denoised["absent"], mask, size),
                width,
            )
            rows.append(
                {
                    "dose": dose,
                    "insert_mm": insert_mm,
                    "contrast_hu": contrast,
                    "auc_fbp": round(fbp, 4),
                    "auc_denoised": round(ours, 4),
                    "auc_fbp_sd": round(fbp_sd, 4),
                    "auc_denoised_sd": round(ours_sd, 4),
                    "noise_sd_fbp_hu": round(
                        float(absent[:, 112:144, 112:144].std()), 2
                    ),
                }
            )
    return rows


def lcd_goals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's LCD bars: never below FBP - 0.02; above FBP at 10-25 % dose for
    the 7 and 10 mm inserts."""
    floor = all(r["auc_denoised"] >= r["auc_fbp"] - 0.02 for r in rows)
    gain = all(
        r["auc_denoised"] > r["auc_fbp"]
        for r in rows
        if r["dose"] <= 0.25 and r["insert_mm"] in (7, 10)
    )
    return {"never_below_fbp_minus_0_02": floor, "above_fbp_low_dose_large": gain}


def safeguard_section(models: dict[str, Any]) -> dict[str, Any]:
    """Structure flags of each model, BM3D and a 1-px blur on real slices: the
    calibration cases of the safeguard (:mod:`inference.metrics`)."""
    from inference import denoise_volume
    from inference.metrics import compute_metrics
    from inference.noise import estimate_noise_sd
    from training.data import bundled_dicom_files, read_dicom_slices

    files = bundled_dicom_files()
    cases = {
        "abdomen (pydicom-data explicit_VR-UN)": "explicit_VR-UN.dcm",
        "spine (pydicom-data bad_sequence)": "bad_sequence.dcm",
        "spine (pydicom CT_small)": "CT_small.dcm",
        "head (pydicom-data 693_UNCR)": "693_UNCR.dcm",
    }
    out: dict[str, Any] = {}
    for label, name in cases.items():
        if name not in files:
            continue
        image = read_dicom_slices(files[name], "CT")[0].image
        sd = float(estimate_noise_sd(image)[0])
        outputs = {
            model_name: denoise_volume(image, model, spacing=(1.0, 1.0)).reconstruction
            for model_name, model in models.items()
        }
        outputs["bm3d"] = bm3d_denoise(image, sd)
        outputs["gaussian"] = gaussian_blur(image, sd)
        row = {}
        for method, result in outputs.items():
            metrics = compute_metrics(image, result)
            row[method] = {
                "edge_energy_ratio": round(float(metrics["structure_score_max"]), 3),
                "anatomy_correlation": round(
                    float(metrics["anatomy_correlation_max"]), 3
                ),
                "flagged": bool(metrics["flagged_slices"]),
            }
        out[label] = row
    return out


def ood_section(model: Any) -> dict[str, Any]:
    """The OOD warnings of the model on ordinary real CT (should be none) and on
    inputs it was not trained for (should warn)."""
    from inference import denoise_volume
    from training.data import bundled_dicom_files, read_dicom_slices

    files = bundled_dicom_files()
    ordinary = (
        "explicit_VR-UN.dcm",
        "CT_small.dcm",
        "693_UNCR.dcm",
        "bad_sequence.dcm",
    )
    unusual = {
        "MR slice given as CT (MR_small)": ("MR_small.dcm", "MR"),
        "CT scaled to 0..1 (units not HU)": ("693_UNCR.dcm", "scaled"),
    }
    out: dict[str, Any] = {"ordinary": {}, "unusual": {}}
    for name in ordinary:
        if name in files:
            image = read_dicom_slices(files[name], "CT")[0].image
            result = denoise_volume(image, model, spacing=(1.0, 1.0), modality="CT")
            out["ordinary"][name] = result.warnings
    for label, (name, kind) in unusual.items():
        if name not in files:
            continue
        if kind == "MR":
            image = read_dicom_slices(files[name], "MR")[0].image
            modality = "MR"
        else:
            image = read_dicom_slices(files[name], "CT")[0].image
            image = (image + 1024.0) / 4096.0
            modality = "CT"
        result = denoise_volume(image, model, spacing=(1.0, 1.0), modality=modality)
        out["unusual"][label] = result.warnings
    out["quiet_on_ordinary"] = not any(out["ordinary"].values())
    out["fires_on_unusual"] = all(bool(w) for w in out["unusual"].values())
    return out
