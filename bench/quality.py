"""Quality benchmark: shipped denoisers against classical baselines, on held-out
phantoms and on real scans without a clean reference.

``python -m bench quality [--json] [--quick] [--real-series DIR]``. Held-out data
only: phantoms with seeds at or above ``training.data.HELD_OUT_PHANTOM_SEED`` and the
held-out real slices of ``training.data.REAL_SLICES``, CT at quarter and tenth dose,
MR at two Rician levels, every method on the same noisy inputs; then, for the default
CT model, the real-data sections the JSON carries under ``real_ct`` (the
neighbour-slice test on the held-out slices of a thin real series, against BM3D at
the data's noise level and a 1-pixel blur: ``structure``, ``noise_removed``,
``spectrum_distance``), ``quiet_scan`` (``residual_sd`` against ``noise_sd`` on the
same quiet series), ``lcd`` (a CCT189-like phantom, projection-domain noise at
10/25/55/100 % dose, an LG-CHO: ``dose``, ``insert_mm``, ``auc_fbp``,
``auc_denoised``), ``safeguard`` (the structure flags on real slices) and ``ood``.
Prints one JSON object and writes ``quality.json``, ``quality.md``, ``quality.png``
and ``quality-real.png`` into ``bench/results/`` (``*-quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench._realdata import (
    LCD_DOSES,
    bm3d_denoise,
    default_series,
    gaussian_blur,
    lcd_goals,
    lcd_section,
    ood_section,
    real_ct_section,
    safeguard_section,
)
from training.compare import ms_per_slice

__all__ = ["main", "run", "BASELINES"]

RESULTS = Path(__file__).parent / "results"
#: Signal-present (and as many signal-absent) images per dose in the LCD study.
DEFAULT_LCD_REALISATIONS = 100
CT_LEVELS = (0.25, 0.1)
MR_LEVELS = (0.05, 0.10)
#: Held-out CT phantoms per dose: with four, the lesion contrast kept moved by
#: several percent between phantom sets; sixteen hold it to about one.
DEFAULT_CT_PHANTOMS = 16
#: Data range that classical methods work in for CT: the HU range of the network's
#: normalisation, so parameters in [0, 1] units mean the same for every slice.
_CT_OFFSET, _CT_SCALE = -1024.0, 4096.0


def _noise_sd(noisy: np.ndarray) -> float:
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(noisy))


def _nlm(x: np.ndarray, sd: float) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    return denoise_nl_means(
        x, h=0.8 * sd, sigma=sd, fast_mode=True, patch_size=5, patch_distance=6
    )


def _tv(x: np.ndarray, sd: float) -> np.ndarray:
    from skimage.restoration import denoise_tv_chambolle

    return denoise_tv_chambolle(x, weight=1.5 * sd)


def _wavelet(x: np.ndarray, sd: float) -> np.ndarray:
    from skimage.restoration import denoise_wavelet

    return denoise_wavelet(
        x, sigma=sd, method="BayesShrink", mode="soft", rescale_sigma=True
    )


#: name -> (function of (image in [0, 1]-ish units, noise SD in those units), how the
#: noise SD is obtained). NLM, TV and wavelet use scikit-image's ``estimate_sigma``
#: (sigma-aware, blind); BM3D gets the true SD of the inserted noise inside the body
#: (oracle), its strongest setting.
BASELINES: dict[str, tuple[Callable[[np.ndarray, float], np.ndarray], str]] = {
    "gaussian": (gaussian_blur, "none (sigma 1 px)"),
    "nlm": (_nlm, "estimate_sigma"),
    "tv": (_tv, "estimate_sigma"),
    "wavelet": (_wavelet, "estimate_sigma"),
    "bm3d": (bm3d_denoise, "oracle"),
}


def _scale(modality: str, image: np.ndarray) -> tuple[float, float]:
    if modality == "CT":
        return _CT_OFFSET, _CT_SCALE
    return 0.0, float(np.percentile(image, 99.5)) or 1.0


def _load_ours(modality: str, models_root: Path | None) -> Any:
    from inference import load_model
    from inference.errors import ModelNotFoundError

    name = None if modality == "CT" else "mr-denoise"
    try:
        return load_model(name, models_root=models_root, device="cpu")
    except ModelNotFoundError:
        return None


def _crop(pair: Any, size: int) -> Any:
    """A ``size`` x ``size`` window of a pair around its first lesion (noise is
    simulated on the full slice)."""
    from dataclasses import replace

    ny, nx = pair.noisy.shape
    y, x = (ny - size) // 2, (nx - size) // 2
    mask = pair.clean.lesion_mask
    if mask is not None and (mask == 1).any():
        cy, cx = (int(np.mean(axis)) for axis in np.nonzero(mask == 1))
        y = int(np.clip(cy - size // 2, 0, ny - size))
        x = int(np.clip(cx - size // 2, 0, nx - size))
    window = (slice(y, y + size), slice(x, x + size))
    mask = pair.clean.lesion_mask
    clean = replace(
        pair.clean,
        image=pair.clean.image[window],
        lesion_mask=None if mask is None else mask[window],
    )
    return replace(pair, clean=clean, noisy=pair.noisy[window])


def _datasets(quick: bool, phantoms: int) -> list[dict[str, Any]]:
    from training.data import HELD_OUT_PHANTOM_SEED
    from training.evaluate import held_out_pairs, level_key

    out = []
    if quick:
        # Full-size phantoms (the noise depends on the whole projection), scored on
        # a central crop so BM3D stays within the time budget.
        specs = [("CT", CT_LEVELS, 1, 512, False), ("MR", MR_LEVELS, 1, 256, False)]
    else:
        specs = [
            ("CT", CT_LEVELS, phantoms, 512, True),
            ("MR", MR_LEVELS, 3, 256, True),
        ]
    for modality, levels, count, size, real in specs:
        pairs = held_out_pairs(
            modality,
            levels,
            count=count,
            size=size,
            real=real,
            seed=HELD_OUT_PHANTOM_SEED,
        )
        for level in levels:
            if quick:
                size = 192 if modality == "CT" else 128
                pairs[level] = [_crop(p, size) for p in pairs[level]]
            phantoms = [p for p in pairs[level] if p.clean.lesion_mask is not None]
            scans = [p for p in pairs[level] if p.clean.lesion_mask is None]
            name = f"{modality} {level_key(modality, level)}"
            # Real scans are scored against the full-dose scan, which carries its
            # own noise: a denoiser that also removes that noise is penalised, so
            # they are reported apart from the phantoms (which have a true clean).
            for label, group in ((name, phantoms), (f"{name} real", scans)):
                if group:
                    out.append(
                        {
                            "name": label,
                            "modality": modality,
                            "level": level,
                            "pairs": group,
                        }
                    )
    return out


def _per_source(
    pairs: Sequence[Any], rows: dict[str, list[dict[str, float]]], modality: str
) -> list[dict[str, Any]]:
    """Each real slice's own noise (estimated on the full-dose scan, which is the
    reference), the noise added, and each method's RMSE against that reference: a
    scan whose own noise exceeds the added noise scores a denoiser that removes it
    as worse than the noisy input."""
    from inference.noise import estimate_noise_sd
    from training.data import body_mask

    out = []
    for index, pair in enumerate(pairs):
        clean = pair.clean.image
        body = body_mask(clean, modality)
        (own,) = estimate_noise_sd(
            clean[None], body_threshold=-500.0 if modality == "CT" else None
        )
        out.append(
            {
                "source": pair.clean.source,
                "own_noise_sd": round(float(own), 2),
                "added_noise_sd": round(float(np.std((pair.noisy - clean)[body])), 2),
                "rmse": {
                    method: round(float(values[index]["rmse"]), 2)
                    for method, values in rows.items()
                },
            }
        )
    return out


def run(
    *,
    quick: bool = False,
    models_root: Path | None = None,
    phantoms: int = DEFAULT_CT_PHANTOMS,
    real_series: Path | None = None,
    lcd_realisations: int = DEFAULT_LCD_REALISATIONS,
) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-safe report (see module docstring)."""
    from inference.runner import denoise_images
    from training.data import body_mask
    from training.metrics import image_metrics, mean_metrics

    torch.set_num_threads(2)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "quality",
        "quick": quick,
        "held_out": "phantom seeds >= 900000 and training.data.REAL_SLICES held_out",
        "noise_sd_source": {k: v for k, (_, v) in BASELINES.items()},
        "datasets": {},
        "models": {},
    }
    figures: list[
        tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray, str, str]
    ] = []
    models: dict[str, Any] = {}
    for dataset in _datasets(quick, phantoms):
        modality = dataset["modality"]
        if modality not in models:
            models[modality] = _load_ours(modality, models_root)
            loaded = models[modality]
            if loaded is not None:
                report["models"][modality] = {
                    "name": loaded.name,
                    "version": loaded.version,
                    "sha256": loaded.sha256,
                    "kind": loaded.metadata["network_def"]["kind"],
                    "ms_per_512_slice_batch8": round(
                        ms_per_slice(loaded.network, threads=torch.get_num_threads()),
                        2,
                    ),
                }
        rows: dict[str, list[dict[str, float]]] = {}
        seconds: dict[str, float] = {}
        pixels = 0
        outputs_first: dict[str, np.ndarray] = {}
        pairs = dataset["pairs"]
        methods: list[str] = ["noisy", *BASELINES]
        if models[modality] is not None:
            methods.append("ours")
        for method in methods:
            rows[method], seconds[method] = [], 0.0
        ours_out: list[np.ndarray] = []
        if "ours" in methods:
            # Batched as the engine runs it (input_spec batch size), timed as a whole.
            t0 = time.perf_counter()
            ours_out = denoise_images(
                models[modality].network,
                [p.noisy for p in pairs],
                models[modality].input_spec,
                batch_size=int(models[modality].input_spec["batch_size"]),
                pixel_mm=[p.clean.pixel_mm for p in pairs],
            )
            seconds["ours"] = time.perf_counter() - t0
        for index, pair in enumerate(pairs):
            clean, noisy = pair.clean.image, pair.noisy
            body = body_mask(clean, modality)
            offset, scale = _scale(modality, noisy)
            norm = (noisy - offset) / scale
            true_sd = float(np.std((noisy - clean)[body])) / scale
            blind_sd = _noise_sd(norm)
            pixels += noisy.size
            for method in methods:
                t0 = time.perf_counter()
                if method == "noisy":
                    out = noisy
                elif method == "ours":
                    out = ours_out[index]
                else:
                    fn, source = BASELINES[method]
                    sd = true_sd if source == "oracle" else blind_sd
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        out = fn(norm.astype(np.float64), sd) * scale + offset
                if method != "ours":
                    seconds[method] += time.perf_counter() - t0
                rows[method].append(
                    image_metrics(
                        clean,
                        out,
                        noisy,
                        modality=modality,
                        body=body,
                        lesion_mask=pair.clean.lesion_mask,
                    )
                )
                if index == 0:
                    outputs_first[method] = np.asarray(out, dtype=np.float32)
        per_512 = 512 * 512 / max(pixels, 1)
        per_source = (
            _per_source(pairs, rows, modality)
            if dataset["name"].endswith(" real")
            else None
        )
        table = {}
        for method in methods:
            summary = mean_metrics(rows[method])
            summary["seconds_per_512_slice"] = seconds[method] * per_512
            table[method] = {k: round(float(v), 4) for k, v in summary.items()}
        report["datasets"][dataset["name"]] = {
            "slices": len(pairs),
            "sources": [p.clean.source for p in pairs],
            "methods": table,
        }
        if per_source is not None:
            report["datasets"][dataset["name"]]["per_source"] = per_source
        first = pairs[0]
        # Without a shipped model for the modality, the last column shows TV.
        best = "ours" if "ours" in outputs_first else "tv"
        figures.append(
            (
                dataset["name"],
                first.noisy,
                outputs_first["bm3d"],
                outputs_first[best],
                first.noisy - outputs_first[best],
                modality,
                best,
            )
        )
    stem = "quality-quick" if quick else "quality"
    ct_model = models.get("CT")
    if ct_model is not None:
        _real_sections(
            report,
            ct_model,
            quick=quick,
            models_root=models_root,
            series=real_series or default_series(),
            lcd_realisations=lcd_realisations,
            figure=RESULTS / (stem.replace("quality", "quality-real") + ".png"),
        )
    report["goals"] = _goals(report)
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.md").write_text(_markdown(report))
    _figure(figures, RESULTS / f"{stem}.png")
    report["files"] = [
        str(RESULTS / name)
        for name in (
            f"{stem}.json",
            f"{stem}.md",
            f"{stem}.png",
            stem.replace("quality", "quality-real") + ".png",
        )
    ]
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2))
    return report


def _real_sections(
    report: dict[str, Any],
    model: Any,
    *,
    quick: bool,
    models_root: Path | None,
    series: Path,
    lcd_realisations: int,
    figure: Path,
) -> None:
    """Add ``real_ct``, ``quiet_scan``, ``lcd``, ``safeguard`` and ``ood``."""
    from inference import load_model
    from inference.errors import ModelNotFoundError
    from training.data import REAL_SERIES_HELD_OUT

    real = None
    if series.is_dir():
        real = real_ct_section(model, series, REAL_SERIES_HELD_OUT, quick=quick)
        report["real_ct"], report["quiet_scan"] = real["real_ct"], real["quiet_scan"]
    else:
        missing = {"skipped": f"no real series at {series} (--real-series)"}
        report["real_ct"], report["quiet_scan"] = missing, dict(missing)
    report["lcd"] = lcd_section(
        model,
        realisations=4 if quick else lcd_realisations,
        doses=(0.25, 1.0) if quick else LCD_DOSES,
    )
    report["lcd_goals"] = lcd_goals(report["lcd"])
    if not quick:
        compared = {"ours": model}
        try:
            compared["ct-denoise 1.2.0"] = load_model(
                "ct-denoise", "1.2.0", models_root=models_root, device="cpu"
            )
        except ModelNotFoundError:
            pass
        report["safeguard"] = safeguard_section(compared)
        report["ood"] = ood_section(model)
    _real_figure(report, real, figure)


def _real_figure(
    report: dict[str, Any], real: dict[str, Any] | None, path: Path
) -> None:
    """A held-out real slice (original, ours, BM3D, residuals) and the LCD AUCs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(15, 8))
    if real is not None:
        volume, methods, slices = real["_figure"]
        i = slices[len(slices) // 2]
        shown = [("original", volume[i])]
        shown += [(name, out[i]) for name, out in methods.items() if name != "gaussian"]
        for k, (name, image) in enumerate(shown):
            ax = fig.add_subplot(2, 5, k + 1)
            ax.imshow(image, cmap="gray", vmin=-100, vmax=150)
            ax.set_title(f"slice {i}: {name}", fontsize=8)
            ax.axis("off")
        sd = report["real_ct"]["noise_sd_hu"] or 1.0
        for k, (name, image) in enumerate(shown[1:]):
            ax = fig.add_subplot(2, 5, len(shown) + k + 1)
            ax.imshow(volume[i] - image, cmap="gray", vmin=-4 * sd, vmax=4 * sd)
            ax.set_title(f"residual {name} (±4 noise SD)", fontsize=8)
            ax.axis("off")
    ax = fig.add_subplot(2, 2, 4)
    for insert in sorted({r["insert_mm"] for r in report["lcd"]}):
        rows = [r for r in report["lcd"] if r["insert_mm"] == insert]
        doses = [r["dose"] for r in rows]
        (line,) = ax.plot(doses, [r["auc_fbp"] for r in rows], "--", marker="o")
        ax.plot(
            doses,
            [r["auc_denoised"] for r in rows],
            "-",
            marker="s",
            color=line.get_color(),
            label=f"{insert} mm",
        )
    ax.set_xscale("log")
    ax.set_xlabel("dose fraction")
    ax.set_ylabel("LG-CHO AUC (dashed FBP, solid denoised)")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=70, bbox_inches="tight")
    plt.close(fig)


def _goals(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets for the default CT model at quarter dose."""
    data = report["datasets"].get("CT dose_0.25", {}).get("methods", {})
    if "ours" not in data:
        return {"evaluated": False}
    ours, ref = data["ours"], data["bm3d"]
    speedup = ref["seconds_per_512_slice"] / max(ours["seconds_per_512_slice"], 1e-9)
    real = report.get("real_ct", {})
    quiet = report.get("quiet_scan", {})
    lcd = report.get("lcd_goals", {})
    return {
        "real_ct_goal_met": real.get("goal_met"),
        "quiet_scan_goal_met": quiet.get("goal_met"),
        "lcd_goal_met": bool(lcd) and all(lcd.values()),
        "evaluated": True,
        "psnr_window_gain_over_bm3d_db": round(
            ours["psnr_window"] - ref["psnr_window"], 3
        ),
        "psnr_goal_met": ours["psnr_window"] >= ref["psnr_window"] + 0.5,
        "ssim_goal_met": ours["ssim_window"] >= ref["ssim_window"],
        "lesion_contrast_retained": ours.get("lesion_contrast_retained"),
        "lesion_contrast_retained_se": ours.get("lesion_contrast_retained_se"),
        "lesion_goal_met": ours.get("lesion_contrast_retained", 0.0) >= 0.95,
        "speedup_over_bm3d": round(speedup, 1),
        "speed_goal_met": speedup >= 50,
    }


_COLUMNS = (
    ("psnr_window", "PSNR win", "{:.2f}"),
    ("ssim_window", "SSIM win", "{:.3f}"),
    ("psnr_full", "PSNR full", "{:.2f}"),
    ("ssim_full", "SSIM full", "{:.3f}"),
    ("rmse", "RMSE", "{:.1f}"),
    ("lesion_cnr", "lesion CNR", "{:.2f}"),
    ("lesion_contrast_retained", "contrast kept", "{:.2f}"),
    ("residual_clean_corr", "resid-clean r", "{:.3f}"),
    ("seconds_per_512_slice", "s / 512² slice", "{:.3g}"),
)


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Quality benchmark{' (quick)' if report['quick'] else ''}",
        "",
        "Held-out data only (phantom seeds >= 900000; real slices never trained on). "
        "Rows '... real' score the held-out real scans against their full-dose "
        "originals, which carry their own noise, so removing it counts as error "
        "there. "
        "CT PSNR/SSIM 'win' are in the soft-tissue window W400/L40, 'full' over "
        "[-1024, 3071] HU; RMSE in HU (CT) inside the body. MR: both over the "
        "clean image's range. Contrast kept: denoised lesion contrast / clean, "
        "pooled over lesions (5-15 HU CT, 5-15 % MR), ± its standard error over "
        "slices. BM3D gets the true noise SD "
        "(oracle); NLM, TV and wavelet estimate it (`estimate_sigma`).",
        "",
    ]
    for name, model in report["models"].items():
        lines.append(
            f"- {name} model: {model['name']} {model['version']} ({model['kind']}), "
            f"{model['ms_per_512_slice_batch8']:.1f} ms per 512² slice at batch 8, "
            f"2 threads."
        )
    lines.append("")
    for name, data in report["datasets"].items():
        lines += [f"## {name} ({data['slices']} slices)", ""]
        lines.append("| method | " + " | ".join(c[1] for c in _COLUMNS) + " |")
        lines.append("|---" * (len(_COLUMNS) + 1) + "|")
        for method, row in data["methods"].items():
            cells = [
                fmt.format(row[key]) if key in row else "–" for key, _, fmt in _COLUMNS
            ]
            if "lesion_contrast_retained_se" in row:
                kept = [key for key, _, _ in _COLUMNS].index("lesion_contrast_retained")
                cells[kept] += f" ± {row['lesion_contrast_retained_se']:.2f}"
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
        if data.get("per_source"):
            lines += _per_source_markdown(data["per_source"])
    lines += _real_markdown(report)
    goals = report["goals"]
    if goals.get("evaluated"):
        lines += [
            "## Goals (default CT model, quarter dose)",
            "",
            f"- PSNR >= BM3D + 0.5 dB: {goals['psnr_goal_met']} "
            f"(gain {goals['psnr_window_gain_over_bm3d_db']:+.2f} dB)",
            f"- SSIM >= BM3D: {goals['ssim_goal_met']}",
            f"- lesion contrast kept >= 95%: {goals['lesion_goal_met']} "
            f"({goals['lesion_contrast_retained'] or float('nan'):.3f} ± "
            f"{goals['lesion_contrast_retained_se'] or float('nan'):.3f} SE)",
            f"- >= 50x faster than BM3D: {goals['speed_goal_met']} "
            f"({goals['speedup_over_bm3d']}x)",
            "",
        ]
    return "\n".join(lines)


def _per_source_markdown(rows: list[dict[str, Any]]) -> list[str]:
    methods = list(rows[0]["rmse"])
    lines = [
        "RMSE per slice against its full-dose original, beside the noise that "
        "original already has (estimated in flat tissue, `inference.noise`): where "
        "the scan's own noise is larger than the noise added, a denoiser that removes "
        "both scores worse than the noisy input.",
        "",
        "| slice | own noise | added noise | "
        + " | ".join(f"RMSE {m}" for m in methods)
        + " |",
        "|---" * (len(methods) + 3) + "|",
    ]
    for row in rows:
        cells = [f"{row['rmse'][m]:.1f}" for m in methods]
        lines.append(
            f"| {row['source']} | {row['own_noise_sd']:.1f} | "
            f"{row['added_noise_sd']:.1f} | " + " | ".join(cells) + " |"
        )
    return [*lines, ""]


def _real_markdown(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    real = report.get("real_ct")
    if real and "skipped" not in real:
        lines += [
            f"## Real CT, neighbour-slice test ({len(real['slices'])} held-out slices, "
            f"noise {real['noise_sd_hu']:.2f} HU)",
            "",
            "Each slice denoised alone; its neighbours' mean is the reference "
            "(training/neighbours.py). Structure: residual vs the anatomy's band-pass "
            "(0 = noise only). Noise removed: share of the noise variance removed in "
            "flat blocks. Spectrum distance: residual spectrum vs the noise's (0 = "
            "noise-like).",
            "",
            "| method | structure | noise removed | spectrum distance |",
            "|---|---|---|---|",
            f"| ours | {real['structure']:.3f} | {real['noise_removed']:.1%} | "
            f"{real['spectrum_distance']:.2f} |",
        ]
        for name in ("bm3d", "gaussian"):
            row = real.get(name)
            if row:
                lines.append(
                    f"| {name} | {row['structure']:.3f} | {row['noise_removed']:.1%} "
                    f"| {row['spectrum_distance']:.2f} |"
                )
        quiet = report["quiet_scan"]
        lines += [
            "",
            "Quiet scan (same slices): residual SD over the body "
            f"{quiet['residual_sd']:.2f} HU, {quiet['ratio']:.2f}x the scan's noise "
            f"SD {quiet['noise_sd']:.2f} HU (goal <= 2x).",
            "",
        ]
    if report.get("lcd"):
        lines += [
            "## Low-contrast detectability (LG-CHO, CCT189-like phantom)",
            "",
            "| dose | insert | AUC FBP | AUC denoised | FBP noise (HU) |",
            "|---|---|---|---|---|",
        ]
        for row in report["lcd"]:
            lines.append(
                f"| {row['dose']:.0%} "
                f"| {row['insert_mm']} mm / {row['contrast_hu']:g} HU "
                f"| {row['auc_fbp']:.3f} ± {row['auc_fbp_sd']:.3f} "
                f"| {row['auc_denoised']:.3f} ± {row['auc_denoised_sd']:.3f} "
                f"| {row['noise_sd_fbp_hu']:.1f} |"
            )
        lines.append("")
    if report.get("safeguard"):
        lines += [
            "## Structure safeguard on real slices (edge energy ratio / anatomy r)",
            "",
        ]
        methods = list(next(iter(report["safeguard"].values())))
        lines.append("| case | " + " | ".join(methods) + " |")
        lines.append("|---" * (len(methods) + 1) + "|")
        for case, row in report["safeguard"].items():
            cells = [
                f"{row[m]['edge_energy_ratio']:.2f} / "
                f"{row[m]['anatomy_correlation']:.2f}"
                + (" **flagged**" if row[m]["flagged"] else "")
                for m in methods
            ]
            lines.append(f"| {case} | " + " | ".join(cells) + " |")
        lines.append("")
    if report.get("ood"):
        ood = report["ood"]
        lines += [
            "## Out-of-distribution check",
            "",
            f"- quiet on ordinary real CT: {ood['quiet_on_ordinary']}",
            f"- fires on inputs it was not trained for: {ood['fires_on_unusual']}",
            "",
        ]
    return lines


def _figure(
    figures: Sequence[
        tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray, str, str]
    ],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(figures), 4, figsize=(12, 3 * len(figures)), squeeze=False
    )
    for row, (name, noisy, ref, ours, residual, modality, method) in zip(
        axes, figures, strict=True
    ):
        if modality == "CT":
            vmin, vmax, rlim = -160.0, 240.0, 100.0
        else:
            vmax = float(np.percentile(noisy, 99.5))
            vmin, rlim = 0.0, 0.2 * vmax
        for ax, image, title in zip(
            row[:3], (noisy, ref, ours), ("noisy", "BM3D", method), strict=True
        ):
            ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax)
            ax.set_title(f"{name}: {title}", fontsize=8)
        row[3].imshow(residual, cmap="gray", vmin=-rlim, vmax=rlim)
        row[3].set_title(f"{name}: residual (noisy - {method})", fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench quality",
        description="Denoising quality on held-out data vs classical baselines.",
    )
    parser.add_argument(
        "--json", action="store_true", help="print only the JSON report"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small crops, one slice per level (<60 s)"
    )
    parser.add_argument(
        "--models-root", type=Path, help="default: the app's models root"
    )
    parser.add_argument(
        "--phantoms",
        type=int,
        default=DEFAULT_CT_PHANTOMS,
        help=f"held-out CT phantoms per dose (default {DEFAULT_CT_PHANTOMS})",
    )
    parser.add_argument(
        "--real-series",
        type=Path,
        help=f"thin contiguous real CT series (default {default_series()})",
    )
    parser.add_argument(
        "--lcd-realisations",
        type=int,
        default=DEFAULT_LCD_REALISATIONS,
        help="signal-present (and -absent) images per dose in the LCD study",
    )
    args = parser.parse_args(list(argv))
    report = run(
        quick=args.quick,
        models_root=args.models_root,
        phantoms=args.phantoms,
        real_series=args.real_series,
        lcd_realisations=args.lcd_realisations,
    )
    if args.json:
        print(json.dumps(report))
    else:
        print(json.dumps(report, indent=2))
        print(
            (RESULTS / ("quality-quick.md" if args.quick else "quality.md")).read_text()
        )
    return 0
