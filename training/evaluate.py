"""Held-out evaluation of a network: phantoms with unseen seeds plus real slices."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from inference.networks import DenoisingNetwork
from inference.runner import denoise_images
from training.data import (
    HELD_OUT_PHANTOM_SEED,
    REAL_SLICES,
    Pair,
    body_mask,
    make_pairs,
    phantom_slices,
    real_slices,
)
from training.metrics import image_metrics, mean_metrics

__all__ = ["held_out_pairs", "level_key", "evaluate_network", "describe_held_out"]


def level_key(modality: str, level: float) -> str:
    """Metric group of a noise level: ``dose_0.25`` (CT) or ``sigma_0.05`` (MR)."""
    return f"{'dose' if modality == 'CT' else 'sigma'}_{level:g}"


def held_out_pairs(
    modality: str,
    levels: Sequence[float],
    *,
    count: int,
    size: int,
    real: bool = True,
    seed: int = HELD_OUT_PHANTOM_SEED,
) -> dict[float, list[Pair]]:
    """Held-out noisy/clean pairs per level: ``count`` phantoms from seed ``seed``
    (at or above :data:`HELD_OUT_PHANTOM_SEED`) plus, with ``real``, the held-out
    real slices. The noise seed is fixed, so every caller sees the same inputs."""
    slices = phantom_slices(modality, count, seed=seed, size=size, held_out=True)
    if real:
        slices += real_slices(modality, "held_out")
    return {
        level: make_pairs(slices, modality, [level], seed=seed + 7919 * (i + 1))
        for i, level in enumerate(levels)
    }


def describe_held_out(
    modality: str, count: int, size: int, real: bool
) -> dict[str, Any]:
    """JSON description of the held-out set, for metadata and model cards."""
    return {
        "phantoms": f"{count} {modality} phantoms {size}x{size}, seeds "
        f"{HELD_OUT_PHANTOM_SEED}..{HELD_OUT_PHANTOM_SEED + count - 1}",
        "real": list(REAL_SLICES[modality]["held_out"]) if real else [],
    }


def _score(
    network: DenoisingNetwork,
    input_spec: Mapping[str, Any],
    pairs: Sequence[Pair],
    batch_size: int,
) -> dict[str, float]:
    modality = input_spec["modality"]
    started = time.perf_counter()
    outputs = denoise_images(
        network,
        [p.noisy for p in pairs],
        input_spec,
        batch_size=batch_size,
        pixel_mm=[p.clean.pixel_mm for p in pairs],
    )
    elapsed = time.perf_counter() - started
    rows, noisy_rows = [], []
    for pair, out in zip(pairs, outputs, strict=True):
        clean = pair.clean.image
        body = body_mask(clean, modality)
        lesions = pair.clean.lesion_mask
        rows.append(
            image_metrics(
                clean,
                out,
                pair.noisy,
                modality=modality,
                body=body,
                lesion_mask=lesions,
            )
        )
        noisy_rows.append(
            image_metrics(
                clean,
                pair.noisy,
                pair.noisy,
                modality=modality,
                body=body,
                lesion_mask=lesions,
            )
        )
    summary = mean_metrics(rows)
    noisy = mean_metrics(noisy_rows)
    summary["noisy_psnr_window"] = noisy["psnr_window"]
    summary["noisy_ssim_window"] = noisy["ssim_window"]
    summary["seconds_per_slice"] = elapsed / len(pairs)
    summary["slices"] = float(len(pairs))
    return {
        k: round(float(v), 4) if np.isfinite(v) else float("nan")
        for k, v in summary.items()
    }


def evaluate_network(
    network: DenoisingNetwork,
    input_spec: Mapping[str, Any],
    pairs_by_level: Mapping[float, Sequence[Pair]],
    *,
    batch_size: int = 8,
) -> dict[str, dict[str, float]]:
    """Score a network on held-out pairs.

    Returns:
        ``{level_key: metrics}`` over the phantoms and ``{level_key + "_real":
        metrics}`` over the real scans (see :func:`training.metrics.image_metrics`),
        means over slices, plus ``noisy_psnr_window`` and ``seconds_per_slice``.
    """
    modality = input_spec["modality"]
    results: dict[str, dict[str, float]] = {}
    for level, all_pairs in pairs_by_level.items():
        # Phantoms have a true clean image; real scans are scored against their
        # full-dose original, which carries its own noise, so they are kept apart.
        groups = {
            level_key(modality, level): [
                p for p in all_pairs if p.clean.lesion_mask is not None
            ],
            level_key(modality, level) + "_real": [
                p for p in all_pairs if p.clean.lesion_mask is None
            ],
        }
        for key, pairs in groups.items():
            if pairs:
                results[key] = _score(network, input_spec, pairs, batch_size)
    return results
