"""Architecture comparison: short equal-budget runs, same held-out data, CPU speed."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from inference.fused import cpu_network
from inference.networks import DenoisingNetwork, build_network
from inference.runner import denoise_images, input_channels
from training.config import load_config
from training.evaluate import evaluate_network, held_out_pairs
from training.trainer import run_dir, train

__all__ = ["ms_per_slice", "compare"]


def ms_per_slice(
    network: DenoisingNetwork, *, size: int = 512, batch: int = 8, threads: int = 2
) -> float:
    """Milliseconds per ``size``x``size`` slice at ``batch`` slices per forward pass
    (best of two after a warm-up), with ``threads`` CPU threads, in fp32 as the engine
    runs it (convolution and ReLU fused where the network allows,
    :mod:`inference.fused`). Fixed-window networks are timed on the windows that tile
    the slice."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    network.eval()
    try:
        if network.fixed_roi is not None:
            spec = {
                "modality": "CT",
                "spatial_dims": 2,
                "normalisation": {"kind": "linear", "offset": 0.0, "scale": 1.0},
                "batch_size": batch,
            }
            images = [torch.zeros(size, size).numpy()] * batch
            denoise_images(network, images[:1], spec)
            started = time.perf_counter()
            denoise_images(network, images, spec, batch_size=batch)
            return (time.perf_counter() - started) / batch * 1000.0
        # As the engine runs it on a CPU: convolution and ReLU fused where they can be.
        runnable = cpu_network(network, "fp32") or network
        x = torch.zeros(batch, input_channels(network), size, size)
        with torch.inference_mode():
            runnable(x)
            best = float("inf")
            for _ in range(2):
                started = time.perf_counter()
                runnable(x)
                best = min(best, time.perf_counter() - started)
        return best / batch * 1000.0
    finally:
        torch.set_num_threads(previous)


def compare(
    config_paths: Sequence[Path],
    *,
    budget_s: float,
    output: Path,
    threads: int = 2,
    train_runs: bool = True,
) -> dict[str, Any]:
    """Train each config for about ``budget_s`` seconds, evaluate it on the held-out
    set of its ``evaluate`` section, time it, and write ``output``.json/.md.

    Runs go to ``runs/compare/<name>``; with ``train_runs=False`` the existing
    checkpoints there are evaluated again.
    """
    rows: dict[str, Any] = {}
    pairs_cache: dict[str, Any] = {}
    for path in config_paths:
        # One noisy realisation per slice and level for every network: the same
        # (cached) pairs, whatever the config ships with.
        overrides = [
            f"train.time_budget_s={budget_s}",
            "train.epochs=1000",
            f"train.threads={threads}",
            "data.realisations=1",
        ]
        config = load_config(path, overrides)
        # With a time budget the learning-rate schedule follows the time spent.
        config["train"]["output_dir"] = str(Path("runs") / "compare" / config["name"])
        if train_runs:
            summary = train(config, progress=False)
        else:
            summary = json.loads((run_dir(config) / "train_summary.json").read_text())
        checkpoint = torch.load(
            run_dir(config) / "checkpoint_best.pt",
            map_location="cpu",
            weights_only=False,
        )
        network = build_network(checkpoint["network_def"])
        network.load_state_dict(checkpoint["state_dict"])
        ev = config["evaluate"]
        key = json.dumps([config["modality"], ev], sort_keys=True)
        if key not in pairs_cache:
            pairs_cache[key] = held_out_pairs(
                config["modality"],
                ev["levels"],
                count=int(ev["count"]),
                size=int(ev["size"]),
                real=bool(ev["real"]),
            )
        torch.set_num_threads(threads)
        metrics = evaluate_network(network, checkpoint["input_spec"], pairs_cache[key])
        rows[config["name"]] = {
            "kind": checkpoint["network_def"]["kind"],
            "config": str(path),
            "parameters": sum(p.numel() for p in network.parameters()),
            "steps": len(summary["history"]) * config["train"]["steps_per_epoch"],
            "train_s": round(float(summary["elapsed_s"]), 1),
            "ms_per_512_slice": round(ms_per_slice(network, threads=threads), 1),
            "metrics": metrics,
        }
        _write(rows, output, budget_s)
    return rows


def _write(rows: Mapping[str, Any], output: Path, budget_s: float) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    levels = sorted(
        {
            lvl
            for r in rows.values()
            for lvl in r["metrics"]
            if not lvl.endswith("_real")
        },
        reverse=True,
    )
    lines = [
        "# Architecture comparison",
        "",
        f"Each network trained for about {budget_s:.0f} s on the same data (one "
        "noisy realisation per slice and dose; `python -m training compare`), "
        "scored on the same held-out slices. "
        "PSNR/SSIM in the soft-tissue window W400/L40; lesion contrast kept pooled "
        "over held-out lesions; ms per 512x512 slice at batch 8 on 2 CPU threads.",
        "",
    ]
    header = "| network | kind | params | steps |"
    for level in levels:
        header += f" PSNR {level} | SSIM {level} | contrast {level} |"
    header += " ms/slice |"
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for name, row in rows.items():
        cells = [name, row["kind"], f"{row['parameters']:,}", str(row["steps"])]
        for level in levels:
            m = row["metrics"].get(level, {})
            cells += [
                f"{m.get('psnr_window', float('nan')):.2f}",
                f"{m.get('ssim_window', float('nan')):.3f}",
                f"{m.get('lesion_contrast_retained', float('nan')):.2f}",
            ]
        cells.append(f"{row['ms_per_512_slice']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    output.with_suffix(".md").write_text("\n".join(lines))
