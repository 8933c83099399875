"""Reflect padding of slices: MONAI's ``Pad`` against the hand-written gather.

``python -m bench padding [--repeats N] [--device cpu|cuda]``: for batches of 8
slices padded to a multiple of 32 as :func:`inference.runner.predict_slices` pads
them, the median time of :func:`inference.runner.reflect_pad` (MONAI's ``Pad``),
of the index gather it falls back to for pads wider than the image
(``_gather_reflect_pad``) and of ``np.pad``; all three give the same numbers.
Prints one JSON object; ``bench/results/fast-paths.md`` records a run.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

#: (slices, channels, height, width) of the batches timed.
SHAPES = ((8, 1, 500, 500), (8, 1, 511, 511), (8, 2, 500, 500), (8, 1, 250, 250))
MULTIPLE = 32


def _median_ms(
    pad: Callable[[], object], repeats: int, sync: Callable[[], None]
) -> float:
    pad()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        pad()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def measure(repeats: int, device: str) -> dict:
    from inference.runner import _gather_reflect_pad, padding_for, reflect_pad

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    rows = []
    for shape in SHAPES:
        batch = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        pads = padding_for(shape[2:], MULTIPLE)
        array = batch.numpy()
        widths = [(0, 0), (0, 0), *pads]
        on_device = batch.to(device)
        expected = np.pad(array, widths, mode="reflect")
        for pad in (reflect_pad, _gather_reflect_pad):
            if not np.array_equal(pad(on_device, pads).cpu().numpy(), expected):
                raise AssertionError(f"{pad.__name__} differs from np.pad on {shape}")
        rows.append(
            {
                "shape": list(shape),
                "pads": [list(p) for p in pads],
                "monai_pad_ms": _median_ms(
                    lambda b=on_device, p=pads: reflect_pad(b, p), repeats, sync
                ),
                "gather_ms": _median_ms(
                    lambda b=on_device, p=pads: _gather_reflect_pad(b, p),
                    repeats,
                    sync,
                ),
                "np_pad_ms": _median_ms(
                    lambda a=array, w=widths: np.pad(a, w, mode="reflect"),
                    repeats,
                    lambda: None,
                ),
            }
        )
    return {
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "repeats": repeats,
        "rows": rows,
    }


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench padding", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    print(json.dumps(measure(args.repeats, args.device), indent=2))
    return 0
