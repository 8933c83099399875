"""Speed: a CT series end to end (real worker path), network variants, BM3D.

``python -m bench speed [--json] [--slices 300] [--size 512] [--quick]
[--device auto|cpu|cuda] [--parts e2e,variants,memmap,bm3d] [--huge-slices N]``
measures in one run, each part in its own subprocess so every peak resident memory
is clean:

* end to end: DICOM files -> ``upload_ingest`` -> ``denoise_job_request`` ->
  ``denoise_job_run`` (read volume, denoise, metrics, outputs written atomically,
  job marked succeeded), on a warmed-up worker (``warm_worker``, timed apart, as
  a Celery pool process does it before its first job), with the job's stage
  times, peak resident memory and peak anonymous memory;
* model only, per variant (CPU: fp32 and bf16 as the engine runs them, with
  convolution and ReLU fused, and the same eager, channels_last off, one thread,
  TorchScript, ``torch.compile``; CUDA: TF32, bf16, fp16, larger batches,
  ``torch.compile``): slices/s, achieved GFLOP/s (FLOPs from ``FlopCounterMode``)
  against a large matmul timed on the same device in the same process, and the
  PSNR change vs fp32 on held-out low-dose CT phantoms;
* chunked processing of memmapped volumes at three depths: anonymous memory must not
  grow with the depth; with ``--huge-slices N`` also a 1024x1024xN series;
* BM3D on one slice, extrapolated to the volume (always on the CPU).

``--device auto`` (the default) runs on CUDA when there is one.

The machine may be shared: compare ratios measured in the same run. Prints one JSON
object and writes ``bench/results/speed.md`` (``speed-quick.md`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench._django import throwaway_django

__all__ = ["main", "VARIANTS"]

RESULTS = Path(__file__).parent / "results"
#: variant -> (precision, threads, how the network is prepared, batch or None for
#: the bundle's)
#: On a CPU, "fp32" and "bf16" run as the engine does, with convolution and ReLU fused
#: (``inference.fused``); the "_eager" rows run the network module as it is.
VARIANTS: dict[str, tuple[str, int, str, int | None]] = {
    "fp32": ("fp32", 2, "fused", None),
    "bf16": ("bf16", 2, "fused", None),
    "fp32_eager": ("fp32", 2, "eager", None),
    "bf16_eager": ("bf16", 2, "eager", None),
    "fp32_nchw": ("fp32", 2, "nchw", None),
    "fp32_1thread": ("fp32", 1, "fused", None),
    "bf16_1thread": ("bf16", 1, "fused", None),
    "fp32_torchscript": ("fp32", 2, "torchscript", None),
    "fp32_compile": ("fp32", 2, "compile", None),
    "bf16_compile": ("bf16", 2, "compile", None),
}
#: The same on a CUDA device, where "fp32" convolutions run in TF32 (PyTorch's
#: cuDNN default) and larger batches fill the GPU.
CUDA_VARIANTS: dict[str, tuple[str, int, str, int | None]] = {
    "fp32": ("fp32", 2, "eager", None),
    "bf16": ("bf16", 2, "eager", None),
    "fp16": ("fp16", 2, "eager", None),
    "bf16_b32": ("bf16", 2, "eager", 32),
    "fp16_b32": ("fp16", 2, "eager", 32),
    "bf16_b32_compile": ("bf16", 2, "compile", 32),
}
QUICK_VARIANTS = ("fp32", "bf16")
PARTS = ("e2e", "variants", "memmap", "bm3d")
#: A variant may become the default only if it loses at most this much PSNR.
MAX_PSNR_LOSS_DB = 0.1
_CT_WINDOW = (-160.0, 240.0)  # soft tissue W400/L40
_CT_RANGE = (-1024.0, 3071.0)


# --------------------------------------------------------------------------- memory


class _AnonPeak:
    """Samples RssAnon (and VmRSS) every few ms. RssAnon is the memory a memmap
    cannot page out, unlike ``ru_maxrss`` or VmRSS, which also count the file pages
    a memmap maps."""

    def __init__(self) -> None:
        self.peak_kb = 0
        self.peak_rss_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak_kb = max(self.peak_kb, _status_kb("RssAnon"))
        self.peak_rss_kb = max(self.peak_rss_kb, _status_kb("VmRSS"))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.005)

    def __enter__(self) -> _AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def _status_kb(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _maxrss_mb() -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork + exec, so a child
    # would report its parent's peak whenever that was larger.
    return _status_kb("VmHWM") / 1024


# --------------------------------------------------------------------------- children


def _matmul_gflops(
    dtype_name: str = "fp32", n: int = 2048, repeat: int = 5, device: str = "cpu"
) -> float:
    """Best of ``repeat`` n x n matrix products (TF32 off for fp32 on CUDA)."""
    import torch

    dtype = torch.float32 if dtype_name == "fp32" else torch.bfloat16
    if device != "cpu":
        n = max(n, 8192)
        torch.backends.cuda.matmul.allow_tf32 = False
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def _sync(device: str) -> None:
    if device != "cpu":
        import torch

        torch.cuda.synchronize(device)


def _django(root: Path) -> None:
    throwaway_django(root)


def _child_e2e(params: dict[str, Any]) -> dict[str, Any]:
    """The worker path, in-process: warm up, then ingest, request, run."""
    import torch

    torch.set_num_threads(int(params["threads"]))
    os.environ["DENOISE_DEVICE"] = params["device"]
    root = Path(params["tmp"])
    _django(root)
    from django.contrib.auth import get_user_model

    from radiology.models import DenoiseJob
    from radiology.services.ingest import upload_ingest
    from radiology.services.jobs import (
        denoise_job_request,
        denoise_job_run,
        warm_worker,
    )

    owner = get_user_model().objects.create_user("bench", password="bench-pass-1")
    warmup_s = warm_worker()
    baseline_mb = _status_kb("VmRSS") / 1024
    baseline_anon_mb = _status_kb("RssAnon") / 1024
    started = time.perf_counter()
    with _AnonPeak() as anon:
        report = upload_ingest(
            sources=[(Path(params["series_dir"]), "series")], owner=owner
        )
        ingested = time.perf_counter()
        job, _ = denoise_job_request(
            series=report.series[0],
            requested_by=owner,
            params=params.get("job_params"),
        )
        requested = time.perf_counter()
        done = denoise_job_run(job_id=job.pk, worker="bench")
        finished = time.perf_counter()
    assert done is not None
    return {
        "status": done.status,
        "error": done.error,
        "succeeded": done.status == DenoiseJob.Status.SUCCEEDED,
        "device": done.provenance.get("hardware", {}).get("device"),
        "device_name": done.provenance.get("hardware", {}).get("device_name"),
        "warmup_s": warmup_s,
        "e2e_s": finished - started,
        "ingest_s": ingested - started,
        "ingest_timings_s": report.timings_s,
        "request_s": requested - ingested,
        "job_run_s": finished - requested,
        "job_timings_s": done.timings_s,
        "precision": done.provenance.get("precision"),
        "batch_size": done.provenance.get("parameters", {}).get("batch_size"),
        "baseline_rss_mb": baseline_mb,
        "peak_rss_mb": _maxrss_mb(),
        "baseline_anon_mb": baseline_anon_mb,
        "peak_anon_mb": anon.peak_kb / 1024,
    }


def _variants(device: str) -> dict[str, tuple[str, int, str, int | None]]:
    return VARIANTS if device == "cpu" else CUDA_VARIANTS


def _prepare(
    how: str, network: Any, batch: Any, precision: str
) -> tuple[Any, float, str]:
    """The network as a variant runs it, the seconds preparing it took, and how it
    was prepared ("eager" where a "fused" copy was refused, as the engine would)."""
    import copy

    import torch

    from inference.fused import cpu_network

    start = time.perf_counter()
    if how == "fused":
        fused = cpu_network(network, precision)
        if fused is None:
            how = "eager"
        else:
            network = fused
    elif how == "nchw":
        network = copy.deepcopy(network).to(memory_format=torch.contiguous_format)
        # The network converts its input to channels_last itself; undo that so
        # every layer really runs NCHW.
        network.spatial_dims = 3 if network.spatial_dims == 2 else network.spatial_dims
    elif how == "torchscript":
        with torch.inference_mode():
            network = torch.jit.freeze(torch.jit.trace(network, batch))
    elif how == "compile":
        import torch._inductor.config as inductor_config

        # Freezing folds the weights in and lets oneDNN fuse conv + ReLU.
        inductor_config.freezing = True
        network = torch.compile(network, dynamic=False)
    return network, time.perf_counter() - start, how


def _child_model(params: dict[str, Any]) -> dict[str, Any]:
    """One variant: time per slice, GFLOP/s vs matmul, PSNR on the held-out set.

    Slices are on the device before the clock starts (normalising and restoring
    units are timed, copies to and from a GPU are not: end to end counts those)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from inference import load_model
    from inference.allocator import keep_freed_blocks
    from inference.devices import autocast
    from inference.noise import estimate_noise_sd, noise_level_map
    from inference.runner import input_channels

    variant, device_name = params["variant"], params["device"]
    precision, threads, how, batch = _variants(device_name)[variant]
    torch.set_num_threads(threads)
    keep_freed_blocks()  # as in every denoising pass (inference.denoise_volume)
    device = torch.device(device_name)
    model = load_model(device=device)
    network = model.network.eval()
    norm = model.input_spec["normalisation"]
    offset, scale = float(norm["offset"]), float(norm["scale"])
    batch_size = batch or int(model.input_spec.get("batch_size", 8))
    size = int(params["size"])
    held = np.load(params["held_out"])
    noisy = torch.from_numpy(held["noisy"]).to(device)
    clean = held["clean"]

    channels = input_channels(network)
    # A noise-conditioned network's second channel: each slice's noise level map,
    # measured once here (the worker measures it per chunk, outside the network).
    levels = noise_level_map(
        torch.from_numpy(np.nan_to_num(estimate_noise_sd(held["noisy"]))).float()
        / scale,
        float(model.input_spec.get("noise_unit", 0.005)),
    ).to(device)
    with torch.inference_mode():
        one = torch.zeros(1, channels, size, size, device=device)
        counter = FlopCounterMode(display=False)
        with counter:
            network(one)
        flops_per_slice = counter.get_total_flops()
    example = torch.zeros(batch_size, channels, size, size, device=device)
    prepared, prepare_s, how = _prepare(how, network, example, precision)

    def forward(images: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(images)
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                part = images[start : start + batch_size]
                # Fixed batch shape: compiled variants never recompile for the tail.
                full = torch.zeros(
                    (batch_size, channels, *part.shape[1:]), device=device
                )
                full[: len(part), 0] = (part - offset) / scale
                if channels == 2:
                    # The timing input repeats the held-out slices: so do their maps.
                    rows = torch.arange(start, start + len(part)) % len(levels)
                    full[: len(part), 1] = levels[rows.to(device)][:, None, None]
                # A fused copy holds its weights in its precision already.
                with autocast(device, "fp32" if how == "fused" else precision):
                    result = prepared(full)
                out[start : start + len(part)] = (
                    result.float()[: len(part), 0] * scale + offset
                )
        _sync(device_name)
        return out

    warm_start = time.perf_counter()
    forward(noisy[:batch_size])
    first_call_s = time.perf_counter() - warm_start
    matmul_before = _matmul_gflops("fp32", device=device_name)
    timing_slices = int(params["timing_slices"])
    timing_input = noisy.repeat(-(-timing_slices // len(noisy)), 1, 1)[:timing_slices]
    runs = []
    for _ in range(3 if device_name != "cpu" else 2):
        start = time.perf_counter()
        forward(timing_input)
        runs.append(time.perf_counter() - start)
    matmul_after = _matmul_gflops("fp32", device=device_name)
    seconds = min(runs)
    matmul = max(matmul_before, matmul_after)
    matmul_bf16 = _matmul_gflops("bf16", device=device_name)
    per_slice_s = seconds / len(timing_input)
    network_gflops = flops_per_slice / per_slice_s / 1e9
    denoised = forward(noisy).cpu().numpy()
    peak_device_mb = (
        torch.cuda.max_memory_allocated(device) / 2**20
        if device_name != "cpu"
        else None
    )
    return {
        "variant": variant,
        "device": device_name,
        "precision": precision,
        "threads": threads,
        "prepared": how,
        "batch_size": batch_size,
        "prepare_s": prepare_s,
        "first_call_s": first_call_s,
        "ms_per_slice": per_slice_s * 1000,
        "slices_per_s": 1 / per_slice_s,
        "gflop_per_slice": flops_per_slice / 1e9,
        "network_gflops": network_gflops,
        "matmul_fp32_gflops": matmul,
        "matmul_bf16_gflops": matmul_bf16,
        "fraction_of_matmul": network_gflops / matmul,
        "fraction_of_bf16_matmul": network_gflops / matmul_bf16,
        "psnr_window_db": _psnr(clean, denoised, _CT_WINDOW),
        "psnr_full_db": _psnr(clean, denoised, _CT_RANGE),
        "peak_rss_mb": _maxrss_mb(),
        "peak_device_mb": peak_device_mb,
    }


def _psnr(clean: np.ndarray, image: np.ndarray, window: tuple[float, float]) -> float:
    """Mean over slices of the PSNR within ``window`` (values clipped to it)."""
    from training.metrics import psnr

    low, high = window
    values = [
        psnr(np.clip(c, low, high), np.clip(x, low, high), high - low)
        for c, x in zip(clean, image, strict=True)
    ]
    return float(np.mean(values))


def _child_memmap(params: dict[str, Any]) -> dict[str, Any]:
    """``denoise_volume`` from a memmapped int16 series into memmapped outputs."""
    import torch

    from inference import denoise_volume, load_model, warm_up

    torch.set_num_threads(int(params["threads"]))
    depth, size = int(params["depth"]), int(params["size"])
    folder = Path(params["tmp"])
    source = np.lib.format.open_memmap(
        folder / "volume.npy", mode="w+", dtype=np.int16, shape=(depth, size, size)
    )
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    body = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (0.4 * size) ** 2
    base = np.where(body, 40, -1000).astype(np.int16)
    noise = rng.normal(0, 20, (16, size, size)).astype(np.int16)
    for z in range(depth):
        source[z] = base + noise[z % len(noise)]
    source.flush()
    del source, noise
    model = load_model(device=params["device"])
    warm_up(model, slice_shape=(size, size))
    volume = np.load(folder / "volume.npy", mmap_mode="r")
    outputs = [
        np.lib.format.open_memmap(
            folder / f"{name}.npy", mode="w+", dtype=np.float32, shape=volume.shape
        )
        for name in ("reconstruction", "residual")
    ]
    baseline_kb = _status_kb("RssAnon")
    baseline_rss_kb = _status_kb("VmRSS")
    start = time.perf_counter()
    with _AnonPeak() as peak:
        result = denoise_volume(
            volume,
            model,
            spacing=(1.0, 0.7, 0.7),
            reconstruction_out=outputs[0],
            residual_out=outputs[1],
        )
    elapsed = time.perf_counter() - start
    volume_mb = depth * size * size * 4 / 2**20
    return {
        "shape": [depth, size, size],
        "device": params["device"],
        "float32_volume_mb": volume_mb,
        "seconds": elapsed,
        "slices_per_s": depth / elapsed,
        "anon_peak_mb": peak.peak_kb / 1024,
        "anon_growth_mb": (peak.peak_kb - baseline_kb) / 1024,
        "rss_growth_mb": (peak.peak_rss_kb - baseline_rss_kb) / 1024,
        "outputs_are_memmaps": isinstance(result.reconstruction, np.memmap),
        "precision": result.provenance["precision"],
    }


_CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "e2e": _child_e2e,
    "model": _child_model,
    "memmap": _child_memmap,
}


def _spawn(kind: str, params: dict[str, Any], timeout_s: float = 900) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "bench",
        "speed",
        "--child",
        kind,
        "--params",
        json.dumps(params),
    ]
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        command, cwd=root, capture_output=True, text=True, timeout=timeout_s
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": f"{kind} exited {done.returncode}: {' | '.join(tail)}"}
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- parent


def _held_out(count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Held-out low-dose CT phantoms (quarter and tenth dose), never trained on."""
    from training.data import HELD_OUT_PHANTOM_SEED
    from training.evaluate import held_out_pairs

    pairs = held_out_pairs(
        "CT",
        (0.25, 0.1),
        count=count,
        size=size,
        real=False,
        seed=HELD_OUT_PHANTOM_SEED,
    )
    flat = [pair for level in sorted(pairs) for pair in pairs[level]]
    noisy = np.stack([np.asarray(p.noisy, np.float32) for p in flat])
    clean = np.stack([np.asarray(p.clean.image, np.float32) for p in flat])
    return noisy, clean


def _bm3d_slice_s(noisy: np.ndarray, clean: np.ndarray, crop: int | None) -> float:
    """Seconds BM3D takes on one full slice (timed on a crop and scaled by pixels)."""
    import bm3d

    image, reference = noisy, clean
    if crop:
        y0 = (image.shape[0] - crop) // 2
        x0 = (image.shape[1] - crop) // 2
        image = image[y0 : y0 + crop, x0 : x0 + crop]
        reference = reference[y0 : y0 + crop, x0 : x0 + crop]
    sd = float(np.std(image - reference)) / 4096.0
    start = time.perf_counter()
    bm3d.bm3d((image.astype(np.float64) + 1024.0) / 4096.0, sigma_psd=sd)
    elapsed = time.perf_counter() - start
    return elapsed * noisy.size / image.size


def _bundle_batch() -> int:
    from inference import load_model

    return int(load_model(device="cpu").input_spec["batch_size"])


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"bench speed: --device {device}: CUDA is not available")
    return device


def _device_name(device: str) -> str:
    import torch

    from inference.devices import device_name

    return device_name(torch.device(device))


def _compare_variants(variants: dict[str, Any]) -> dict[str, Any]:
    """Each variant's speed-up and PSNR change against the fp32 one."""
    reference = variants.get("fp32", {})
    for row in variants.values():
        if "psnr_window_db" in row and "psnr_window_db" in reference:
            row["psnr_window_change_db"] = (
                row["psnr_window_db"] - reference["psnr_window_db"]
            )
            row["psnr_full_change_db"] = row["psnr_full_db"] - reference["psnr_full_db"]
            row["speedup_vs_fp32"] = reference["ms_per_slice"] / row["ms_per_slice"]
            row["quality_ok"] = row["psnr_window_change_db"] >= -MAX_PSNR_LOSS_DB
    return variants


def run(
    *,
    slices: int = 300,
    size: int = 512,
    quick: bool = False,
    device: str = "auto",
    parts: Sequence[str] = PARTS,
    huge_slices: int = 0,
) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-safe report (see the module docstring)."""
    from dicomio.synthetic import phantom_volume, write_series

    started = time.perf_counter()
    device = _resolve_device(device)
    threads = min(2, len(os.sched_getaffinity(0)))
    report: dict[str, Any] = {
        "benchmark": "speed",
        "quick": quick,
        "device": device,
        "device_name": _device_name(device),
        "shape": [slices, size, size],
        "cpus": len(os.sched_getaffinity(0)),
        "threads": threads,
        "float32_volume_mb": slices * size * size * 4 / 2**20,
        "parts": list(parts),
        "e2e": {},
        "variants": {},
        "memmap": [],
        "bm3d": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        root = Path(tmp)
        if "e2e" in parts:
            series_dir = root / "series"
            series_dir.mkdir()
            volume = phantom_volume((slices, size, size), seed=1)
            write_series(series_dir, volume, spacing_mm=(1.0, 0.7, 0.7))
            del volume
            # On a GPU also at the bundle's own (CPU-sized) batch, against the
            # engine's larger default there.
            runs = {"e2e": None}
            if device != "cpu":
                runs["e2e_bundle_batch"] = {"batch_size": _bundle_batch()}
            for key, job_params in runs.items():
                e2e_dir = root / key
                e2e_dir.mkdir()
                report[key] = _spawn(
                    "e2e",
                    {
                        "tmp": str(e2e_dir),
                        "series_dir": str(series_dir),
                        "threads": threads,
                        "device": device,
                        "job_params": job_params,
                    },
                )

        if "variants" in parts or "bm3d" in parts:
            noisy, clean = _held_out(1 if quick else 4, 512)
        if "variants" in parts:
            held_path = root / "held_out.npz"
            np.savez(held_path, noisy=noisy, clean=clean)
            names = QUICK_VARIANTS if quick else tuple(_variants(device))
            report["variants"] = _compare_variants(
                {
                    name: _spawn(
                        "model",
                        {
                            "variant": name,
                            "device": device,
                            "size": 512,
                            "held_out": str(held_path),
                            "timing_slices": (8 if quick else 32)
                            * (1 if device == "cpu" else 16),
                        },
                    )
                    for name in names
                }
            )

        bm3d_s: float | None = None
        memmap_runs = []
        if "memmap" in parts:
            # Every depth spans several chunks (8 slices of 1024x1024 each), past
            # the first few, while buffers, heaps and helper threads settle; the
            # deepest holds four times the data of the shallowest.
            depths = (16, 32, 64) if quick else (64, 128, 256)
            memmap_runs = [(d, 1024) for d in depths]
        if huge_slices:
            memmap_runs.append((huge_slices, 1024))
        for depth, side in memmap_runs:
            folder = root / f"memmap-{depth}"
            folder.mkdir()
            report["memmap"].append(
                _spawn(
                    "memmap",
                    {
                        "tmp": str(folder),
                        "depth": depth,
                        "size": side,
                        "threads": threads,
                        "device": device,
                    },
                    timeout_s=3600,
                )
            )

        if "bm3d" in parts:
            try:
                bm3d_s = _bm3d_slice_s(noisy[0], clean[0], 128 if quick else None)
            except (ImportError, OSError) as exc:  # a machine without its binaries
                report["bm3d"] = {"error": f"bm3d: {exc}"}
                bm3d_s = None
        if bm3d_s is not None:
            report["bm3d"] = {
                "seconds_per_512_slice": bm3d_s,
                "timed_on": "128x128 crop, scaled by pixels"
                if quick
                else "one 512x512 slice",
                "volume_s_extrapolated": bm3d_s * slices * size * size / 512**2,
            }
    report["summary"] = _summary(report, slices)
    report["goals"] = _goals(report)
    report["elapsed_s"] = time.perf_counter() - started
    report = _rounded(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "speed" + ("-cuda" if device != "cpu" else "") + ("-quick" if quick else "")
    (RESULTS / f"{stem}.md").write_text(_markdown(report))
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2))
    return report


def _default_variant(variants: dict[str, Any]) -> str | None:
    """The fastest variant with the most threads within the PSNR budget that needs
    no compile step at load (what ``precision="auto"`` should pick)."""
    most_threads = max((r.get("threads", 0) for r in variants.values()), default=0)
    eager = [
        (row["ms_per_slice"], name)
        for name, row in variants.items()
        if row.get("quality_ok")
        and row.get("prepared") in ("eager", "fused")
        and row.get("threads") == most_threads
    ]
    return min(eager)[1] if eager else None


def _summary(report: dict[str, Any], slices: int) -> dict[str, Any]:
    e2e = report["e2e"]
    variants = report["variants"]
    default = _default_variant(variants)
    chosen = variants.get(e2e.get("precision") or "", variants.get(default or "", {}))
    summary: dict[str, Any] = {
        "e2e_s": e2e.get("e2e_s"),
        "e2e_precision": e2e.get("precision"),
        "warmup_s": e2e.get("warmup_s"),
        "model_only_s": (chosen.get("ms_per_slice", 0) / 1000 * slices) or None,
        "model_only_slices_per_s": chosen.get("slices_per_s"),
        "e2e_slices_per_s": slices / e2e["e2e_s"] if e2e.get("e2e_s") else None,
        "fastest_quality_ok_uncompiled_variant": default,
        "network_gflops": chosen.get("network_gflops"),
        "matmul_fp32_gflops": chosen.get("matmul_fp32_gflops"),
        "network_fraction_of_fp32_matmul": chosen.get("fraction_of_matmul"),
        "network_fraction_of_bf16_matmul": chosen.get("fraction_of_bf16_matmul"),
        "fp32_network_fraction_of_fp32_matmul": variants.get("fp32", {}).get(
            "fraction_of_matmul"
        ),
        "peak_rss_mb": e2e.get("peak_rss_mb"),
        "peak_rss_growth_mb": (
            e2e["peak_rss_mb"] - e2e["baseline_rss_mb"]
            if "peak_rss_mb" in e2e
            else None
        ),
        "peak_anon_growth_mb": (
            e2e["peak_anon_mb"] - e2e["baseline_anon_mb"]
            if "peak_anon_mb" in e2e
            else None
        ),
    }
    if e2e.get("e2e_s") and "volume_s_extrapolated" in report["bm3d"]:
        summary["speedup_vs_bm3d"] = (
            report["bm3d"]["volume_s_extrapolated"] / e2e["e2e_s"]
        )
    return summary


def _goals(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals that this run measured (a part not run sets none)."""
    summary, parts = report["summary"], report["parts"]
    volume_mb = report["float32_volume_mb"]
    on_cpu = report["device"] == "cpu"
    goals: dict[str, Any] = {
        "measured_at_issue_size": report["shape"] == [300, 512, 512]
    }
    if "e2e" in parts:
        limit_s = 15 if on_cpu else 2
        goals[f"e2e_le_{limit_s}_s"] = bool(
            summary["e2e_s"] and summary["e2e_s"] <= limit_s
        )
        growth = summary["peak_rss_growth_mb"]
        goals["peak_rss_growth_le_3x_volume"] = bool(
            growth is not None and growth <= 3 * volume_mb
        )
        goals["peak_rss_le_3x_volume"] = bool(
            summary["peak_rss_mb"] and summary["peak_rss_mb"] <= 3 * volume_mb
        )
    if "e2e" in parts and "bm3d" in parts:
        goals["speedup_vs_bm3d_ge_100"] = bool(summary.get("speedup_vs_bm3d", 0) >= 100)
    if "variants" in parts and on_cpu:
        goals["network_ge_half_of_matmul"] = bool(
            (summary["network_fraction_of_fp32_matmul"] or 0) >= 0.5
        )
    memmaps = [m for m in report["memmap"] if "anon_growth_mb" in m]
    if "memmap" in parts and len(memmaps) >= 2:
        # The deepest memmapped series must grow memory by less than a quarter of
        # the data it adds over the shallowest: memory follows the chunk, not the
        # series (run-to-run noise of the heaps, about +-70 MB, stays well inside
        # that). Anonymous memory, and resident memory with the mapped file pages.
        shallow, deep = min(memmaps, key=_depth), max(memmaps, key=_depth)
        added_mb = deep["float32_volume_mb"] - shallow["float32_volume_mb"]
        for key in ("anon_growth_mb", "rss_growth_mb"):
            name = "memmap_" + key.split("_")[0] + "_flat_in_depth"
            goals[name] = deep[key] - shallow[key] <= 0.25 * added_mb
    return goals


def _depth(run: dict[str, Any]) -> int:
    return int(run["shape"][0])


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _markdown(report: dict[str, Any]) -> str:
    s, g, e2e = report["summary"], report["goals"], report["e2e"]
    shape = "x".join(str(v) for v in report["shape"])
    lines = [
        f"# Speed benchmark on {report['device_name']}"
        f"{' (quick)' if report['quick'] else ''}",
        "",
        f"{shape} CT, device {report['device']}, {report['cpus']} CPUs, "
        f"{report['threads']} torch threads. Each part ran in its own process; the "
        "machine may be shared, so compare ratios from the same run.",
        "",
    ]
    if e2e:
        lines += [
            "## End to end (upload_ingest -> denoise_job_request -> denoise_job_run)",
            "",
            f"- total {s['e2e_s']} s ({e2e.get('precision')}, batch "
            f"{e2e.get('batch_size')}) on a warmed-up worker "
            f"(warm-up {e2e.get('warmup_s')} s, once per worker process): ingest "
            f"{e2e.get('ingest_s')} s ({json.dumps(e2e.get('ingest_timings_s'))}), "
            f"job {e2e.get('job_run_s')} s; job stages "
            f"{json.dumps(e2e.get('job_timings_s'))}",
            f"- peak RSS {s['peak_rss_mb']} MB ({s['peak_rss_growth_mb']} MB above "
            f"the process before ingest; anonymous memory grew "
            f"{s['peak_anon_growth_mb']} MB); float32 volume "
            f"{report['float32_volume_mb']} MB",
        ]
    other = report.get("e2e_bundle_batch")
    if other:
        lines.append(
            f"- at the bundle's batch {other.get('batch_size')}: total "
            f"{other.get('e2e_s', other.get('error'))} s, job stages "
            f"{json.dumps(other.get('job_timings_s'))}"
        )
    if "error" in report["bm3d"]:
        lines.append(f"- {report['bm3d']['error']}")
    elif report["bm3d"]:
        lines.append(
            f"- BM3D {report['bm3d']['seconds_per_512_slice']} s per 512² slice "
            f"({report['bm3d']['timed_on']}, CPU), "
            f"{report['bm3d']['volume_s_extrapolated']} s for the volume: end to end "
            f"is {s.get('speedup_vs_bm3d')}x faster"
        )
    if report["variants"]:
        lines += [
            "",
            "## Network variants (model only, held-out CT phantoms at 1/4 and 1/10 "
            "dose)",
            "",
            "| variant | batch | ms/slice | slices/s | x fp32 | GFLOP/s | "
            "% fp32 matmul | % bf16 matmul | fp32 matmul GFLOP/s | PSNR win dB | "
            "Δ vs fp32 dB | prepare s | peak RSS MB | ok |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    for name, row in report["variants"].items():
        if "error" in row:
            lines.append(f"| {name} | {row['error']} |" + " |" * 12)
            continue
        cells = [
            f"{row['batch_size']}",
            f"{row['ms_per_slice']:.2f}",
            f"{row['slices_per_s']:.1f}",
            f"{row.get('speedup_vs_fp32', 0):.2f}",
            f"{row['network_gflops']:.1f}",
            f"{100 * row['fraction_of_matmul']:.0f}",
            f"{100 * row['fraction_of_bf16_matmul']:.0f}",
            f"{row['matmul_fp32_gflops']:.0f}",
            f"{row['psnr_window_db']:.2f}",
            f"{row.get('psnr_window_change_db', 0):+.3f}",
            f"{row['prepare_s'] + row['first_call_s']:.1f}",
            f"{row['peak_rss_mb']:.0f}",
            "yes" if row.get("quality_ok") else "no",
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if report["memmap"]:
        lines += ["", "## Memory-mapped series (chunked)", ""]
    for m in report["memmap"]:
        if "error" in m:
            lines.append(f"- {m['error']}")
            continue
        lines.append(
            f"- {'x'.join(map(str, m['shape']))}: {m['seconds']} s "
            f"({m['slices_per_s']} slices/s), float32 volume "
            f"{m['float32_volume_mb']} MB, anonymous memory grew {m['anon_growth_mb']} "
            f"MB (peak {m['anon_peak_mb']} MB), resident memory grew "
            f"{m['rss_growth_mb']} MB"
        )
    lines += ["", "## Goals", ""]
    lines += [f"- {name}: {value}" for name, value in g.items()]
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench speed",
        description="End-to-end and model speed of the default CT denoiser.",
    )
    parser.add_argument("--json", action="store_true", help="(output is always JSON)")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument(
        "--quick", action="store_true", help="48 slices, three variants (~60 s)"
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when present), cpu, cuda or cuda:N (default auto)",
    )
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated subset of {','.join(PARTS)} (default all)",
    )
    parser.add_argument(
        "--huge-slices",
        type=int,
        default=0,
        help="also denoise a memmapped 1024x1024xN series (e.g. 1000: 4 GB float32)",
    )
    parser.add_argument("--child", choices=sorted(_CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(list(argv))
    if args.child:
        print(json.dumps(_CHILDREN[args.child](json.loads(args.params))))
        return 0
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {', '.join(unknown)}; choose from {PARTS}")
    slices = 48 if args.quick and args.slices == 300 else args.slices
    report = run(
        slices=slices,
        size=args.size,
        quick=args.quick,
        device=args.device,
        parts=parts,
        huge_slices=args.huge_slices,
    )
    print(json.dumps(report))
    failed = "e2e" in parts and not report["e2e"].get("succeeded")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
