"""Device and numeric-precision selection for inference (CUDA autocast or CPU fp32)."""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Iterator

import torch

__all__ = [
    "PRECISIONS",
    "CPU_BF16_KINDS",
    "cpu_has_native_bf16",
    "select_device",
    "resolve_precision",
    "autocast",
    "device_name",
]

#: Values accepted for ``precision``; "auto" picks bf16 (or fp16) on CUDA, fp32 on CPU
#: except for the network kinds in :data:`CPU_BF16_KINDS` on CPUs with bf16 hardware.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")

#: Network kinds whose bf16 autocast output stays within 0.1 dB PSNR of fp32 on the
#: held-out CT set (``python -m bench speed``, bench/results/speed.md); "auto" proposes
#: bf16 for them on CPUs with native bf16 instructions, and the engine keeps it where
#: it measures faster (:func:`inference.runner.faster_cpu_precision`).
CPU_BF16_KINDS: frozenset[str] = frozenset({"fast_unet_noise"})


def select_device(device: torch.device | str | None = None) -> torch.device:
    """The device to run on: ``device`` when given, else CUDA when available, else CPU.

    Raises:
        ValueError: when CUDA is asked for but not available.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return resolved


def resolve_precision(
    precision: str, device: torch.device, network_kind: str | None = None
) -> str:
    """Turn ``precision`` (one of :data:`PRECISIONS`) into "fp32", "bf16" or "fp16".

    Args:
        precision: the requested precision.
        device: where the network runs.
        network_kind: the bundle's ``network_def["kind"]``, default ``None``; "auto"
            on a CPU is bf16 only for kinds in :data:`CPU_BF16_KINDS` on a CPU with
            native bf16 (:func:`cpu_has_native_bf16`), else fp32.

    Raises:
        ValueError: for an unknown precision, or fp16 on a CPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            if network_kind in CPU_BF16_KINDS and cpu_has_native_bf16():
                return "bf16"
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision 'fp16' needs a CUDA device; use 'bf16' or 'fp32'")
    return precision


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bf16 in hardware (AVX512-BF16 or AMX); without it
    oneDNN emulates bf16 and is no faster than fp32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Autocast context for a resolved precision; a no-op for fp32."""
    if precision == "fp32":
        yield
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def device_name(device: torch.device) -> str:
    """Human-readable name of the hardware: the GPU model or the CPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"
