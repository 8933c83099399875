"""Denoise one series with a loaded bundle: the pure entry point the worker calls."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inference.bundle import sha256_bytes
from inference.devices import resolve_precision
from inference.metrics import slice_statistics, summarise
from inference.ood import check_ood, ood_statistics
from inference.provenance import build_provenance, utc_now
from inference.registry import LoadedModel
from inference.runner import WINDOW_OVERLAP, normalisation_for, predict

__all__ = ["DenoiseResult", "denoise_volume"]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]

# Share of the progress bar before inference starts and when it ends; the rest of
# the bar is post-processing (metrics, hashes), which is short next to inference.
_PROGRESS_INFER_START = 0.05
_PROGRESS_INFER_END = 0.9


@dataclass
class DenoiseResult:
    """What :func:`denoise_volume` returns.

    Attributes:
        reconstruction: denoised series, float32, same shape and units as the input.
        residual: ``input - reconstruction`` in float32, same shape and units.
        metrics: JSON-safe quality metrics (:func:`inference.metrics.summarise`)
            plus ``"ood"``, the series' out-of-distribution statistics.
        provenance: JSON-safe record of model, code, hardware, parameters, hashes.
        warnings: human-readable warnings (modality mismatch, out-of-distribution
            input, structure in the residual).
        timings_s: seconds per stage: ``load`` (the ``load_model`` call that made
            the model, hash check included), ``preprocess``, ``infer``,
            ``postprocess`` and ``total``.
    """

    reconstruction: np.ndarray
    residual: np.ndarray
    metrics: dict[str, Any]
    provenance: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)


def denoise_volume(
    volume: np.ndarray,
    model: LoadedModel,
    *,
    spacing: Sequence[float],
    progress: ProgressCallback | None = None,
    batch_size: int | None = None,
    precision: str = "auto",
    modality: str | None = None,
) -> DenoiseResult:
    """Denoise a CT/MR series and measure what was removed.

    Args:
        volume: (z, y, x) or (y, x) array in original units (HU for CT); any real
            dtype, converted to float32.
        model: from :func:`inference.load_model`; runs on ``model.device``.
        spacing: voxel spacing in mm, one value per axis of ``volume``; recorded in
            the provenance.
        progress: called as ``progress(fraction, stage)`` with a strictly
            increasing fraction in [0, 1], once per batch and last with 1.0.
        batch_size: slices (2D) or windows (3D) per forward pass; default the
            bundle's ``input_spec["batch_size"]``.
        precision: "auto" (bf16, or fp16, with autocast on CUDA; fp32 on CPU),
            "fp32", "bf16" or "fp16" (CUDA only).
        modality: the series' DICOM modality; a mismatch with the bundle warns.

    Returns:
        A :class:`DenoiseResult`.

    Raises:
        ValueError: for a volume that is not 2D/3D, is empty, is not real-valued
            or holds NaN/inf, a spacing that does not match it, or bad options.
    """
    started_at = utc_now()
    t_start = time.perf_counter()
    device = model.device
    resolved_precision = resolve_precision(precision, device)
    spec = model.input_spec
    batch = _check_batch_size(batch_size, spec)
    reporter = _Progress(progress)
    reporter(0.0, "preprocess")

    x = _check_volume(volume)
    spacing_mm = _check_spacing(spacing, x.ndim)
    stack = x if x.ndim == 3 else x[None]
    input_sha256 = sha256_bytes(x.data.cast("B"))
    norm = normalisation_for(stack, spec)
    t_pre = time.perf_counter()

    reconstruction = np.empty_like(x)
    span = _PROGRESS_INFER_END - _PROGRESS_INFER_START
    predict(
        stack,
        model.network,
        spec=spec,
        norm=norm,
        device=device,
        precision=resolved_precision,
        batch_size=batch,
        out=reconstruction if x.ndim == 3 else reconstruction[None],
        progress=lambda done, total: reporter(
            _PROGRESS_INFER_START + span * done / total, f"infer {done}/{total}"
        ),
    )
    t_infer = time.perf_counter()

    residual = np.subtract(x, reconstruction, dtype=np.float32)
    per_slice = slice_statistics(
        stack,
        reconstruction if x.ndim == 3 else reconstruction[None],
        residual if x.ndim == 3 else residual[None],
    )
    metrics = summarise(per_slice)
    volume_stats = ood_statistics(per_slice, norm)
    metrics["ood"] = {
        name: float(np.median(values)) if values else None
        for name, values in volume_stats.items()
    }
    warnings = check_ood(
        volume_stats,
        model.metadata.get("ood_reference"),
        modality=modality,
        expected_modality=model.modality,
    )
    if metrics["flagged_slices"]:
        warnings.append(
            f"residual shows structure in {len(metrics['flagged_slices'])} slice(s) "
            f"(score {metrics['structure_score_max']:.2f} > "
            f"{metrics['structure_threshold']}): the model may have removed anatomy"
        )
    output_sha256 = sha256_bytes(reconstruction.data.cast("B"))
    t_post = time.perf_counter()

    timings = {
        "load": round(model.load_s, 6),
        "preprocess": round(t_pre - t_start, 6),
        "infer": round(t_infer - t_pre, 6),
        "postprocess": round(t_post - t_infer, 6),
        "total": round(t_post - t_start, 6),
    }
    roi = spec.get("roi_size") or getattr(model.network, "fixed_roi", None)
    parameters = {
        "shape": list(x.shape),
        "input_dtype": str(np.asarray(volume).dtype),
        "spacing_mm": spacing_mm,
        "modality": modality,
        "batch_size": batch,
        "precision_requested": precision,
        "normalisation": norm.as_dict(),
        "roi_size": list(roi) if roi else None,
        "window_overlap": WINDOW_OVERLAP if roi or spec["spatial_dims"] == 3 else None,
        "size_multiple": spec.get("size_multiple", 1),
        "padding": "reflect",
    }
    provenance = build_provenance(
        model,
        device=device,
        precision=resolved_precision,
        parameters=parameters,
        input_sha256=input_sha256,
        output_sha256=output_sha256,
        started_at=started_at,
        finished_at=utc_now(),
    )
    provenance["timings_s"] = timings
    logger.info(
        "denoise_volume: %s shape=%s device=%s precision=%s ++ Latencies => "
        "Total: %.4f; Load: %.4f; Pre: %.4f; Inferer: %.4f; Post: %.4f",
        model.ref,
        tuple(x.shape),
        device,
        resolved_precision,
        timings["total"],
        timings["load"],
        timings["preprocess"],
        timings["infer"],
        timings["postprocess"],
    )
    for warning in warnings:
        logger.warning("denoise_volume: %s: %s", model.ref, warning)
    reporter(1.0, "done")
    return DenoiseResult(
        reconstruction=reconstruction,
        residual=residual,
        metrics=metrics,
        provenance=provenance,
        warnings=warnings,
        timings_s=timings,
    )


class _Progress:
    """Forwards only strictly increasing fractions, so callers can trust the order."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self._callback = callback
        self._last = -1.0

    def __call__(self, fraction: float, stage: str) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        if self._callback is None or fraction <= self._last:
            return
        self._last = fraction
        self._callback(fraction, stage)


def _check_volume(volume: Any) -> np.ndarray:
    array = np.asarray(volume)
    if array.ndim not in (2, 3):
        raise ValueError(
            f"denoise_volume: expected a (y, x) or (z, y, x) array, got shape "
            f"{array.shape}"
        )
    if array.size == 0:
        raise ValueError(f"denoise_volume: the volume is empty (shape {array.shape})")
    if array.dtype.kind not in "biuf":
        raise ValueError(
            f"denoise_volume: expected real numbers, got dtype {array.dtype}"
        )
    x = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(
            "denoise_volume: the volume contains NaN or inf (after conversion to "
            "float32)"
        )
    return x


def _check_spacing(spacing: Sequence[float], ndim: int) -> list[float]:
    try:
        values = [float(v) for v in spacing]
    except (TypeError, ValueError):
        raise ValueError(
            f"denoise_volume: spacing must be {ndim} numbers in mm, got {spacing!r}"
        ) from None
    if len(values) != ndim or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(
            f"denoise_volume: spacing must be {ndim} positive numbers in mm (one per "
            f"axis of the volume), got {spacing!r}"
        )
    return values


def _check_batch_size(batch_size: int | None, spec: dict[str, Any]) -> int:
    batch = spec.get("batch_size", 1) if batch_size is None else batch_size
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(
            f"denoise_volume: batch_size must be an integer >= 1, got {batch!r}"
        )
    return batch
