"""Site adaptation: fine-tune a CT bundle on a site's own scans, then decide whether
the new version may become the default.

A site has no clean scans, and its CT noise is spatially correlated (the noise
power spectra of real scans show neighbouring pixels correlated 0.3-0.7), which
defeats blind-spot losses (Noise2Void, Neighbor2Neighbor): they assume noise
independent from pixel to pixel. The site's slices are used as the targets of
:mod:`training.synth` instead: each crop gets noise at least ``real_ratio`` times
the slice's own (with the site's own measured noise texture among the textures),
so the model learns the site's anatomy, kernel and noise without a clean image;
a share of synthetic slices with exact targets keeps what the parent knew.

The last fifth of every series is held out (with a two-slice gap), and the
decision is taken on it with the neighbour-slice measures of
:mod:`training.neighbours`, parent against candidate: the candidate may become
the default only if it removes at least as much noise, shows no more structure in
its residual (within 0.02), stays under the real-data bar (structure <= 0.10) and
keeps the quiet-scan bar (residual SD <= 2x the noise).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inference.bundle import models_root_of, read_metadata
from inference.registry import list_models, next_version, write_default
from training.errors import DataError

__all__ = [
    "SiteVolume",
    "app_volumes",
    "decide",
    "describe",
    "held_out_range",
    "pin_default",
    "site_config",
    "verdict",
]

#: Share of each series (its last slices) held out for the decision.
HELD_OUT_SHARE = 0.2
#: Structure the candidate may add over the parent on held-out site slices.
STRUCTURE_TOLERANCE = 0.02


@dataclass(frozen=True)
class SiteVolume:
    """One site series: its stored volume (``.npy``, HU), pixel spacing and name."""

    path: Path
    pixel_mm: float
    name: str


def app_volumes(series_ids: Sequence[int], manage: Path) -> list[SiteVolume]:
    """Resolve the app's series IDs to their stored volumes through
    ``manage.py series_volumes --json`` (training never imports the app).

    Raises:
        DataError: with the app's own reason when a series cannot be used.
    """
    done = subprocess.run(
        [
            sys.executable,
            str(manage),
            "series_volumes",
            "--json",
            *map(str, series_ids),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        reason = (done.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise DataError(f"finetune: series {list(series_ids)}: {reason}")
    rows = json.loads(done.stdout)
    for row in rows:
        if row["modality"] != "CT":
            raise DataError(
                f"finetune: series {row['id']} is {row['modality']}; only CT series "
                "train the CT model"
            )
    return [
        SiteVolume(Path(r["volume"]), float(r["spacing_mm"][1]), f"series {r['id']}")
        for r in rows
    ]


def held_out_range(depth: int) -> tuple[int, int]:
    """The held-out slices ``[start, depth)`` of a series of ``depth`` slices."""
    return max(0, depth - max(3, int(round(depth * HELD_OUT_SHARE)))), depth


def site_config(
    parent: Path,
    volumes: Sequence[SiteVolume],
    *,
    version: str | None = None,
    seconds: float = 600.0,
    output_dir: Path | None = None,
    threads: int = 2,
) -> dict[str, Any]:
    """A training config that fine-tunes ``parent`` on the site volumes.

    Args:
        parent: the parent bundle folder (a noise-conditioned CT bundle).
        volumes: the site's series.
        version: the new version, default the next minor one free beside the
            parent.
        seconds: training time budget.
        output_dir: run folder, default ``runs/<name>-<version>``.
        threads: CPU threads.

    Raises:
        DataError: for a parent that is not a noise-conditioned CT bundle, or
            series too short to hold any slices out.
    """
    meta = read_metadata(parent)
    root = models_root_of(parent, meta)
    spec = meta["input_spec"]
    if spec.get("modality") != "CT" or not meta["network_def"]["args"].get(
        "noise_conditioned"
    ):
        raise DataError(
            f"finetune: {parent}: site fine-tuning needs a noise-conditioned CT "
            f"bundle, got {meta['name']} {meta['version']}"
        )
    if version is None:
        version = next_version(root, meta["name"], meta["version"])
    sources: list[dict[str, Any]] = [
        {"kind": "phantom", "count": 4, "seed": 1000, "size": 512},
        {"kind": "texture", "count": 8, "seed": 3000, "size": 512},
    ]
    for volume in volumes:
        depth = int(np.load(volume.path, mmap_mode="r").shape[0])
        if depth < 8:
            raise DataError(
                f"finetune: {volume.name}: {depth} slices; at least 8 are needed to "
                "hold some out for the decision"
            )
        sources.append(
            {
                "kind": "volume",
                "path": str(volume.path),
                "pixel_mm": volume.pixel_mm,
                "held_out": list(held_out_range(depth)),
            }
        )
    training = copy.deepcopy(meta.get("training", {}))
    noise = dict(training.get("noise_model", {}))
    # The parent's noise recipe, recorrupted real crops included: those are what
    # teaches a model the site's own scanner noise.
    from training.synth import NOISE_DEFAULTS

    noise_keys = tuple(NOISE_DEFAULTS)
    return {
        "name": meta["name"],
        "version": version,
        "changelog": f"site fine-tune of {meta['name']} {meta['version']} on "
        + ", ".join(v.name for v in volumes),
        "modality": "CT",
        "seed": 0,
        "network": meta["network_def"],
        "data": {
            "sources": sources,
            "noise": {k: noise[k] for k in noise_keys if k in noise},
            "levels": [2.0, 10.0, 40.0],
            "validation": {
                "count": 1,
                "seed": 850000,
                "size": 512,
                "levels": [2.0, 10.0, 40.0],
            },
            "workers": threads,
        },
        "train": {
            "mode": "supervised",
            "init_from": str(parent),
            "epochs": 1000,
            "steps_per_epoch": 50,
            "batch_size": 16,
            "patch_size": 128,
            "lr": 2e-4,
            "threads": threads,
            "time_budget_s": seconds,
            "output_dir": str(output_dir or Path("runs") / f"{meta['name']}-{version}"),
        },
        "evaluate": {"count": 2},
        "export": {"models_root": str(root)},
    }


def pin_default(root: Path) -> None:
    """Write ``root/DEFAULT`` as the ``name:version`` it resolves to now, so that a
    candidate exported beside it does not become the default by being the newest
    version of the name; only :func:`decide` may promote it."""
    for info in list_models(root):
        if info.default:
            write_default(root, info.name, info.version)
            return


def decide(
    parent: Any, candidate: Any, volumes: Sequence[SiteVolume]
) -> dict[str, Any]:
    """Compare parent and candidate (loaded models) on the held-out site slices.

    Returns:
        ``{"promote": bool, "reasons": [...], "parent": {...}, "candidate":
        {...}}`` with the neighbour-slice measures of each on each series.
    """
    from inference import denoise_volume
    from training.neighbours import neighbour_test

    scores: dict[str, list[dict[str, Any]]] = {"parent": [], "candidate": []}
    for volume in volumes:
        stack = np.load(volume.path, mmap_mode="r").astype(np.float32)
        start, stop = held_out_range(stack.shape[0])
        # Each scored slice needs both neighbours inside the held-out range.
        slices = list(range(start + 1, stop - 1))
        if not slices:
            continue
        spacing = (1.0, volume.pixel_mm, volume.pixel_mm)
        for role, model in (("parent", parent), ("candidate", candidate)):
            out = stack.copy()
            out[slices] = denoise_volume(
                stack[slices], model, spacing=spacing, modality="CT"
            ).reconstruction
            scores[role].append(neighbour_test(stack, out, slices))
    if not scores["parent"]:
        return {
            "promote": False,
            "reasons": ["no held-out slices with two neighbours to compare on"],
            **scores,
        }
    summary = {
        role: {
            # None (nothing measured on a volume) counts as NaN: verdict refuses.
            key: float(np.mean([np.nan if s[key] is None else s[key] for s in rows]))
            for key in ("structure", "noise_removed", "residual_to_noise")
        }
        for role, rows in scores.items()
    }
    promote, reasons = verdict(summary["parent"], summary["candidate"])
    return {"promote": promote, "reasons": reasons, "summary": summary, **scores}


def _finite(value: Any) -> bool:
    return value is not None and bool(np.isfinite(float(value)))


def verdict(
    parent: Mapping[str, float], candidate: Mapping[str, float]
) -> tuple[bool, list[str]]:
    """Whether a candidate may replace its parent as the default, from their mean
    neighbour-slice measures (``structure``, ``noise_removed``,
    ``residual_to_noise``), and why (module docstring)."""
    measures = ("structure", "noise_removed", "residual_to_noise")
    unmeasured = [
        f"{who} {name}"
        for who, values in (("parent", parent), ("candidate", candidate))
        for name in measures
        if not _finite(values.get(name))
    ]
    if unmeasured:
        # A comparison with NaN is False: it would let the candidate through.
        return False, ["not measured on the held-out slices: " + ", ".join(unmeasured)]
    reasons = []
    if candidate["noise_removed"] < parent["noise_removed"]:
        reasons.append(
            f"removes less noise ({candidate['noise_removed']:.1%} vs "
            f"{parent['noise_removed']:.1%})"
        )
    if candidate["structure"] > max(parent["structure"], 0.0) + STRUCTURE_TOLERANCE:
        reasons.append(
            f"more structure in the residual ({candidate['structure']:.3f} vs "
            f"{parent['structure']:.3f})"
        )
    if candidate["structure"] > 0.10:
        reasons.append(f"structure {candidate['structure']:.3f} above the 0.10 bar")
    if candidate["residual_to_noise"] > 2.0:
        reasons.append(
            f"residual {candidate['residual_to_noise']:.2f}x the noise (bar 2x)"
        )
    if reasons:
        return False, reasons
    return True, ["at least as good as the parent on every measure"]


def describe(decision: Mapping[str, Any]) -> str:
    """One line for the command line and the audit log."""
    verdict = "may become the default" if decision["promote"] else "stays optional"
    return f"{verdict}: " + "; ".join(decision["reasons"])
