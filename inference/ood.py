"""Out-of-distribution checks: is a series like the inputs the model was trained on?

At export, :func:`reference_statistics` runs the model over the training inputs and
records, for each statistic below, its distribution over slices (mean, SD, min,
max and the 1/5/50/95/99th percentiles) in ``metadata["ood_reference"]``:

* ``intensity_mean``, ``intensity_sd``: the slice's normalised intensities (after
  ``input_spec`` normalisation), which move with modality, units, protocol and
  anatomy;
* ``noise_sd``: robust noise SD (:func:`inference.metrics.estimate_noise_sd`) in
  normalised units; a denoiser is only trustworthy at noise levels it has seen;
* ``recon_rmse``: RMS of input - output (normalised units), the autoencoder's own
  reconstruction error;
* ``recon_error_ratio``: ``recon_rmse`` / ``noise_sd``. On familiar inputs the
  model removes roughly the noise (ratio near 1); on inputs it cannot represent it
  also removes or invents structure and the ratio grows. This is the classic
  autoencoder anomaly detector, applied to our own inputs.

At inference, :func:`check_ood` takes the median of each statistic over the
series' slices. A size (:data:`SCALE_STATISTICS`: SDs and RMS, which span orders of
magnitude from quiet to noisy training slices) warns when it lies more than
:data:`SCALE_FACTOR` (4) times outside the training [min, max]: an image in other
units or of another modality. Any other statistic warns when it is more than
:data:`Z_THRESHOLD` (4) spreads from the training mean AND outside the training
[min, max]. The spread is the training
SD, floored at 2% of |mean| and at 1e-4 so that a reference computed at a single
noise level does not warn on estimator jitter. Requiring both keeps heavy-tailed
training distributions from warning on values the model has actually seen. A
modality other than the bundle's always warns, as does a bundle without a
reference (then nothing else can be checked).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from inference.bundle import validate_input_spec
from inference.devices import resolve_precision
from inference.metrics import slice_statistics
from inference.runner import Normalisation, normalisation_for, predict

if TYPE_CHECKING:
    from inference.registry import LoadedModel

__all__ = [
    "OOD_SCHEMA",
    "OOD_STATISTICS",
    "Z_THRESHOLD",
    "reference_statistics",
    "ood_statistics",
    "check_ood",
]

OOD_SCHEMA = "ood-reference/1"
OOD_STATISTICS: tuple[str, ...] = (
    "intensity_mean",
    "intensity_sd",
    "noise_sd",
    "recon_rmse",
    "recon_error_ratio",
)
#: Spreads from the training mean beyond which a series statistic warns.
Z_THRESHOLD = 4.0
#: Statistics that are sizes, checked by a factor outside their training range.
SCALE_STATISTICS: frozenset[str] = frozenset({"intensity_sd", "noise_sd", "recon_rmse"})
#: How far outside the training range (as a factor) a size may be.
SCALE_FACTOR = 4.0
_RELATIVE_FLOOR = 0.02
_ABSOLUTE_FLOOR = 1e-4
_PERCENTILES = (1, 5, 50, 95, 99)


def ood_statistics(
    per_slice: Mapping[str, np.ndarray], norm: Normalisation
) -> dict[str, list[float]]:
    """OOD statistics per slice from :func:`inference.metrics.slice_statistics`.

    Args:
        per_slice: per-slice statistics in original units.
        norm: the normalisation the series was fed with.

    Returns:
        ``{statistic: [value per slice]}`` for :data:`OOD_STATISTICS`, normalised
        units; non-finite values are dropped.
    """
    scale = norm.scale
    noise = np.asarray(per_slice["noise_sd_before"], dtype=np.float64)
    rms = np.asarray(per_slice["residual_rms"], dtype=np.float64)
    floor = _ABSOLUTE_FLOOR * scale
    values = {
        "intensity_mean": (np.asarray(per_slice["mean"]) - norm.offset) / scale,
        "intensity_sd": np.asarray(per_slice["sd"]) / scale,
        "noise_sd": noise / scale,
        "recon_rmse": rms / scale,
        "recon_error_ratio": rms / np.maximum(noise, floor),
    }
    return {
        name: [
            float(v) for v in np.asarray(array, dtype=np.float64) if math.isfinite(v)
        ]
        for name, array in values.items()
    }


def reference_statistics(
    model: LoadedModel | nn.Module,
    slices: Iterable[np.ndarray],
    *,
    input_spec: Mapping[str, Any] | None = None,
    batch_size: int | None = None,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Distribution of the OOD statistics over training inputs, for the metadata.

    Args:
        model: a :class:`~inference.registry.LoadedModel`, or a network (then
            ``input_spec`` is required unless the module has an ``input_spec``
            attribute). The network runs on the device its parameters are on.
        slices: training inputs in original units (HU for CT): (y, x) slices or
            (z, y, x) volumes. With percentile normalisation each array is
            normalised on its own, so pass whole volumes to match the engine.
        input_spec: the bundle's ``input_spec`` for a bare network.
        batch_size: slices per forward pass, default ``input_spec["batch_size"]``.
        precision: "fp32" (default), "bf16" or "fp16".

    Returns:
        JSON-safe ``{"schema", "n_slices", "modality", "units", "normalisation",
        "z_threshold", "statistics": {name: {"mean", "sd", "min", "max", "p01",
        "p05", "p50", "p95", "p99"}}}``.

    Raises:
        ValueError: without an input spec, with no slices, or for non-finite or
            non-2D/3D arrays.
    """
    network, spec = _network_and_spec(model, input_spec)
    device = _device_of(network)
    precision = resolve_precision(precision, device)
    batch = int(batch_size or spec["batch_size"])
    collected: dict[str, list[float]] = {name: [] for name in OOD_STATISTICS}
    was_training = network.training
    network.eval()
    try:
        for stack in _stacks(slices, spec, batch):
            norm = normalisation_for(stack, spec)
            out = np.empty_like(stack)
            predict(
                stack,
                network,
                spec=spec,
                norm=norm,
                device=device,
                precision=precision,
                batch_size=batch,
                out=out,
            )
            for name, values in ood_statistics(
                slice_statistics(stack, out), norm
            ).items():
                collected[name].extend(values)
    finally:
        network.train(was_training)
    n_slices = len(collected["intensity_mean"])
    if n_slices == 0:
        raise ValueError("reference_statistics: no slices given")
    return {
        "schema": OOD_SCHEMA,
        "n_slices": n_slices,
        "modality": spec["modality"],
        "units": spec["units"],
        "normalisation": dict(spec["normalisation"]),
        "z_threshold": Z_THRESHOLD,
        "statistics": {name: _describe(values) for name, values in collected.items()},
    }


def check_ood(
    volume_stats: Mapping[str, Any],
    reference: Mapping[str, Any] | None,
    *,
    modality: str | None,
    expected_modality: str | None,
) -> list[str]:
    """Warnings for a series that does not look like the training inputs.

    Args:
        volume_stats: ``{statistic: per-slice values or one value}`` from
            :func:`ood_statistics`.
        reference: the bundle's ``ood_reference`` (``None`` when it has none).
        modality: the series' modality (DICOM ``Modality``), ``None`` if unknown.
        expected_modality: the bundle's ``input_spec["modality"]``.

    Returns:
        Human-readable warnings; empty when the series looks in-distribution.
    """
    warnings: list[str] = []
    if modality and expected_modality and modality.upper() != expected_modality.upper():
        warnings.append(
            f"modality {modality} does not match the model's {expected_modality}: the "
            "output is unreliable"
        )
    if not reference or not reference.get("statistics"):
        warnings.append(
            "the model has no OOD reference: the input could not be checked"
        )
        return warnings
    threshold = float(reference.get("z_threshold", Z_THRESHOLD))
    for name, ref in reference["statistics"].items():
        if not ref or name not in volume_stats:
            continue
        value = _series_value(volume_stats[name])
        if value is None:
            continue
        if name in SCALE_STATISTICS:
            # Sizes (SDs, RMS) span orders of magnitude in training, from a
            # near-noiseless slice to a very noisy one: a z-score over that range
            # misses an input in other units; a factor outside the range does not.
            low, high = float(ref["min"]), float(ref["max"])
            if value < low / SCALE_FACTOR or value > high * SCALE_FACTOR:
                side = "above" if value > high else "below"
                warnings.append(
                    f"{name} {value:.4g} is more than {SCALE_FACTOR:g}x {side} the "
                    f"training range {low:.4g} to {high:.4g}: the input is unlike "
                    "the training data (other units or modality?)"
                )
            continue
        spread = max(
            float(ref["sd"]), _RELATIVE_FLOOR * abs(float(ref["mean"])), _ABSOLUTE_FLOOR
        )
        z = (value - float(ref["mean"])) / spread
        outside = value < float(ref["min"]) or value > float(ref["max"])
        if abs(z) > threshold and outside:
            side = "above" if z > 0 else "below"
            warnings.append(
                f"{name} {value:.4g} is {abs(z):.1f} SD {side} the training mean "
                f"{float(ref['mean']):.4g} (training range {float(ref['min']):.4g} to "
                f"{float(ref['max']):.4g}, threshold {threshold:g} SD): the input is "
                "unlike the training data"
            )
    return warnings


def _network_and_spec(
    model: Any, input_spec: Mapping[str, Any] | None
) -> tuple[nn.Module, dict[str, Any]]:
    if isinstance(model, nn.Module):
        spec = (
            input_spec if input_spec is not None else getattr(model, "input_spec", None)
        )
        if spec is None:
            raise ValueError(
                "reference_statistics: a bare network needs input_spec=... (the "
                "bundle's input_spec)"
            )
        return model, validate_input_spec(spec)
    return model.network, validate_input_spec(input_spec or model.input_spec)


def _device_of(network: nn.Module) -> torch.device:
    for parameter in network.parameters():
        return parameter.device
    return torch.device("cpu")


def _stacks(
    slices: Iterable[np.ndarray], spec: Mapping[str, Any], batch: int
) -> Iterable[np.ndarray]:
    """Yield (z, y, x) float32 stacks; same-shape 2D slices are grouped into batches."""
    pending: list[np.ndarray] = []
    group = spec["normalisation"]["kind"] == "linear" and spec["spatial_dims"] == 2
    for index, item in enumerate(slices):
        array = np.asarray(item, dtype=np.float32)
        if array.ndim not in (2, 3) or array.size == 0:
            raise ValueError(
                f"reference_statistics: slice {index}: expected a non-empty (y, x) or "
                f"(z, y, x) array, got shape {array.shape}"
            )
        if not np.isfinite(array).all():
            raise ValueError(
                f"reference_statistics: slice {index}: contains NaN or inf"
            )
        if array.ndim == 3 or not group:
            if pending:
                yield np.stack(pending)
                pending = []
            yield array if array.ndim == 3 else array[None]
            continue
        if pending and (pending[0].shape != array.shape or len(pending) >= batch):
            yield np.stack(pending)
            pending = []
        pending.append(array)
    if pending:
        yield np.stack(pending)


def _describe(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    summary = {
        "mean": float(array.mean()),
        "sd": float(array.std()),
        "min": float(array.min()),
        "max": float(array.max()),
    }
    for q, value in zip(_PERCENTILES, np.percentile(array, _PERCENTILES), strict=True):
        summary[f"p{q:02d}"] = float(value)
    return summary


def _series_value(values: Any) -> float | None:
    array = np.atleast_1d(np.asarray(values, dtype=np.float64))
    array = array[np.isfinite(array)]
    return float(np.median(array)) if array.size else None
