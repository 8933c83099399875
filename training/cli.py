"""Command line: ``python -m training train|evaluate|export --config FILE``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.bundle import models_root_of, read_metadata
from inference.networks import DenoisingNetwork, build_network
from inference.registry import write_default
from training.config import load_config
from training.errors import TrainingError
from training.evaluate import describe_held_out, evaluate_network, held_out_pairs
from training.synth import validation_pairs as synth_validation_pairs
from training.trainer import run_dir, train, training_pairs, training_slices

__all__ = ["main", "build_parser"]

log = logging.getLogger("training")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train, evaluate and export denoising autoencoders as model "
        "bundles. Example configs: training/configs/*.yaml.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser("train", help="train a network; writes runs/<name>/")
    p_eval = sub.add_parser("evaluate", help="held-out metrics of a checkpoint")
    p_export = sub.add_parser("export", help="write the bundle under models/")
    p_finetune = sub.add_parser(
        "finetune",
        help="fine-tune a CT bundle on a site's scans; the held-out part decides "
        "whether the new version may become the default",
    )
    which = p_finetune.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--series", type=int, nargs="+", metavar="ID", help="the app's series IDs"
    )
    which.add_argument(
        "--volume",
        nargs="+",
        metavar="PATH:PIXEL_MM",
        help="stored (z, y, x) HU volumes (.npy) and their pixel spacing",
    )
    p_finetune.add_argument(
        "--from",
        dest="parent",
        type=Path,
        help="parent bundle folder, default the one models/DEFAULT names",
    )
    p_finetune.add_argument("--version", help="new version, default the next minor")
    p_finetune.add_argument(
        "--minutes", type=float, default=10.0, help="training time (default 10)"
    )
    p_finetune.add_argument("--threads", type=int, default=2, help="CPU threads")
    p_finetune.add_argument(
        "--set-default",
        action="store_true",
        help="make it the default, only if the decision allows it",
    )
    p_finetune.add_argument(
        "--manage",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "manage.py",
        help="the app's manage.py, which resolves series IDs",
    )
    p_finetune.add_argument("--json", action="store_true", help="print the result")
    p_compare = sub.add_parser(
        "compare", help="equal-budget runs of several configs, one table"
    )
    p_compare.add_argument("configs", nargs="+", type=Path, help="config files")
    p_compare.add_argument(
        "--budget-s", type=float, default=150.0, help="training seconds per config"
    )
    p_compare.add_argument(
        "--output",
        type=Path,
        default=Path("bench/results/architectures"),
        help="writes OUTPUT.json and OUTPUT.md",
    )
    p_compare.add_argument("--threads", type=int, default=2, help="CPU threads")
    p_compare.add_argument(
        "--no-train", action="store_true", help="re-evaluate existing runs only"
    )
    for p in (p_train, p_eval, p_export):
        p.add_argument("--config", required=True, help="YAML or JSON config file")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config key, dotted (train.epochs=5); VALUE is YAML",
        )
    p_train.add_argument("--no-progress", action="store_true", help="no progress bar")
    p_train.add_argument(
        "--no-cache", action="store_true", help="re-simulate noise, do not cache pairs"
    )
    for p in (p_eval, p_export):
        p.add_argument(
            "--checkpoint",
            help="checkpoint file, default runs/<name>/checkpoint_best.pt",
        )
    p_export.add_argument(
        "--from-bundle",
        type=Path,
        metavar="FOLDER",
        help="export a bundle's weights (SHA-256 checked) as a new version instead "
        "of a checkpoint: same network, the config's inference settings "
        "(keep_low_frequencies) over the bundle's input_spec, re-evaluated, the "
        "bundle recorded as its parent",
    )
    p_eval.add_argument("--json", action="store_true", help="print metrics as JSON")
    p_export.add_argument("--models-root", help="default: export.models_root")
    p_export.add_argument(
        "--folder", help="bundle folder under the models root, default <name>/<version>"
    )
    p_export.add_argument(
        "--set-default", action="store_true", help="write models/DEFAULT to this bundle"
    )
    return parser


def _load_checkpoint(
    config: Mapping[str, Any], path: str | None
) -> tuple[DenoisingNetwork, dict[str, Any]]:
    checkpoint_path = Path(path) if path else run_dir(config) / "checkpoint_best.pt"
    if not checkpoint_path.exists():
        raise TrainingError(
            f"checkpoint: {checkpoint_path}: no such file (run `python -m training "
            f"train --config ...` first)"
        )
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    network = build_network(checkpoint["network_def"])
    network.load_state_dict(checkpoint["state_dict"])
    network.eval()
    return network, checkpoint


def _from_bundle(
    config: Mapping[str, Any], folder: Path
) -> tuple[DenoisingNetwork, dict[str, Any], dict[str, Any]]:
    """A bundle's network, its checkpoint-like record (``network_def``,
    ``input_spec`` with the config's inference settings) and a training summary
    naming it as the parent (no epochs: the weights are the parent's)."""
    from training.config import with_inference_settings
    from training.trainer import parent_of, parent_record

    network, meta = parent_of(folder)
    if meta["input_spec"]["modality"] != config["modality"]:
        raise TrainingError(
            f"export: {folder} is a {meta['input_spec']['modality']} bundle, the "
            f"config is {config['modality']}"
        )
    input_spec = with_inference_settings(meta["input_spec"], config)
    network.eval()
    data = meta.get("training", {}).get("data", {})
    summary = {
        "parent": parent_record(meta),
        "sources": list(data.get("slices_seen", [])),
        "pairs": data.get("pairs"),
        "history": [],
        "elapsed_s": 0.0,
    }
    return (
        network,
        {"network_def": meta["network_def"], "input_spec": input_spec},
        summary,
    )


def _evaluate(
    config: Mapping[str, Any], network: DenoisingNetwork, input_spec: Mapping[str, Any]
) -> dict[str, Any]:
    ev = config["evaluate"]
    pairs = held_out_pairs(
        config["modality"],
        ev["levels"],
        count=int(ev["count"]),
        size=int(ev["size"]),
        real=bool(ev["real"]),
    )
    return evaluate_network(
        network, input_spec, pairs, batch_size=int(input_spec["batch_size"])
    )


def _cmd_train(args: argparse.Namespace, config: dict[str, Any]) -> int:
    summary = train(config, progress=not args.no_progress, cache=not args.no_cache)
    best = summary["best"]
    print(
        f"trained {config['name']}: best epoch {best['epoch']} "
        f"(val loss {best['val_loss']:.4g}) in {summary['elapsed_s']:.0f} s; "
        f"checkpoints in {summary['run_dir']}"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace, config: dict[str, Any]) -> int:
    torch.set_num_threads(int(config["train"]["threads"]))
    network, checkpoint = _load_checkpoint(config, args.checkpoint)
    metrics = _evaluate(config, network, checkpoint["input_spec"])
    out = run_dir(config) / "metrics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2))
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        for level, row in metrics.items():
            print(
                f"{level}: PSNR {row['psnr_window']:.2f} dB (noisy "
                f"{row['noisy_psnr_window']:.2f}), SSIM {row['ssim_window']:.3f}, "
                f"RMSE {row['rmse']:.1f}, lesion contrast kept "
                f"{row.get('lesion_contrast_retained', float('nan')):.2f}"
            )
    return 0


def _central(image: np.ndarray, share: float) -> np.ndarray:
    """The central ``share`` of a slice along each axis."""
    ny, nx = image.shape
    dy, dx = int(ny * (1 - share) / 2), int(nx * (1 - share) / 2)
    return np.ascontiguousarray(image[dy : ny - dy, dx : nx - dx])


def _cmd_export(args: argparse.Namespace, config: dict[str, Any]) -> int:
    if args.from_bundle is not None and args.checkpoint is not None:
        raise TrainingError("export: give --checkpoint or --from-bundle, not both")
    path, meta = export_run(
        config,
        checkpoint=args.checkpoint,
        from_bundle=args.from_bundle,
        models_root=args.models_root,
        folder=args.folder,
        set_default=args.set_default,
    )
    size_mb = (path / "models" / "model.pt").stat().st_size / 1e6
    print(
        f"exported {meta['name']} {meta['version']} to {path} "
        f"({size_mb:.2f} MB, sha256 {meta['weights_sha256']})"
    )
    return 0


def export_run(
    config: dict[str, Any],
    *,
    checkpoint: str | None = None,
    from_bundle: Path | None = None,
    models_root: str | None = None,
    folder: str | None = None,
    set_default: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Evaluate a trained run on the held-out data and write its bundle.

    Args:
        config: the run's completed config.
        checkpoint: default ``runs/<name>/checkpoint_best.pt``.
        from_bundle: instead of a checkpoint, a bundle folder whose weights become
            this version with the config's ``keep_low_frequencies`` (when set) over
            its ``input_spec``; the bundle is recorded as the parent.
        models_root: default ``export.models_root``.
        folder: bundle folder under the models root, default ``<name>/<version>``.
        set_default: point ``models/DEFAULT`` at this ``name:version``.

    Returns:
        The bundle folder and its metadata.
    """
    from training.export import bundle_folder, export_bundle

    torch.set_num_threads(int(config["train"]["threads"]))
    if from_bundle is not None:
        network, checkpoint_data, summary = _from_bundle(config, from_bundle)
    else:
        network, checkpoint_data = _load_checkpoint(config, checkpoint)
        summary_path = run_dir(config) / "train_summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    input_spec = checkpoint_data["input_spec"]
    metrics = _evaluate(config, network, input_spec)
    ev = config["evaluate"]
    held_out = describe_held_out(
        config["modality"], int(ev["count"]), int(ev["size"]), bool(ev["real"])
    )
    # The OOD reference describes the training inputs: a spread of the noisy
    # training slices (all levels), capped to keep the export quick.
    if config["data"]["noise"] is not None:
        slices = training_slices(config)
        step = max(1, len(slices) // 16)
        low, high = (float(v) for v in config["data"]["noise"]["sd_hu"])
        levels = np.geomspace(max(low, 1.0), high, 4).tolist()
        pairs = synth_validation_pairs(slices[::step], levels, seed=int(config["seed"]))
        # Views zoomed onto the body (a spine, an orbit) are ordinary CT too: the
        # central 40% of each slice joins the reference.
        pairs += [
            replace(p, noisy=_central(p.noisy, 0.4))
            for p in pairs[:: max(1, len(pairs) // 16)]
        ]
    else:
        pairs = training_pairs(config)
    step = max(1, len(pairs) // 48)
    ood_slices = [p.noisy for p in pairs[::step]]
    root = Path(models_root or config["export"]["models_root"])
    target = bundle_folder(
        root,
        config["name"],
        config["version"],
        folder or config["export"]["folder"],
    )
    path, meta = export_bundle(
        directory=target,
        network=network,
        metadata_args={
            "config": config,
            "network_def": checkpoint_data["network_def"],
            "input_spec": input_spec,
            "metrics": metrics,
            "summary": summary,
            "held_out": held_out,
        },
        ood_slices=ood_slices,
    )
    if set_default:
        write_default(root, meta["name"], meta["version"])
    return path, meta


def _cmd_finetune(args: argparse.Namespace) -> int:
    from inference import load_model
    from inference.registry import default_models_root
    from training.config import complete_config
    from training.finetune import (
        SiteVolume,
        app_volumes,
        decide,
        describe,
        pin_default,
        site_config,
    )

    if args.series:
        volumes = app_volumes(args.series, args.manage)
    else:
        volumes = []
        for item in args.volume:
            path, sep, pixel = item.rpartition(":")
            if not sep:
                raise TrainingError(
                    f"finetune: --volume {item!r}: expected PATH:PIXEL_MM"
                )
            volumes.append(SiteVolume(Path(path), float(pixel), Path(path).name))
    parent_dir = args.parent
    if parent_dir is None:
        parent_dir = load_model(models_root=default_models_root(), device="cpu").path
    config = complete_config(
        site_config(
            Path(parent_dir),
            volumes,
            version=args.version,
            seconds=args.minutes * 60,
            threads=args.threads,
        )
    )
    train(config, progress=not args.json, cache=True)
    pin_default(Path(config["export"]["models_root"]))
    path, meta = export_run(config)
    root = models_root_of(path, meta)
    parent = read_metadata(Path(parent_dir))
    decision = decide(
        load_model(parent["name"], parent["version"], models_root=root, device="cpu"),
        load_model(meta["name"], meta["version"], models_root=root, device="cpu"),
        volumes,
    )
    if args.set_default and decision["promote"]:
        write_default(root, meta["name"], meta["version"])
    result = {
        "bundle": str(path),
        "name": meta["name"],
        "version": meta["version"],
        "parent": f"{parent['name']}:{parent['version']}",
        "decision": decision,
        "default": bool(args.set_default and decision["promote"]),
    }
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print(f"{meta['name']} {meta['version']} ({path}) {describe(decision)}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from training.compare import compare

    rows = compare(
        args.configs,
        budget_s=args.budget_s,
        output=args.output,
        threads=args.threads,
        train_runs=not args.no_train,
    )
    print(args.output.with_suffix(".md").read_text())
    return 0 if rows else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (1 with a one-line reason on bad input)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    np.seterr(all="ignore")
    try:
        if args.command == "compare":
            return _cmd_compare(args)
        if args.command == "finetune":
            return _cmd_finetune(args)
        config = load_config(args.config, overrides=args.set)
        handler = {
            "train": _cmd_train,
            "evaluate": _cmd_evaluate,
            "export": _cmd_export,
        }
        return handler[args.command](args, config)
    except (TrainingError, ValueError, OSError) as exc:
        print(f"training {args.command}: {exc}", file=sys.stderr)
        return 1
