"""Export a trained network as a MONAI-style bundle (``models/README.md``)."""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.bundle import bundle_path, read_metadata, write_bundle
from inference.networks import DenoisingNetwork
from inference.ood import reference_statistics

__all__ = ["bundle_metadata", "model_card", "export_bundle", "bundle_folder"]

_METRIC_COLUMNS = (
    ("psnr_window", "PSNR window (dB)"),
    ("ssim_window", "SSIM window"),
    ("psnr_full", "PSNR full (dB)"),
    ("ssim_full", "SSIM full"),
    ("rmse", "RMSE"),
    ("lesion_contrast_retained", "lesion contrast kept"),
    ("lesion_cnr", "lesion CNR"),
    ("residual_clean_corr", "residual-clean corr."),
    ("noisy_psnr_window", "noisy PSNR window (dB)"),
)


def _data_format(modality: str, input_spec: Mapping[str, Any]) -> dict[str, Any]:
    fmt = "hounsfield" if modality == "CT" else "magnitude"
    value_range = [-1024, 3071] if modality == "CT" else [0, None]
    common = {
        "type": "image",
        "format": fmt,
        "modality": modality,
        "num_channels": 1,
        "spatial_shape": list(input_spec["roi_size"] or ["*", "*"]),
        "dtype": "float32",
        "value_range": value_range,
        "is_patch_data": input_spec["roi_size"] is not None,
        "channel_def": {"0": "image"},
    }
    return {"inputs": {"image": dict(common)}, "outputs": {"pred": dict(common)}}


def bundle_metadata(
    *,
    config: Mapping[str, Any],
    network_def: Mapping[str, Any],
    input_spec: Mapping[str, Any],
    metrics: Mapping[str, Any],
    summary: Mapping[str, Any],
    ood_reference: Mapping[str, Any] | None,
    held_out: Mapping[str, Any],
) -> dict[str, Any]:
    """The ``configs/metadata.json`` content (``weights_sha256`` is added by
    :func:`inference.bundle.write_bundle`)."""
    modality = config["modality"]
    train = config["train"]
    noise_model: dict[str, Any]
    synth = config["data"].get("noise")
    if synth is not None:
        noise_model = {
            "kind": "on_the_fly",
            "description": "every crop gets noise drawn anew: SD log-uniform over "
            "sd_hu (or none for clean_fraction of crops); projection-domain CT noise "
            "(projection_fraction) or stationary noise with a noise power spectrum "
            "measured on the real training scans or of the FBP family, amplitude "
            "modulated; real scans get at least real_ratio times their own noise, "
            "or (recorrupted_fraction of them) noise a z with their own NPS and SD "
            "and the target y - z / a (Recorrupted-to-Recorrupted); the network sees "
            "the noise SD as a second channel and the loss is in units of it "
            "(training/synth.py)",
            **dict(synth),
        }
    elif modality == "CT":
        from dicomio.noise import CTNoiseModel

        model = CTNoiseModel()
        noise_model = {
            "kind": "ct_projection_domain",
            "description": "radon forward projection, Poisson counts at dose x i0 plus "
            "Gaussian electronic noise, log, ramp-filtered back-projection of the "
            "line-integral noise; real full-dose slices get only the extra variance",
            "i0_full_dose": model.i0,
            "electronic_sd_counts": model.electronic_sd,
            "dose_fractions": list(config["data"]["levels"]),
        }
    else:
        noise_model = {
            "kind": "rician",
            "description": "magnitude of complex Gaussian noise added to the image",
            "sigma_fraction_of_p99_5": list(config["data"]["levels"]),
        }
    history = summary.get("history", [])
    changelog = {config["version"]: config["changelog"]}
    parent = summary.get("parent")
    if parent:
        how = "fine-tuned from" if history else "the unchanged weights of"
        changelog[config["version"]] += f" ({how} {parent['name']} {parent['version']})"
    return {
        "name": config["name"],
        "version": config["version"],
        "changelog": changelog,
        "description": f"{network_def['kind']} {modality} denoiser",
        "authors": "radiology-denoise training pipeline (python -m training)",
        "intended_use": "research use, not for diagnosis",
        "network_def": dict(network_def),
        "network_data_format": _data_format(modality, input_spec),
        "input_spec": dict(input_spec),
        "training": {
            "mode": train["mode"],
            "data": {
                "sources": [dict(s) for s in config["data"]["sources"]],
                "slices_seen": list(summary.get("sources", [])),
                "pairs": summary.get("pairs"),
                "levels": list(config["data"]["levels"]),
                "realisations": config["data"]["realisations"],
                "held_out": dict(held_out),
                "validation": dict(config["data"]["validation"]),
            },
            "noise_model": noise_model,
            "epochs": len(history),
            "steps_per_epoch": train["steps_per_epoch"],
            "batch_size": train["batch_size"],
            "patch_size": train["patch_size"],
            "optimiser": f"Adam, lr {train['lr']} with warm-up and cosine decay",
            "lesion_weight": train["lesion_weight"],
            "lowpass_weight": train.get("lowpass_weight", 0.0),
            "contrast_weight": train.get("contrast_weight", 0.0),
            "lesion_crops": train.get("lesion_crops", 0.0),
            "loss": train["loss"]
            + (
                " on blind-spot pixels (Noise2Void)"
                if train["mode"] == "self_supervised"
                else ""
            ),
            "seed": config["seed"],
            "best_epoch": summary.get("best", {}).get("epoch"),
            "elapsed_s": round(float(summary.get("elapsed_s", 0.0)), 1),
            "platform": f"{platform.machine()} {platform.python_version()}, "
            f"{summary.get('device') or 'CPU'}, {train['threads']} CPU threads",
            "parent": (
                {
                    "name": parent["name"],
                    "version": parent["version"],
                    "weights_sha256": parent["weights_sha256"],
                    "training_data": parent.get("training_data"),
                }
                if parent
                else None
            ),
        },
        "metrics": dict(metrics),
        "ood_reference": dict(ood_reference) if ood_reference is not None else None,
    }


def model_card(metadata: Mapping[str, Any]) -> str:
    """``docs/README.md``: intended use, data, metrics table and limitations."""
    train = metadata["training"]
    spec = metadata["input_spec"]
    metrics = {k: v for k, v in metadata["metrics"].items() if isinstance(v, Mapping)}
    parent = train.get("parent")
    if parent and not train["epochs"]:
        regime = (
            f"- Not trained: the weights of {parent['name']} {parent['version']} "
            f"unchanged (`{parent['weights_sha256'][:12]}…`), exported with other "
            "inference settings (below). Its training:"
        )
    else:
        regime = (
            f"- Mode: {train['mode']}; loss {train['loss']}; {train['epochs']} epochs "
            f"of {train['steps_per_epoch']} steps, batch {train['batch_size']}, "
            f"patches {train['patch_size']} px; seed {train['seed']}."
        )
    lines = [
        f"# {metadata['name']} {metadata['version']}",
        "",
        f"{metadata['description']}: a MONAI convolutional denoising autoencoder "
        f"(`{metadata['network_def']['kind']}`) for {spec['modality']} slices "
        f"({spec['units']}).",
        "",
        "**Intended use: research use, not for diagnosis.** Outputs are for "
        "side-by-side review with the original; never read a denoised image alone.",
        "",
        "## Training",
        "",
        regime,
        f"- Noise model: {train['noise_model']['kind']} — "
        f"{train['noise_model']['description']}.",
        f"- Data: {len(train['data']['slices_seen'])} clean or full-dose slices "
        f"({train['data']['pairs']} noisy/clean pairs"
        + (
            ", noise drawn anew for every crop"
            if train["noise_model"]["kind"] == "on_the_fly"
            else ""
        )
        + "): "
        + ", ".join(_short_sources(train["data"]["sources"]))
        + ".",
        f"- Held out (never trained on): {train['data']['held_out']['phantoms']}; "
        f"real: {', '.join(train['data']['held_out']['real']) or 'none'}.",
    ]
    if parent and train["epochs"]:
        lines.append(
            f"- Fine-tuned from {parent['name']} {parent['version']} (weights "
            f"`{parent['weights_sha256'][:12]}…`)."
        )
    lines += ["", "## Inference", "", *_inference_lines(spec)]
    lines += ["", "## Held-out metrics", ""]
    if metrics:
        header = "| level | " + " | ".join(label for _, label in _METRIC_COLUMNS) + " |"
        lines += [header, "|" + "---|" * (len(_METRIC_COLUMNS) + 1)]
        for level, row in metrics.items():
            cells = [_fmt(row.get(key)) for key, _ in _METRIC_COLUMNS]
            lines.append(f"| {level} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "Window metrics use the soft-tissue window W400/L40 (CT); RMSE is in HU "
            "inside the body (CT). Lesion contrast kept is the denoised lesion "
            "contrast over the clean one, pooled over all held-out lesions (5-15 HU). "
            "Rows ending in `_real` score the held-out real scans against their "
            "full-dose originals, which carry their own noise: removing that noise "
            "counts as error there.",
        ]
    else:
        lines.append("Not evaluated.")
    lines += [
        "",
        "## Limitations",
        "",
        "- Trained on simulated low-dose noise (phantoms and a handful of public "
        "slices); real scanner noise (other kernels, iterative reconstruction, "
        "cone-beam geometry, metal) can differ. The OOD check in the app warns "
        "on inputs unlike the training inputs.",
        "- 2D, slice by slice: no use of neighbouring slices.",
        "- Small, low-contrast lesions can lose some contrast; read the residual map, "
        "which should hold noise only.",
        "- Not validated on patients; no regulatory clearance.",
        "",
        f"Library versions at export: MONAI {metadata.get('monai_version', '?')}, "
        f"PyTorch {metadata.get('pytorch_version', '?')}, "
        f"NumPy {metadata.get('numpy_version', '?')}.",
        "",
    ]
    return "\n".join(lines)


def _inference_lines(spec: Mapping[str, Any]) -> list[str]:
    """What the runner does around the network, from the ``input_spec``."""
    norm = spec["normalisation"]
    if norm["kind"] == "linear":
        scaled = f"(x - {norm['offset']:g}) / {norm['scale']:g}"
    else:
        scaled = f"divided by the series' {norm['upper']:g}th percentile"
    lines = [
        f"- Input {scaled}, padded by reflection to a multiple of "
        f"{spec['size_multiple']}, {spec['batch_size']} slices per pass.",
    ]
    if "noise_unit" in spec:
        lines.append(
            "- Each slice's noise SD is estimated (flat 16x16 blocks of the body) and "
            "given to the network as a second channel."
        )
    limit = spec.get("residual_limit")
    if limit:
        lines.append(
            f"- Residual limit: the residual's RMS over {limit['window']}x"
            f"{limit['window']} windows is held to {limit['sd_multiple']:g}x the "
            "slice's noise SD."
        )
    keep = spec.get("keep_low_frequencies")
    if keep:
        lines.append(
            f"- Low frequencies kept: the output gets the input's content coarser "
            f"than a {keep['sigma_mm']:g} mm Gaussian back (output = denoised + "
            "G * (input - denoised)), so the residual holds detail finer than that "
            "only and ROI means stay the scan's own."
        )
    return lines


def _short_sources(sources: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    for s in sources:
        if s.get("kind") == "phantom":
            out.append(
                f"{s.get('count')} phantoms {s.get('size')} px "
                f"(seeds from {s.get('seed')})"
            )
        elif s.get("kind") == "texture":
            out.append(
                f"{s.get('count')} textured slices {s.get('size')} px (vessel trees, "
                f"trabecular bone, natural textures; seeds from {s.get('seed')})"
            )
        elif s.get("kind") == "bundled":
            out.append("pydicom/pydicom-data training slices")
        elif s.get("kind") == "dicom_series":
            start, stop = s.get("held_out") or (0, 0)
            out.append(
                f"real series {s.get('path')} (slices {start}-{stop - 1} held out)"
            )
        else:
            out.append(f"DICOM folder {s.get('path')}")
    return out


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"


def bundle_folder(
    models_root: Path, name: str, version: str, folder: str | None = None
) -> Path:
    """``<root>/<name>/<version>`` (:func:`inference.bundle.bundle_path`), or
    ``<root>/<folder>`` when a folder is named."""
    if folder:
        return models_root / folder
    return bundle_path(models_root, name, version)


def export_bundle(
    *,
    directory: Path,
    network: DenoisingNetwork,
    metadata_args: Mapping[str, Any],
    ood_slices: Sequence[np.ndarray],
) -> tuple[Path, dict[str, Any]]:
    """Compute the OOD reference, write the bundle, return (folder, metadata)."""
    network.eval()
    input_spec = metadata_args["input_spec"]
    with torch.inference_mode():
        ood = reference_statistics(network, list(ood_slices), input_spec=input_spec)
    meta = bundle_metadata(ood_reference=ood, **metadata_args)
    probe = dict(meta)
    # Metadata must be strict JSON: NaN metrics (no lesions) become null.
    probe["metrics"] = json.loads(json.dumps(meta["metrics"]).replace("NaN", "null"))
    import monai

    card_meta = dict(probe)
    card_meta.setdefault("monai_version", monai.__version__)
    card_meta.setdefault("pytorch_version", torch.__version__)
    card_meta.setdefault("numpy_version", np.__version__)
    path = write_bundle(
        directory, metadata=probe, state_dict=network, model_card=model_card(card_meta)
    )
    return path, read_metadata(path)
