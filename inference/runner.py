"""Feed slices through a denoiser: normalise, pad, batch, stitch, restore units."""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer
from monai.transforms import Pad
from monai.utils import convert_to_tensor
from torch import nn

from inference.devices import autocast
from inference.fused import cpu_network
from inference.noise import (
    estimate_noise_sd,
    keep_low_frequencies,
    limit_residual,
    noise_level_map,
)

__all__ = [
    "Normalisation",
    "body_threshold",
    "denoise_images",
    "faster_cpu_precision",
    "input_channels",
    "needs_noise_estimate",
    "normalisation_for",
    "padding_for",
    "predict",
    "predict_slices",
    "reduced_precision_ok",
    "reflect_pad",
]

logger = logging.getLogger(__name__)

#: Fraction of overlap between neighbouring windows of the sliding-window inferer.
WINDOW_OVERLAP = 0.25
#: How much faster than fp32 bf16 must run on a CPU for "auto" to choose it.
BF16_MIN_SPEEDUP = 1.1
#: Least noise SD, in normalised units (0.08 x 200 = 16 HU on CT), at which a slice
#: may run in a reduced precision (bf16, fp16); quieter slices run in fp32. A
#: network's features carry the image's own intensity and bf16 keeps 8 bits of it,
#: which costs quiet slices most of their noise removal
#: (bench/results/precision_noise.md).
REDUCED_PRECISION_MIN_NOISE = 0.08
#: Timed passes per precision in :func:`faster_cpu_precision`, after one untimed.
_CHOICE_REPEATS = 2

_REFLECT_PAD = Pad(mode="reflect")

_lock = threading.Lock()
#: network -> (chosen precision, ms per slice for each)
_choices: weakref.WeakKeyDictionary[nn.Module, tuple[str, dict[str, float]]]
_choices = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Normalisation:
    """``x_norm = (x - offset) / scale`` as applied to one series.

    Attributes:
        kind: "linear" (fixed offset/scale from the bundle) or "percentile".
        offset: subtracted first, in the input's units.
        scale: divided by next, in the input's units; always > 0.
    """

    kind: str
    offset: float
    scale: float

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "offset": self.offset, "scale": self.scale}


def normalisation_for(volume: np.ndarray, spec: Mapping[str, Any]) -> Normalisation:
    """The normalisation of ``input_spec`` resolved for this series.

    For ``percentile`` the scale is that percentile of the whole series (offset 0);
    when it is not positive (a mostly empty series) the largest absolute value is
    used, and 1 for an all-zero series, so the division is always defined.
    """
    norm = spec["normalisation"]
    if norm["kind"] == "linear":
        return Normalisation("linear", float(norm["offset"]), float(norm["scale"]))
    # Not MONAI's ScaleIntensityRangePercentiles: it maps the lower percentile to 0,
    # where the bundles were trained on x / upper percentile (offset 0).
    scale = float(np.percentile(volume, float(norm["upper"])))
    if not scale > 0:
        scale = float(np.max(np.abs(volume)))
    if not scale > 0:
        scale = 1.0
    return Normalisation("percentile", 0.0, scale)


def padding_for(
    shape: Sequence[int], multiple: int, minimum: Sequence[int] | None = None
) -> list[tuple[int, int]]:
    """Per-axis (before, after) pads to a multiple of ``multiple``, >= ``minimum``,
    split as MONAI's ``SpatialPad`` and ``DivisiblePad`` split them."""
    pads = []
    for axis, size in enumerate(shape):
        target = math.ceil(size / multiple) * multiple
        if minimum is not None and target < minimum[axis]:
            target = math.ceil(minimum[axis] / multiple) * multiple
        total = target - size
        pads.append((total // 2, total - total // 2))
    return pads


def predict(
    volume: np.ndarray,
    network: nn.Module,
    *,
    spec: Mapping[str, Any],
    norm: Normalisation,
    device: torch.device,
    precision: str,
    batch_size: int,
    out: np.ndarray,
    progress: Callable[[int, int], None] | None = None,
    noise_sd: np.ndarray | None = None,
    pixel_mm: Sequence[float] | None = None,
) -> None:
    """Denoise ``volume`` into ``out`` (same shape, float32, original units).

    2D networks see batches of ``batch_size`` whole slices, or sliding windows of
    ``roi_size`` within each batch when the bundle or network fixes one
    (:func:`predict_slices`). 3D networks see the whole (z, y, x) volume through
    sliding windows. Inputs are padded by reflection to the network's size multiple
    and cropped back.

    Args:
        volume: (z, y, x) float32 array in original units.
        network: the denoiser, in eval mode, on ``device``.
        spec: the bundle's validated ``input_spec``.
        norm: the resolved normalisation for this series.
        device: where the network runs. 2D: the whole stack goes there (callers
            with long series pass chunks, as the engine does); 3D: windows are sent
            there and stitched on the CPU, so GPU memory is bounded by one batch.
        precision: a resolved precision, "fp32", "bf16" or "fp16".
        batch_size: slices (2D) or windows per forward pass.
        out: preallocated (z, y, x) float32 array that receives the result.
        progress: called with (steps done, total steps) after each forward pass.
        noise_sd, pixel_mm: 2D: as for :func:`predict_slices`.
    """
    if int(spec["spatial_dims"]) == 2:
        images = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
        result = predict_slices(
            images,
            network,
            spec=spec,
            norm=norm,
            device=device,
            precision=precision,
            batch_size=batch_size,
            progress=progress,
            noise_sd=noise_sd,
            pixel_mm=pixel_mm,
        )
        out[...] = result.cpu().numpy()
        return
    if input_channels(network) != 1:
        raise ValueError("predict: noise-conditioned networks must be 2D")
    _predict_volume(
        volume,
        _forward_fn(network, device, precision),
        norm,
        _size_multiple(spec, network),
        _roi(spec, network),
        batch_size,
        device,
        out,
        progress,
    )


def predict_slices(
    images: torch.Tensor,
    network: nn.Module,
    *,
    spec: Mapping[str, Any],
    norm: Normalisation,
    device: torch.device,
    precision: str,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
    noise_sd: np.ndarray | torch.Tensor | None = None,
    pixel_mm: Sequence[float] | None = None,
) -> torch.Tensor:
    """Denoise a stack of 2D slices where the network is, without leaving it.

    Normalising, padding, cropping and restoring units all run on ``device``, so
    on a GPU the slices cross the bus once each way and the caller can go on
    (residual, metrics) with the result where it is.

    A noise-conditioned network (``network.noise_conditioned``) gets each slice's
    noise SD as a second input channel, and a bundle with a ``residual_limit``
    has its residual held to that many noise SDs (:func:`inference.noise.
    limit_residual`); both use ``noise_sd``, estimated here when not given. A
    bundle with ``keep_low_frequencies`` then gets the input's content coarser than
    its ``sigma_mm`` back (:func:`inference.noise.keep_low_frequencies`), at the
    slices' ``pixel_mm``.

    Args:
        images: (z, y, x) float32 tensor in original units, on any device.
        network: a 2D denoiser, in eval mode, on ``device``.
        spec, norm, device, precision, batch_size, progress: as for
            :func:`predict`.
        noise_sd: (z,) noise SD of each slice in original units
            (:func:`inference.noise.estimate_noise_sd`), default estimated here
            when the network or the bundle needs it.
        pixel_mm: (row, column) pixel spacing in mm; unknown (``None``), the
            ``keep_low_frequencies`` Gaussian is one pixel wide.

    Returns:
        (z, y, x) float32 tensor on ``device``, original units.
    """
    multiple = _size_multiple(spec, network)
    roi = _roi(spec, network)
    forward = _forward_fn(network, device, precision)
    depth = images.shape[0]
    pads = padding_for(images.shape[1:], multiple, roi)
    inferer = _inferer(roi, batch_size, device, stitch_on=device) if roi else None
    total = math.ceil(depth / batch_size)
    offset, scale = float(norm.offset), float(norm.scale)
    conditioned = input_channels(network) == 2
    limit = spec.get("residual_limit")
    keep = spec.get("keep_low_frequencies")
    keep_pixel_mm = _keep_pixel_mm(keep, pixel_mm)
    exact = forward
    with torch.inference_mode():
        images = images.to(device)
        sigma = None
        if needs_noise_estimate(spec, network):
            if precision != "fp32":  # for the quiet slices
                exact = _forward_fn(network, device, "fp32")
            if noise_sd is None:
                noise_sd = estimate_noise_sd(
                    images, body_threshold=body_threshold(spec)
                )
            # A slice too small to measure has no noise to remove as far as anyone
            # can tell: it comes out unchanged.
            measured = np.nan_to_num(np.asarray(noise_sd, dtype=np.float64), nan=0.0)
            sigma = torch.as_tensor(measured, dtype=torch.float32).to(device) / scale
            level_map = noise_level_map(sigma, float(spec.get("noise_unit", 0.005)))
        out = torch.empty_like(images, dtype=torch.float32)
        for step, start in enumerate(range(0, depth, batch_size), start=1):
            stop = min(start + batch_size, depth)
            batch = ((images[start:stop].float() - offset) / scale)[:, None]
            if sigma is not None and conditioned:
                level = level_map[start:stop].reshape(-1, 1, 1, 1).expand_as(batch)
                batch = torch.cat([batch, level], dim=1)
            padded = reflect_pad(batch, pads)
            run = forward
            if sigma is not None and not reduced_precision_ok(sigma[start:stop]):
                run = exact  # a quiet slice: its noise is below bf16's resolution
            result = inferer(padded, run) if inferer else run(padded)
            assert isinstance(result, torch.Tensor)
            crop = [
                slice(before, size - after)
                for (before, after), size in zip(pads, result.shape[2:], strict=True)
            ]
            result = result[(slice(None), slice(0, 1), *crop)]
            if limit and sigma is not None:
                result = limit_residual(
                    batch[:, :1],
                    result,
                    sigma[start:stop],
                    sd_multiple=float(limit["sd_multiple"]),
                    window=int(limit["window"]),
                )
            if keep:
                result = keep_low_frequencies(
                    batch[:, :1],
                    result,
                    sigma_mm=float(keep["sigma_mm"]),
                    pixel_mm=keep_pixel_mm,
                )
            out[start:stop] = result[:, 0] * scale + offset
            if progress is not None:
                progress(step, total)
    return out


def _keep_pixel_mm(
    keep: Mapping[str, Any] | None, pixel_mm: Sequence[float] | None
) -> tuple[float, float]:
    """The pixel spacing :func:`keep_low_frequencies` works at: the slices' own,
    or (unknown) the Gaussian's width, so it is one pixel wide."""
    if not keep:
        return (1.0, 1.0)
    if pixel_mm is None:
        width = float(keep["sigma_mm"])
        return (width, width)
    values = [float(v) for v in pixel_mm]
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(
            f"predict_slices: pixel_mm must be two spacings > 0 in mm, got {pixel_mm!r}"
        )
    return (values[0], values[1])


def needs_noise_estimate(spec: Mapping[str, Any], network: nn.Module) -> bool:
    """Whether slices' noise SDs feed this bundle: a noise-conditioned network
    (second input channel) or a ``residual_limit``."""
    return input_channels(network) == 2 or bool(spec.get("residual_limit"))


def reduced_precision_ok(noise_sd: torch.Tensor | np.ndarray) -> bool:
    """Whether slices with these noise SDs (normalised units) may run in bf16 or
    fp16 (:data:`REDUCED_PRECISION_MIN_NOISE`); unmeasured (NaN) counts as quiet."""
    values = torch.as_tensor(noise_sd, dtype=torch.float32)
    return bool(values.numel()) and bool(
        (values.nan_to_num(0.0) >= REDUCED_PRECISION_MIN_NOISE).all()
    )


def denoise_images(
    network: nn.Module,
    images: Sequence[np.ndarray],
    spec: Mapping[str, Any],
    *,
    batch_size: int | None = None,
    precision: str = "fp32",
    pixel_mm: Sequence[float | Sequence[float] | None] | float | None = None,
) -> list[np.ndarray]:
    """Denoise separate 2D images exactly as the worker denoises a series.

    Training validation, ``python -m training evaluate`` and ``python -m bench
    quality`` call this, so their numbers measure what production runs: each
    image is one series for :func:`normalisation_for` (same-shape images share a
    batch when the normalisation is linear, which does not depend on the series),
    and :func:`predict_slices` does the rest, noise estimate, conditioning and
    residual limit included.

    Args:
        network: a 2D denoiser; put in eval mode for the call and restored after.
        images: 2D float arrays in original units (HU for CT).
        spec: the bundle's ``input_spec``.
        batch_size: slices per forward pass, default ``spec["batch_size"]``.
        precision: a resolved precision, default "fp32".
        pixel_mm: pixel spacing in mm: one number for all images (square
            pixels), or a sequence with one entry per image (a number or a
            (row, column) pair; ``None`` where unknown).

    Returns:
        float32 arrays, same shapes as ``images``.
    """
    batch = int(batch_size or spec["batch_size"])
    device = next(network.parameters()).device
    outputs: list[np.ndarray] = [np.empty(0, np.float32)] * len(images)
    groups: dict[Any, list[int]] = {}
    linear = spec["normalisation"]["kind"] == "linear"
    if pixel_mm is None or _is_number(pixel_mm):
        spacings = [_pair(cast(Any, pixel_mm))] * len(images)
    else:
        spacings = [_pair(v) for v in cast(Sequence[Any], pixel_mm)]
        if len(spacings) != len(images):
            raise ValueError(
                f"denoise_images: {len(spacings)} pixel spacings for "
                f"{len(images)} images"
            )
    for index, image in enumerate(images):
        key = (image.shape, spacings[index]) if linear else index
        groups.setdefault(key, []).append(index)
    was_training = network.training
    network.eval()
    try:
        for indices in groups.values():
            stack = np.stack([np.asarray(images[i], np.float32) for i in indices])
            result = predict_slices(
                torch.from_numpy(stack),
                network,
                spec=spec,
                norm=normalisation_for(stack, spec),
                device=device,
                precision=precision,
                batch_size=batch,
                pixel_mm=spacings[indices[0]],
            )
            for k, i in enumerate(indices):
                outputs[i] = result[k].cpu().numpy()
    finally:
        network.train(was_training)
    return outputs


def _is_number(value: Any) -> bool:
    """A plain or numpy number (or a 0-d array), not a sequence."""
    return bool(np.isscalar(value)) or (
        isinstance(value, np.ndarray) and value.ndim == 0
    )


def _pair(value: Any) -> tuple[float, float] | None:
    """A spacing as (row, column) mm: from a number (numpy's too) or a pair."""
    if value is None:
        return None
    if _is_number(value):
        return (float(value), float(value))
    row, column = (float(v) for v in value)
    return (row, column)


def input_channels(network: nn.Module) -> int:
    """Channels a denoiser takes: 2 for noise-conditioned networks, else 1."""
    return 2 if getattr(network, "noise_conditioned", False) else 1


def body_threshold(spec: Mapping[str, Any]) -> float | None:
    """The value above which a pixel belongs to the patient, for the noise
    estimate: -500 HU for CT, none for MR (no fixed scale)."""
    return -500.0 if spec.get("modality") == "CT" else None


def reflect_pad(batch: torch.Tensor, pads: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Pad the trailing axes of ``batch`` by reflection, exactly as
    ``np.pad(mode="reflect")`` does, with MONAI's ``Pad``.

    Args:
        batch: (N, C, *spatial) tensor.
        pads: (before, after) per spatial axis.
    """
    spatial = batch.shape[batch.ndim - len(pads) :]
    if not all(max(pad) < size for pad, size in zip(pads, spatial, strict=True)):
        # MONAI (torch's F.pad) refuses pads as wide as the image and 1-pixel axes.
        return _gather_reflect_pad(batch, pads)
    lead = batch.shape[: batch.ndim - len(pads)]
    widths: Any = ((0, 0), *pads)  # MONAI's hint wants a 1-tuple; it takes any
    padded = _REFLECT_PAD(batch.reshape(-1, *spatial), widths)
    padded = convert_to_tensor(padded, track_meta=False)
    return padded.reshape(*lead, *padded.shape[1:])


def _gather_reflect_pad(
    batch: torch.Tensor, pads: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """:func:`reflect_pad` for any pad width, by gathering along each axis the
    indices NumPy's reflect padding picks."""
    for axis, (before, after) in enumerate(pads):
        if not before and not after:
            continue
        dim = batch.ndim - len(pads) + axis
        picks = np.pad(np.arange(batch.shape[dim]), (before, after), mode="reflect")
        batch = batch.index_select(dim, torch.from_numpy(picks).to(batch.device))
    return batch


def _forward_fn(
    network: nn.Module, device: torch.device, precision: str
) -> Callable[[torch.Tensor], torch.Tensor]:
    # On a CPU, convolution and ReLU run as one oneDNN call (inference.fused).
    fused = cpu_network(network, precision) if device.type == "cpu" else None

    def forward(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(device, non_blocking=True)
        if fused is not None:
            return fused(batch).float()
        with autocast(device, precision):
            result = network(batch)
        return result.float()

    return forward


def _size_multiple(spec: Mapping[str, Any], network: nn.Module) -> int:
    return math.lcm(int(spec.get("size_multiple", 1)), _network_multiple(network))


def _roi(spec: Mapping[str, Any], network: nn.Module) -> tuple[int, ...] | None:
    roi = spec.get("roi_size") or getattr(network, "fixed_roi", None)
    return tuple(int(v) for v in roi) if roi else None


def _predict_volume(
    volume: np.ndarray,
    forward: Callable[[torch.Tensor], torch.Tensor],
    norm: Normalisation,
    multiple: int,
    roi: tuple[int, ...] | None,
    batch_size: int,
    device: torch.device,
    out: np.ndarray,
    progress: Callable[[int, int], None] | None,
) -> None:
    pads = padding_for(volume.shape, multiple, roi)
    padded_shape = [
        size + before + after
        for size, (before, after) in zip(volume.shape, pads, strict=True)
    ]
    window = roi or tuple(padded_shape)
    total = math.ceil(_count_windows(padded_shape, window) / batch_size)
    calls = 0

    def counted(batch: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        result = forward(batch)
        calls += 1
        if progress is not None:
            progress(min(calls, total), total)
        return result

    normalised = (volume - np.float32(norm.offset)) / np.float32(norm.scale)
    tensor = torch.from_numpy(np.ascontiguousarray(normalised, dtype=np.float32))
    tensor = reflect_pad(tensor[None, None], pads)
    del normalised
    with torch.inference_mode():
        result = _inferer(window, batch_size, device)(tensor, counted)
    del tensor
    assert isinstance(result, torch.Tensor)
    result_np = result[0, 0].to("cpu").numpy()
    crop = tuple(
        slice(before, size - after)
        for (before, after), size in zip(pads, result_np.shape, strict=True)
    )
    np.multiply(result_np[crop], np.float32(norm.scale), out=out)
    out += np.float32(norm.offset)


def _inferer(
    roi: Sequence[int],
    batch_size: int,
    device: torch.device,
    stitch_on: torch.device | None = None,
) -> SlidingWindowInferer:
    """Sliding windows run on ``device``; their stitched output is kept on
    ``stitch_on`` (default the CPU, which bounds GPU memory for whole volumes)."""
    return SlidingWindowInferer(
        roi_size=list(roi),
        sw_batch_size=batch_size,
        overlap=WINDOW_OVERLAP,
        mode="gaussian",
        padding_mode="reflect",
        sw_device=device,
        device=stitch_on or torch.device("cpu"),
    )


def _count_windows(shape: Sequence[int], roi: Sequence[int]) -> int:
    count = 1
    for size, window in zip(shape, roi, strict=True):
        if window >= size:
            continue
        interval = max(int(window * (1 - WINDOW_OVERLAP)), 1)
        count *= math.ceil((size - window) / interval) + 1
    return count


def _network_multiple(network: nn.Module) -> int:
    return int(getattr(network, "size_multiple", 1) or 1)


def faster_cpu_precision(
    network: nn.Module,
    *,
    batch_size: int,
    slice_shape: Sequence[int] = (512, 512),
) -> tuple[str, dict[str, float]]:
    """Whether a 2D network runs faster in bf16 than in fp32 on this CPU, measured.

    Native bf16 instructions do not make bf16 faster on every CPU (faster on some,
    slower on others: ``bench/results/fast-paths.md``), so both precisions are run as
    :func:`predict_slices` runs them, on a batch of random slices, interleaved, the
    fastest of :data:`_CHOICE_REPEATS` passes each after one untimed pass: six
    forward passes, once per network and process (a recycled worker measures
    again, so a CPU near the threshold may choose differently; the provenance
    records the timings and the choice). Callers should hold the allocator
    settings the engine runs under (:func:`inference.allocator.reusing_freed_blocks`),
    without which page faults slow fp32 more than bf16. Measurements are taken
    one at a time in a process, so that two do not share the cores.

    Args:
        network: a 2D denoiser in eval mode on the CPU.
        batch_size: slices per pass, as the engine will run them.
        slice_shape: (y, x) of the probe slices, default (512, 512).

    Returns:
        "bf16" when it is at least :data:`BF16_MIN_SPEEDUP` times as fast as fp32,
        else "fp32"; and the milliseconds per slice measured for each.
    """
    known = _choices.get(network)
    if known is not None:
        return known
    with _lock:
        if network in _choices:
            return _choices[network]
        cpu = torch.device("cpu")
        size_multiple = _network_multiple(network)
        shape = [-(-int(n) // size_multiple) * size_multiple for n in slice_shape]
        generator = torch.Generator().manual_seed(0)
        batch = torch.randn(batch_size, 1, *shape, generator=generator) * 0.1 + 0.25
        if input_channels(network) == 2:
            batch = torch.cat([batch, torch.full_like(batch, 0.05)], dim=1)
        forwards = {p: _forward_fn(network, cpu, p) for p in ("fp32", "bf16")}
        best = dict.fromkeys(forwards, math.inf)
        with torch.inference_mode():
            for repeat in range(_CHOICE_REPEATS + 1):
                for precision, forward in forwards.items():
                    start = time.perf_counter()
                    forward(batch)
                    if repeat:
                        elapsed = time.perf_counter() - start
                        best[precision] = min(best[precision], elapsed)
        ms = {p: round(1000 * s / batch_size, 3) for p, s in best.items()}
        chosen = _faster(ms)
        logger.info(
            "precision auto on this CPU: %s (fp32 %.1f ms per slice, bf16 %.1f ms)",
            chosen,
            ms["fp32"],
            ms["bf16"],
        )
        _choices[network] = (chosen, ms)
        return chosen, ms


def _faster(ms_per_slice: Mapping[str, float]) -> str:
    """bf16 when fp32 takes at least :data:`BF16_MIN_SPEEDUP` times as long, else
    fp32 (the exact one wins ties and near-ties)."""
    fp32, bf16 = ms_per_slice["fp32"], ms_per_slice["bf16"]
    return "bf16" if fp32 >= BF16_MIN_SPEEDUP * bf16 else "fp32"
