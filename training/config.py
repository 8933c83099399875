"""Training configuration: read a YAML or JSON file, fill defaults, check values."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from training.errors import ConfigError

__all__ = [
    "DEFAULTS",
    "load_config",
    "complete_config",
    "default_input_spec",
    "with_inference_settings",
]

#: Every key a config may set, with its default. See ``training/configs/`` for
#: complete examples.
DEFAULTS: dict[str, Any] = {
    "name": None,  # bundle name, required
    "version": "1.0.0",
    "changelog": None,  # text for this version; default names the network and mode
    "modality": "CT",
    "seed": 0,
    "network": None,  # {"kind": ..., "args": {...}}, required
    # input_spec normalisation; default CT {"kind": "linear", "offset": -1024,
    # "scale": 4096}, MR {"kind": "percentile", "upper": 99.5}
    "normalisation": None,
    # input_spec residual_limit, e.g. {"sd_multiple": 1.5, "window": 9}: the
    # residual's local RMS is held to that many noise SDs (inference.noise)
    "residual_limit": None,
    # input_spec keep_low_frequencies, e.g. {"sigma_mm": 0.9}: the output keeps the
    # input's content coarser than that Gaussian (inference.noise); a fine-tune
    # keeps its parent's unless set here
    "keep_low_frequencies": None,
    "data": {
        # Each source: {"kind": "phantom", "count", "seed", "size"},
        # {"kind": "bundled"} (pydicom + pydicom-data training split) or
        # {"kind": "dicom_folder", "path": ...}.
        "sources": [{"kind": "phantom", "count": 32, "seed": 1000, "size": 512}],
        # CT: dose fractions of the reference dose; MR: Rician sigma as a fraction
        # of the 99.5th percentile of each slice.
        "levels": [0.1, 0.25, 0.5],
        "realisations": 1,  # noisy copies per slice and level
        "validation": {"count": 2, "seed": 850_000, "size": 512, "levels": [0.25]},
        "cache_dir": "runs/cache",
        # Noise made on the fly for every crop (training.synth.NOISE_DEFAULTS
        # lists the keys), instead of fixed-level pairs; data.levels then only
        # sets the validation noise SDs in HU. CT, supervised, linear
        # normalisation.
        "noise": None,
        "workers": 1,  # processes that simulate projection-domain noise
    },
    "train": {
        "mode": "supervised",  # or "self_supervised" (Noise2Void blind spots)
        "epochs": 10,
        "steps_per_epoch": 50,
        "batch_size": 8,
        "patch_size": 128,
        "lr": 1e-3,
        # linear warm-up from 0 (MONAI's WarmupCosineSchedule), then cosine decay to
        # 2% of lr; None: 5% of the steps, at least 1 and at most 100
        "warmup_steps": None,
        "loss": "mse",  # or "l1"
        "mask_fraction": 0.02,  # self-supervised: share of pixels masked per patch
        "lesion_weight": 1.0,  # supervised: loss weight near known (phantom) lesions
        # supervised: weight of a contrast-preserving term, the (lesion-weighted)
        # mean square of the error averaged over 5x5 neighbourhoods; it penalises
        # local bias (flattened lesions, shifted edges) but hardly residual noise
        "lowpass_weight": 0.0,
        # supervised: weight of the lesion contrast loss, the mean square of each
        # known (phantom) lesion's lost contrast, core mean - ring mean of the error
        "contrast_weight": 0.0,
        "lesion_crops": 0.0,  # share of crops centred on a known lesion
        "device": "auto",  # "auto" (CUDA when present), "cpu", "cuda", "cuda:1"
        "threads": 2,
        "time_budget_s": None,  # stop after the epoch that passes this
        "init_from": None,  # a parent bundle folder to fine-tune
        "output_dir": None,  # default runs/<name>
    },
    "export": {
        "models_root": "models",
        "folder": None,  # default <name>/<version> under models_root
        "batch_size": 8,
    },
    "evaluate": {
        "count": 4,  # held-out phantoms (seeds >= HELD_OUT_PHANTOM_SEED)
        "size": 512,
        "levels": None,  # default: CT 0.25 and 0.1, MR 0.05 and 0.10
        "real": True,  # include the held-out real slices
    },
}


def _merge(base: dict[str, Any], override: Mapping[str, Any], path: str) -> None:
    for key, value in override.items():
        if key not in base:
            raise ConfigError(f"config: unknown key {path}{key!r}")
        if isinstance(base[key], dict) and key in (
            "data",
            "train",
            "export",
            "evaluate",
        ):
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"config: {path}{key} must be a mapping, got {value!r}"
                )
            _merge(base[key], value, f"{path}{key}.")
        elif isinstance(base[key], dict) and path == "data." and key == "validation":
            if not isinstance(value, Mapping):
                raise ConfigError(f"config: {path}{key} must be a mapping")
            base[key].update(value)
        else:
            base[key] = copy.deepcopy(value)


def complete_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``raw`` over :data:`DEFAULTS` and check it.

    Raises:
        ConfigError: naming the first missing or bad key.
    """
    config = copy.deepcopy(DEFAULTS)
    _merge(config, raw, "")
    if not isinstance(config["name"], str) or not config["name"]:
        raise ConfigError("config: name is required (the bundle name, e.g. ct-denoise)")
    if config["modality"] not in ("CT", "MR"):
        raise ConfigError(
            f"config: modality must be CT or MR, got {config['modality']!r}"
        )
    net = config["network"]
    if not isinstance(net, Mapping) or "kind" not in net:
        raise ConfigError(
            "config: network must be {kind: ..., args: {...}} "
            f"(a kind of inference.networks), got {net!r}"
        )
    train = config["train"]
    if train["mode"] not in ("supervised", "self_supervised"):
        raise ConfigError(
            f"config: train.mode must be supervised or self_supervised, got "
            f"{train['mode']!r}"
        )
    if train["loss"] not in ("mse", "l1"):
        raise ConfigError(
            f"config: train.loss must be mse or l1, got {train['loss']!r}"
        )
    for key in ("epochs", "steps_per_epoch", "batch_size", "patch_size", "threads"):
        if not isinstance(train[key], int) or train[key] < 1:
            raise ConfigError(f"config: train.{key} must be an integer >= 1")
    warmup = train["warmup_steps"]
    if warmup is not None and (not isinstance(warmup, int) or warmup < 0):
        raise ConfigError(
            f"config: train.warmup_steps must be an integer >= 0 or null, got "
            f"{warmup!r}"
        )
    for key in ("lowpass_weight", "contrast_weight"):
        if float(train[key]) < 0:
            raise ConfigError(f"config: train.{key} must be >= 0")
    if train["mode"] == "self_supervised":
        for key, neutral in (
            ("lesion_weight", 1.0),
            ("lowpass_weight", 0.0),
            ("contrast_weight", 0.0),
        ):
            if float(train[key]) != neutral:
                raise ConfigError(
                    f"config: train.{key} needs clean targets (mode supervised); "
                    f"self-supervised training would ignore it"
                )
    if not 0 <= float(train["lesion_crops"]) <= 1:
        raise ConfigError("config: train.lesion_crops must be in [0, 1]")
    if not isinstance(train["device"], str) or not (
        train["device"] in ("auto", "cpu") or train["device"].startswith("cuda")
    ):
        raise ConfigError(
            f"config: train.device must be auto, cpu or cuda[:N], got "
            f"{train['device']!r}"
        )
    if not 0 < float(train["mask_fraction"]) < 0.5:
        raise ConfigError("config: train.mask_fraction must be in (0, 0.5)")
    noise = config["data"]["noise"]
    if noise is not None:
        from training.synth import NOISE_DEFAULTS

        if not isinstance(noise, Mapping):
            raise ConfigError(f"config: data.noise must be a mapping, got {noise!r}")
        unknown = sorted(set(noise) - set(NOISE_DEFAULTS))
        if unknown:
            raise ConfigError(
                f"config: unknown data.noise keys {unknown}; allowed: "
                f"{sorted(NOISE_DEFAULTS)}"
            )
        if config["modality"] != "CT" or train["mode"] != "supervised":
            raise ConfigError(
                "config: data.noise (on-the-fly noise) is for CT in supervised mode"
            )
        config["data"]["noise"] = {**NOISE_DEFAULTS, **noise}
        low, high = (float(v) for v in config["data"]["noise"]["sd_hu"])
        if not 0 < low <= high:
            raise ConfigError(
                f"config: data.noise.sd_hu must be [low, high] with 0 < low <= high, "
                f"got {noise.get('sd_hu')!r}"
            )
    levels = config["data"]["levels"]
    if not levels or not all(isinstance(v, int | float) and v > 0 for v in levels):
        raise ConfigError(
            f"config: data.levels must be positive numbers, got {levels!r}"
        )
    if config["modality"] == "CT" and noise is None and any(v > 1 for v in levels):
        raise ConfigError(
            f"config: CT data.levels are dose fractions in (0, 1], got {levels}"
        )
    if config["evaluate"]["levels"] is None:
        config["evaluate"]["levels"] = (
            [0.25, 0.1] if config["modality"] == "CT" else [0.05, 0.1]
        )
    if config["changelog"] is None:
        config["changelog"] = (
            f"{train['mode'].replace('_', '-')} {net['kind']} trained on "
            f"{config['modality']} by `python -m training`"
        )
    return config


def _apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> None:
    import yaml

    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"config: override must be KEY=VALUE, got {item!r}")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"config: override {key}: {part} is not a mapping")
            node = child
        node[parts[-1]] = yaml.safe_load(text)


def load_config(path: Path | str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or JSON config file and complete it.

    Args:
        path: the file.
        overrides: ``"dotted.key=value"`` strings applied before completion; the
            value is parsed as YAML (``train.epochs=5``, ``train.init_from=null``).

    Raises:
        ConfigError: when the file is missing, does not parse, or has a bad value.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config: {path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text)
        else:
            raw = json.loads(text)
    except Exception as exc:  # yaml and json raise unrelated error types
        reason = " ".join(str(exc).split())
        raise ConfigError(f"config: {path}: does not parse ({reason})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config: {path}: expected a mapping at the top level")
    _apply_overrides(raw, overrides)
    return complete_config(raw)


def default_input_spec(
    modality: str,
    network: Any,
    batch_size: int,
    normalisation: Mapping[str, Any] | None = None,
    residual_limit: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``input_spec`` of ``models/README.md`` for a built network."""
    norm: dict[str, Any]
    if modality == "CT":
        norm = {"kind": "linear", "offset": -1024.0, "scale": 4096.0}
        units = "HU"
    else:
        norm = {"kind": "percentile", "upper": 99.5}
        units = "arbitrary"
    if normalisation is not None:
        norm = {k: (float(v) if k != "kind" else v) for k, v in normalisation.items()}
    roi = list(network.fixed_roi) if network.fixed_roi is not None else None
    spec = {
        "modality": modality,
        "units": units,
        "spatial_dims": 2,
        "normalisation": norm,
        "roi_size": roi,
        "batch_size": batch_size,
        "size_multiple": int(network.size_multiple),
    }
    if residual_limit is not None:
        spec["residual_limit"] = dict(residual_limit)
    if getattr(network, "noise_conditioned", False):
        # The noise level map is log2(1 + SD / noise_unit) / 8, SD in normalised
        # units (inference.noise): 0.005 is 1 HU at CT's usual 200 HU scale.
        spec["noise_unit"] = float(network.noise_unit)
    return spec


def with_inference_settings(
    spec: Mapping[str, Any], config: Mapping[str, Any]
) -> dict[str, Any]:
    """``spec`` (a new network's, a parent's or a bundle's) with the config's
    inference settings over it (``keep_low_frequencies``, when set), validated.

    Raises:
        BundleError: naming the bad field.
    """
    from inference.bundle import validate_input_spec

    out = dict(spec)
    keep = config.get("keep_low_frequencies")
    if keep is not None:
        out["keep_low_frequencies"] = {"sigma_mm": float(keep["sigma_mm"])}
    return validate_input_spec(out)
