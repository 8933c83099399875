"""Denoise one series with a loaded bundle: the pure entry point the worker calls."""

from __future__ import annotations

import hashlib
import logging
import math
import mmap
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from inference.allocator import GrowthLimit, reusing_freed_blocks
from inference.devices import resolve_precision
from inference.metrics import slice_statistics, summarise
from inference.noise import estimate_noise_sd
from inference.ood import check_ood, ood_statistics
from inference.provenance import build_provenance, utc_now
from inference.registry import LoadedModel
from inference.runner import (
    REDUCED_PRECISION_MIN_NOISE,
    WINDOW_OVERLAP,
    body_threshold,
    faster_cpu_precision,
    input_channels,
    needs_noise_estimate,
    normalisation_for,
    predict,
    predict_slices,
    reduced_precision_ok,
)

__all__ = ["DenoiseResult", "denoise_volume", "warm_up"]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]

# Share of the progress bar before inference starts and when it ends; the rest of
# the bar is post-processing (metrics, hashes), which is short next to inference.
_PROGRESS_INFER_START = 0.05
_PROGRESS_INFER_END = 0.9
#: Most slices per pass of the 2D pipeline (convert, infer, residual, metrics,
#: hashes): big enough for whole batches, small enough that every temporary stays
#: a few tens of MB, so memory does not grow with the series beyond its arrays.
CHUNK_SLICES = 32
#: Most float32 bytes per pass: fewer slices per pass for larger slices.
CHUNK_BYTES = 32 << 20
#: Chunks handed to the helper threads (hashes, write-back) that may still be
#: pending before the main loop waits for them.
_CHUNKS_IN_FLIGHT = 2
#: Fewest slices per forward pass on an accelerator when the caller names no batch
#: size: bundles set theirs for a CPU, where larger batches gain nothing, while a
#: GPU spends most of a small batch launching kernels.
ACCELERATOR_MIN_BATCH = 32
#: On the host (a CPU, or any device whose chunks come back to the host, see
#: :func:`stays_on_device`), whole-slice batches hold at most this many pixels (8
#: slices of 512 x 512): larger slices go in smaller batches, so the memory a batch
#: needs is the same whatever the slice size.
CPU_BATCH_PIXELS = 8 * 512 * 512
#: Above this many float32 bytes a percentile normalisation is taken over evenly
#: spaced slices instead of the whole series, so it never loads a huge memmap.
_EXACT_PERCENTILE_BYTES = 1 << 30


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


@reusing_freed_blocks
def denoise_volume(
    volume: np.ndarray,
    model: LoadedModel,
    *,
    spacing: Sequence[float],
    progress: ProgressCallback | None = None,
    batch_size: int | None = None,
    precision: str = "auto",
    modality: str | None = None,
    reconstruction_out: np.ndarray | None = None,
    residual_out: np.ndarray | None = None,
    on_slices_done: Callable[[int, int], None] | None = None,
) -> DenoiseResult:
    """Denoise a CT/MR series and measure what was removed.

    2D networks work through the series :data:`CHUNK_SLICES` slices at a time
    (convert, check, infer, residual, metrics and hashes in one pass per chunk), so
    a ``np.memmap`` input with memmap outputs is processed without ever holding the
    whole series in memory. 3D networks see the whole volume.

    Args:
        volume: (z, y, x) or (y, x) array in original units (HU for CT); any real
            dtype, converted to float32 chunk by chunk; may be a ``np.memmap``.
        model: from :func:`inference.load_model`; runs on ``model.device``.
        spacing: voxel spacing in mm, one value per axis of ``volume``; recorded in
            the provenance.
        progress: called as ``progress(fraction, stage)`` with a strictly
            increasing fraction in [0, 1], once per batch and last with 1.0.
        batch_size: slices (2D) or windows (3D) per forward pass; default the
            bundle's ``input_spec["batch_size"]``; for whole-slice 2D bundles, on
            a GPU at least :data:`ACCELERATOR_MIN_BATCH` slices as far as
            :data:`CHUNK_BYTES` allows, on a CPU at most :data:`CPU_BATCH_PIXELS`
            pixels.
        precision: "auto" (bf16, or fp16, with autocast on CUDA; on CPU bf16 for
            the network kinds of :data:`inference.devices.CPU_BF16_KINDS` on CPUs
            with native bf16 where it measures faster than fp32, else fp32),
            "fp32", "bf16" or "fp16" (CUDA only).
        modality: the series' DICOM modality; a mismatch with the bundle warns.
        reconstruction_out: float32 array of ``volume``'s shape (e.g. a writable
            ``np.memmap``) that receives the reconstruction; default a new array.
        residual_out: the same for the residual.
        on_slices_done: called as ``on_slices_done(start, stop)`` once slices
            ``[start, stop)`` of both outputs are final (a 2D ``volume`` is slice
            0), in order, before a memory-mapped output lets their pages go: e.g.
            to hash the outputs while they are in memory. 2D networks call it from
            a helper thread, chunk by chunk; 3D ones once, from the caller's.

    Returns:
        A :class:`DenoiseResult`; its ``reconstruction`` and ``residual`` are the
        ``*_out`` arrays when given.

    Raises:
        ValueError: for a volume that is not 2D/3D, is empty, is not real-valued
            or holds NaN/inf, a spacing that does not match it, an output array of
            the wrong shape or dtype, or bad options.
    """
    started_at = utc_now()
    t_start = time.perf_counter()
    device = model.device
    spec = model.input_spec
    reporter = _Progress(progress)
    reporter(0.0, "preprocess")

    source = _check_volume(volume)
    batch = _check_batch_size(batch_size, model, source.shape[-2:])
    spacing_mm = _check_spacing(spacing, source.ndim)
    reconstruction = _check_output(reconstruction_out, source.shape, "reconstruction")
    residual = _check_output(residual_out, source.shape, "residual")
    # After the checks: on a CPU "auto" may time the network once (about 1 s).
    resolved_precision, precision_ms = _resolve_precision(precision, model)
    stack = source if source.ndim == 3 else source[None]
    recon_stack = reconstruction if source.ndim == 3 else reconstruction[None]
    residual_stack = residual if source.ndim == 3 else residual[None]
    norm = normalisation_for(_normalisation_sample(stack), spec)
    span = _PROGRESS_INFER_END - _PROGRESS_INFER_START

    def report(done: int, total: int) -> None:
        reporter(_PROGRESS_INFER_START + span * done / total, f"infer {done}/{total}")

    t_setup = time.perf_counter()
    options: dict[str, Any] = {
        "spec": spec,
        "norm": norm,
        "device": device,
        "precision": resolved_precision,
        "batch_size": batch,
        "pixel_mm": spacing_mm[-2:],
    }
    if int(spec["spatial_dims"]) == 2:
        pass_ = _run_slices(
            stack,
            recon_stack,
            residual_stack,
            lambda x, progress_, noise_sd: predict_slices(
                x, model.network, progress=progress_, noise_sd=noise_sd, **options
            ),
            device,
            batch,
            report,
            on_slices_done,
            body_threshold(spec),
        )
    else:
        pass_ = _run_whole(
            stack,
            recon_stack,
            residual_stack,
            lambda x, out, progress_: predict(
                x, model.network, out=out, progress=progress_, **options
            ),
            report,
            body_threshold(spec),
        )
        if on_slices_done is not None:
            on_slices_done(0, stack.shape[0])
    t_post_start = time.perf_counter()
    per_slice = pass_.per_slice
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
            f"(edge energy ratio up to {metrics['structure_score_max'] or 0.0:.2f}, "
            f"limit {metrics['structure_threshold']}; anatomy correlation up to "
            f"{metrics['anatomy_correlation_max'] or 0.0:.2f}, limit "
            f"{metrics['anatomy_threshold']}): the model may have removed anatomy"
        )
    t_post = time.perf_counter()

    # Stages interleave chunk by chunk; each is the sum of its share of every chunk.
    timings = {
        "load": round(model.load_s, 6),
        "preprocess": round(t_setup - t_start + pass_.preprocess_s, 6),
        "infer": round(pass_.infer_s, 6),
        "postprocess": round(pass_.postprocess_s + t_post - t_post_start, 6),
        "total": round(t_post - t_start, 6),
    }
    roi = spec.get("roi_size") or getattr(model.network, "fixed_roi", None)
    parameters = {
        "shape": list(source.shape),
        "input_dtype": str(source.dtype),
        "spacing_mm": spacing_mm,
        "modality": modality,
        "batch_size": batch,
        "precision_requested": precision,
        # "auto" on a CPU: ms per slice of each precision, measured on this CPU.
        "precision_ms_per_slice": precision_ms,
        "normalisation": norm.as_dict(),
        "roi_size": list(roi) if roi else None,
        "window_overlap": WINDOW_OVERLAP if roi or spec["spatial_dims"] == 3 else None,
        "size_multiple": spec.get("size_multiple", 1),
        "padding": "reflect",
        "noise_conditioned": input_channels(model.network) == 2,
        "residual_limit": spec.get("residual_limit"),
        # The input's content coarser than sigma_mm is kept (inference.noise).
        "keep_low_frequencies": spec.get("keep_low_frequencies"),
        "noise_sd_estimate": _noise_summary(per_slice["noise_sd_before"]),
        # Slices too quiet for a reduced precision ran in fp32 (runner).
        "fp32_below_noise": _fp32_below_noise(
            resolved_precision, spec, model.network, norm
        ),
        "fp32_slices": _quiet_slices(
            resolved_precision, spec, model.network, norm, per_slice["noise_sd_before"]
        ),
    }
    provenance = build_provenance(
        model,
        device=device,
        precision=resolved_precision,
        parameters=parameters,
        input_sha256=pass_.input_sha256,
        output_sha256=pass_.output_sha256,
        started_at=started_at,
        finished_at=utc_now(),
    )
    provenance["timings_s"] = timings
    logger.info(
        "denoise_volume: %s shape=%s device=%s precision=%s ++ Latencies => "
        "Total: %.4f; Load: %.4f; Pre: %.4f; Inferer: %.4f; Post: %.4f",
        model.ref,
        tuple(source.shape),
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


@reusing_freed_blocks
def warm_up(
    model: LoadedModel,
    *,
    slice_shape: tuple[int, int] = (512, 512),
    precision: str = "auto",
) -> float:
    """Run one batch of blank slices through a 2D model and its metrics, so that a
    worker's first series pays no start-up cost (CUDA context, kernel loading,
    oneDNN primitive creation). A no-op for 3D models.

    Args:
        model: from :func:`inference.load_model`.
        slice_shape: (y, x) of the slices to expect, default (512, 512).
        precision: as for :func:`denoise_volume`.

    Returns:
        Seconds taken.
    """
    start = time.perf_counter()
    spec = model.input_spec
    if int(spec["spatial_dims"]) != 2:
        return 0.0
    batch = _check_batch_size(None, model, slice_shape)
    images = torch.zeros((batch, *slice_shape), device=model.device)
    denoised = predict_slices(
        images,
        model.network,
        spec=spec,
        norm=normalisation_for(images[:1].cpu().numpy(), spec),
        device=model.device,
        precision=_resolve_precision(precision, model)[0],
        batch_size=batch,
    )
    slice_statistics(images.cpu().numpy(), denoised.cpu().numpy())
    return time.perf_counter() - start


def _resolve_precision(
    precision: str, model: LoadedModel
) -> tuple[str, dict[str, float] | None]:
    """The precision to run ``model`` at, and, when "auto" on a CPU had to choose
    between bf16 and fp32, the milliseconds per slice it measured for each.

    "auto" on a CPU proposes bf16 only for the kinds of
    :data:`inference.devices.CPU_BF16_KINDS` on CPUs with native bf16; a 2D model
    then keeps it only if it measures faster here (:func:`faster_cpu_precision`,
    once per model and process, at the batch a 512x512 series runs at)."""
    kind = model.metadata.get("network_def", {}).get("kind")
    resolved = resolve_precision(precision, model.device, kind)
    if (
        precision != "auto"
        or resolved != "bf16"
        or model.device.type != "cpu"
        or int(model.input_spec["spatial_dims"]) != 2
    ):
        return resolved, None
    batch = _check_batch_size(None, model, (512, 512))
    return faster_cpu_precision(model.network, batch_size=batch)


def _fp32_below_noise(
    precision: str, spec: Mapping[str, Any], network: Any, norm: Any
) -> float | None:
    """Noise SD (input units) below which slices ran in fp32 instead of
    ``precision``; None when every slice ran in ``precision``."""
    if precision == "fp32" or not _knows_noise(spec, network):
        return None
    return round(REDUCED_PRECISION_MIN_NOISE * float(norm.scale), 6)


def _quiet_slices(
    precision: str,
    spec: Mapping[str, Any],
    network: Any,
    norm: Any,
    noise_sd: Sequence[float] | np.ndarray,
) -> int:
    """How many slices were quiet enough to run in fp32 (their batches did)."""
    if _fp32_below_noise(precision, spec, network, norm) is None:
        return 0
    normalised = np.asarray(noise_sd, dtype=np.float64) / float(norm.scale)
    return sum(not reduced_precision_ok(value) for value in normalised)


def _knows_noise(spec: Mapping[str, Any], network: Any) -> bool:
    return int(spec["spatial_dims"]) == 2 and needs_noise_estimate(spec, network)


def _noise_summary(per_slice: np.ndarray) -> dict[str, Any]:
    """The input's noise estimate for the provenance: its method and its median,
    minimum and maximum over slices, in the series' units (the per-slice values
    are in the metrics)."""
    values = np.asarray(per_slice, dtype=np.float64)
    values = values[np.isfinite(values)]
    summary: dict[str, Any] = {"method": "inference.noise.estimate_noise_sd"}
    for name, reduce in (("median", np.median), ("min", np.min), ("max", np.max)):
        summary[name] = round(float(reduce(values)), 3) if values.size else None
    return summary


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
    """The volume as an array, unconverted (a memmap stays one); values are checked
    for NaN/inf chunk by chunk as they are converted."""
    array = volume if isinstance(volume, np.ndarray) else np.asarray(volume)
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
    return array


def _as_float32(chunk: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(chunk, dtype=np.float32)
    if not x.flags.writeable:  # e.g. a float32 series memory-mapped read-only
        x = x.copy()
    if not np.isfinite(x).all():
        raise ValueError(
            "denoise_volume: the volume contains NaN or inf (after conversion to "
            "float32)"
        )
    return x


def _check_output(
    out: np.ndarray | None, shape: tuple[int, ...], name: str
) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if out.shape != shape or out.dtype != np.float32 or not out.flags.writeable:
        raise ValueError(
            f"denoise_volume: {name}_out must be a writable float32 array of shape "
            f"{shape}, got {out.dtype} {out.shape}"
        )
    return out


def _normalisation_sample(stack: np.ndarray) -> np.ndarray:
    """The slices a percentile normalisation is computed on: all of them unless the
    series is too large to convert at once, then evenly spaced ones."""
    step = max(1, math.ceil(stack.size * 4 / _EXACT_PERCENTILE_BYTES))
    return stack[::step]


@dataclass
class _Pass:
    """What one pass over the series produced besides the output arrays."""

    per_slice: dict[str, np.ndarray]
    input_sha256: str
    output_sha256: str
    preprocess_s: float = 0.0
    infer_s: float = 0.0
    postprocess_s: float = 0.0


SlicePredictor = Callable[
    [torch.Tensor, Callable[[int, int], None] | None, np.ndarray], torch.Tensor
]
VolumePredictor = Callable[
    [np.ndarray, np.ndarray, Callable[[int, int], None] | None], None
]


def _run_slices(
    stack: np.ndarray,
    recon: np.ndarray,
    residual: np.ndarray,
    predictor: SlicePredictor,
    device: torch.device,
    batch: int,
    report: Callable[[int, int], None],
    on_slices_done: Callable[[int, int], None] | None = None,
    body: float | None = -500.0,
) -> _Pass:
    """One pass over a 2D series, a chunk at a time.

    Each chunk's noise is measured first (it conditions the network and bounds
    its residual), then the chunk is denoised. On a CPU the residual is computed
    with NumPy in the output arrays; on a GPU the chunk stays there from input to
    residual and only the reconstruction and residual come back. The metrics are
    computed on the host, where the selections they need are fast. Two helper
    threads keep the disk and the hashes off the critical path: one hashes the
    input, the other hashes the output, calls ``on_slices_done`` for finished
    chunks, writes those of memory-mapped outputs back to their files and releases
    their pages. At most :data:`_CHUNKS_IN_FLIGHT` chunks wait for them, so memory
    stays bounded when the disk is slower than the device.
    """
    depth = stack.shape[0]
    chunk = _chunk_slices(stack.shape[1:], batch)
    total = sum(
        math.ceil((min(start + chunk, depth) - start) / batch)
        for start in range(0, depth, chunk)
    )
    done = 0
    sha_in, sha_out = hashlib.sha256(), hashlib.sha256()
    parts: list[dict[str, np.ndarray]] = []
    result = _Pass({}, "", "")
    on_device = stays_on_device(device)
    in_flight: deque[tuple[Future[None], Future[None]]] = deque()
    growth = GrowthLimit()
    with (
        ThreadPoolExecutor(1, thread_name_prefix="denoise-in") as hash_in,
        ThreadPoolExecutor(1, thread_name_prefix="denoise-out") as write_out,
    ):
        for start in range(0, depth, chunk):
            stop = min(start + chunk, depth)
            tick = time.perf_counter()
            while len(in_flight) >= _CHUNKS_IN_FLIGHT:
                for future in in_flight.popleft():
                    future.result()
            growth.check()
            x = _as_float32(stack[start:stop])
            hashed = hash_in.submit(sha_in.update, x.data.cast("B"))
            images = torch.from_numpy(x).to(device)
            noise_sd = estimate_noise_sd(x, body_threshold=body)
            t_pre = time.perf_counter()

            def chunk_progress(step: int, _total: int, before: int = done) -> None:
                report(before + step, total)

            denoised = predictor(images, chunk_progress, noise_sd)
            done += math.ceil((stop - start) / batch)
            out, res = recon[start:stop], residual[start:stop]
            _populate_pages(out, res)
            if on_device:
                difference = images - denoised
                _copy_to_host(denoised, out)
                _copy_to_host(difference, res)
            else:
                out[...] = denoised.cpu().numpy()
                np.subtract(x, out, out=res)
            t_infer = time.perf_counter()
            parts.append(
                slice_statistics(
                    x, out, res, noise_sd_before=noise_sd, body_threshold=body
                )
            )
            written = write_out.submit(
                _finish_chunk,
                sha_out,
                out,
                (stack[start:stop], res),
                None if on_slices_done is None else (on_slices_done, start, stop),
            )
            in_flight.append((hashed, written))
            t_post = time.perf_counter()
            result.preprocess_s += t_pre - tick
            result.infer_s += t_infer - t_pre
            result.postprocess_s += t_post - t_infer
        tick = time.perf_counter()
        for futures in in_flight:
            for future in futures:
                future.result()
        result.postprocess_s += time.perf_counter() - tick
    result.per_slice = {
        name: np.concatenate([part[name] for part in parts]) for name in parts[0]
    }
    result.input_sha256 = sha_in.hexdigest()
    result.output_sha256 = sha_out.hexdigest()
    return result


def _copy_to_host(tensor: torch.Tensor, array: np.ndarray) -> None:
    """Copy a device tensor straight into a (memory-mapped) host array."""
    if array.flags.c_contiguous:
        torch.from_numpy(array).copy_(tensor)
    else:
        array[...] = tensor.cpu().numpy()


def _finish_chunk(
    digest: Any,
    output: np.ndarray,
    others: tuple[np.ndarray, ...],
    done: tuple[Callable[[int, int], None], int, int] | None,
) -> None:
    digest.update(_bytes_of(output))
    if done is not None:
        callback, start, stop = done
        callback(start, stop)
    _release_pages(output, *others)


def stays_on_device(device: torch.device) -> bool:
    """Whether the residual is computed where the network ran (CUDA) rather than
    with NumPy on the host (a CPU, where NumPy is faster, or another backend)."""
    return device.type == "cuda"


def _chunk_slices(slice_shape: Sequence[int], batch: int) -> int:
    """Slices per pass: at most :data:`CHUNK_SLICES` and :data:`CHUNK_BYTES` of
    float32, rounded down to whole batches, at least one batch."""
    slice_bytes = max(4 * math.prod(int(v) for v in slice_shape), 1)
    fits = min(CHUNK_SLICES, CHUNK_BYTES // slice_bytes)
    return max(batch, fits // batch * batch)


def _bytes_of(array: np.ndarray) -> memoryview:
    return np.ascontiguousarray(array).data.cast("B")


def _release_pages(*arrays: np.ndarray) -> None:
    """Write finished slices of memory-mapped files back to disk and let the kernel
    take back their pages: the data stays in the file (and the page cache), but the
    process no longer holds it, so its memory follows the chunk, not the series,
    and a final ``fsync`` finds little left to write. Copy-on-write maps (mode
    "c") are left alone: their writes live only in those pages."""
    for array, mapping, start, length in _mapped_spans(arrays):
        if array.mode != "r":
            mapping.flush(start, length)
        mapping.madvise(mmap.MADV_DONTNEED, start, length)


def _populate_pages(*arrays: np.ndarray) -> None:
    """Map in, at once, the pages of memory-mapped outputs about to be written:
    one call instead of a page fault for every 4 KiB, which makes filling a new
    output file several times faster (0.35 -> 0.10 s for 320 MB). Read-only and
    copy-on-write maps are left alone, and so is a kernel without
    ``MADV_POPULATE_WRITE`` (Linux 5.14), where the faults happen as before."""
    for array, mapping, start, length in _mapped_spans(arrays):
        if array.mode == "r":
            continue
        try:
            mapping.madvise(_MADV_POPULATE_WRITE, start, length)
        except OSError:
            return


#: ``MADV_POPULATE_WRITE`` (Linux 5.14+); Python 3.11's mmap module lacks the name.
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)


def _mapped_spans(
    arrays: Sequence[np.ndarray],
) -> Iterator[tuple[Any, mmap.mmap, int, int]]:
    """For each C-contiguous, non-empty slice of a writable or read-only (not
    copy-on-write) ``np.memmap``: (array, its mmap, page-aligned offset, length)."""
    for array in arrays:
        mapping = getattr(array, "_mmap", None)
        mode = getattr(array, "mode", "c")
        if (
            mapping is None
            or mode == "c"
            or not array.size
            or not array.flags.c_contiguous  # a strided view spans other pages
        ):
            continue
        base = np.frombuffer(mapping, dtype=np.uint8).ctypes.data
        start = (array.ctypes.data - base) // mmap.PAGESIZE * mmap.PAGESIZE
        yield array, mapping, start, array.ctypes.data - base + array.nbytes - start


def _run_whole(
    stack: np.ndarray,
    recon: np.ndarray,
    residual: np.ndarray,
    predictor: VolumePredictor,
    report: Callable[[int, int], None],
    body: float | None = -500.0,
) -> _Pass:
    tick = time.perf_counter()
    x = _as_float32(stack)
    input_sha256 = hashlib.sha256(x.data.cast("B")).hexdigest()
    t_pre = time.perf_counter()
    predictor(x, recon, report)
    t_infer = time.perf_counter()
    np.subtract(x, recon, out=residual)
    per_slice = slice_statistics(x, recon, residual, body_threshold=body)
    output_sha256 = hashlib.sha256(np.ascontiguousarray(recon).data.cast("B"))
    return _Pass(
        per_slice,
        input_sha256,
        output_sha256.hexdigest(),
        preprocess_s=t_pre - tick,
        infer_s=t_infer - t_pre,
        postprocess_s=time.perf_counter() - t_infer,
    )


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


def _check_batch_size(
    batch_size: int | None, model: LoadedModel, slice_shape: Sequence[int]
) -> int:
    """The batch to run: ``batch_size``, else the bundle's; on an accelerator at
    least :data:`ACCELERATOR_MIN_BATCH` whole slices, as far as
    :data:`CHUNK_BYTES` allows, on a CPU at most :data:`CPU_BATCH_PIXELS` pixels
    (windowed and 3D bundles keep their own)."""
    spec = model.input_spec
    if batch_size is None:
        batch = int(spec.get("batch_size", 1))
        windowed = spec.get("roi_size") or getattr(model.network, "fixed_roi", None)
        if int(spec["spatial_dims"]) != 2 or windowed:
            return batch
        pixels = max(math.prod(int(v) for v in slice_shape), 1)
        if stays_on_device(model.device):
            return max(batch, min(ACCELERATOR_MIN_BATCH, CHUNK_BYTES // (4 * pixels)))
        # The host keeps a batch's activations for the next one (see
        # inference.allocator): bound them by pixels, not slices.
        return max(1, min(batch, CPU_BATCH_PIXELS // pixels))
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or batch_size < 1
    ):
        raise ValueError(
            f"denoise_volume: batch_size must be an integer >= 1, got {batch_size!r}"
        )
    return batch_size
