"""Noise removed in fp32 and in bf16 as the slices' noise grows, on real CT.

``python -m bench precision [--model NAME:VERSION] [--series DIR] [--json]``: the
held-out slices of the real head series (training.data.REAL_SERIES_HELD_OUT), as
they are and with white noise of 3-24 HU added to every slice, denoised by
:func:`inference.runner.predict_slices` with the precision pinned (the per-slice
fp32 fallback of the worker is what this measures, so it is bypassed here), scored
by the neighbour-slice test. Writes ``bench/results/precision_noise.{json,md}``;
:data:`inference.runner.REDUCED_PRECISION_MIN_NOISE` is chosen from it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"
ADDED_HU = (0.0, 3.0, 6.0, 12.0, 24.0)


def measure(model_ref: str | None, series: Path) -> dict:
    import inference
    from bench._realdata import read_series
    from inference import runner
    from inference.noise import estimate_noise_sd
    from training.data import REAL_SERIES_HELD_OUT
    from training.neighbours import neighbour_test

    volume, _ = read_series(series)
    start, stop = REAL_SERIES_HELD_OUT
    slices = list(range(start + 1, stop - 1, 2))
    model = inference.load_model(model_ref, device="cpu")
    spec = model.input_spec
    rng = np.random.default_rng(0)
    rows = []
    # Bypass the worker's fallback: measure each precision as it is.
    floor = runner.REDUCED_PRECISION_MIN_NOISE
    runner.REDUCED_PRECISION_MIN_NOISE = 0.0
    try:
        for added in ADDED_HU:
            noisy = volume.astype(np.float32)
            if added:
                noisy = noisy + rng.normal(0, added, noisy.shape).astype(np.float32)
            stack = noisy[slices]
            sd = estimate_noise_sd(stack, body_threshold=runner.body_threshold(spec))
            norm = runner.normalisation_for(stack, spec)
            row = {"added_hu": added, "noise_sd_hu": float(np.median(sd))}
            for precision in ("fp32", "bf16"):
                out = runner.predict_slices(
                    torch.from_numpy(stack),
                    model.network,
                    spec=spec,
                    norm=norm,
                    device=torch.device("cpu"),
                    precision=precision,
                    batch_size=8,
                    noise_sd=sd,
                ).numpy()
                full = noisy.copy()
                full[slices] = out
                score = neighbour_test(noisy, full, slices)
                row[precision] = {
                    "noise_removed": score["noise_removed"],
                    "structure": score["structure"],
                }
            rows.append(row)
    finally:
        runner.REDUCED_PRECISION_MIN_NOISE = floor
    return {
        "benchmark": "precision",
        "model": model.ref,
        "series": str(series),
        "slices": slices,
        "fp32_below_noise_hu": floor * float(spec["normalisation"].get("scale", 1)),
        "rows": rows,
    }


def main(argv: Sequence[str]) -> int:
    from bench._realdata import default_series

    parser = argparse.ArgumentParser(
        prog="python -m bench precision", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", default=None, help="default: the default model")
    parser.add_argument("--series", type=Path, default=default_series())
    parser.add_argument("--json", action="store_true", help="(output is always JSON)")
    args = parser.parse_args(argv)
    if not args.series.is_dir():
        parser.error(f"--series {args.series}: no such folder")
    report = measure(args.model, args.series)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "precision_noise.json").write_text(json.dumps(report, indent=2))
    lines = [
        "# Noise removed in fp32 and bf16 by noise level (real head CT)",
        "",
        f"Model {report['model']}; held-out slices {report['slices']} of "
        f"{report['series']}, white noise added to every slice; neighbour-slice "
        "test. The worker runs slices quieter than "
        f"{report['fp32_below_noise_hu']:g} HU in fp32 whatever precision it chose.",
        "",
        "| added (HU) | noise SD (HU) | removed fp32 | removed bf16 | structure fp32 "
        "| structure bf16 |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['added_hu']:g} | {row['noise_sd_hu']:.2f} | "
            f"{row['fp32']['noise_removed']:.1%} | "
            f"{row['bf16']['noise_removed']:.1%} | "
            f"{row['fp32']['structure']:.3f} | {row['bf16']['structure']:.3f} |"
        )
    (RESULTS / "precision_noise.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(report))
    return 0
