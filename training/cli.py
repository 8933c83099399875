"""Command line: ``python -m training train|evaluate|export --config FILE``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.networks import DenoisingNetwork, build_network
from training.config import load_config
from training.errors import TrainingError
from training.evaluate import describe_held_out, evaluate_network, held_out_pairs
from training.trainer import run_dir, train, training_pairs

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
    p_eval.add_argument("--json", action="store_true", help="print metrics as JSON")
    p_export.add_argument("--models-root", help="default: export.models_root")
    p_export.add_argument("--folder", help="bundle folder name, default <name>")
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


def _cmd_export(args: argparse.Namespace, config: dict[str, Any]) -> int:
    from training.export import bundle_folder, export_bundle

    torch.set_num_threads(int(config["train"]["threads"]))
    network, checkpoint = _load_checkpoint(config, args.checkpoint)
    input_spec = checkpoint["input_spec"]
    summary_path = run_dir(config) / "train_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    metrics = _evaluate(config, network, input_spec)
    ev = config["evaluate"]
    held_out = describe_held_out(
        config["modality"], int(ev["count"]), int(ev["size"]), bool(ev["real"])
    )
    # The OOD reference describes the training inputs: a spread of the noisy
    # training slices (all levels), capped to keep the export quick.
    pairs = training_pairs(config)
    step = max(1, len(pairs) // 48)
    ood_slices = [p.noisy for p in pairs[::step]]
    root = Path(args.models_root or config["export"]["models_root"])
    folder = bundle_folder(
        root,
        config["name"],
        config["version"],
        args.folder or config["export"]["folder"],
    )
    path, meta = export_bundle(
        directory=folder,
        network=network,
        metadata_args={
            "config": config,
            "network_def": checkpoint["network_def"],
            "input_spec": input_spec,
            "metrics": metrics,
            "summary": summary,
            "held_out": held_out,
        },
        ood_slices=ood_slices,
    )
    if args.set_default:
        (root / "DEFAULT").write_text(f"{meta['name']}\n")
    size_mb = (path / "models" / "model.pt").stat().st_size / 1e6
    print(
        f"exported {meta['name']} {meta['version']} to {path} "
        f"({size_mb:.2f} MB, sha256 {meta['weights_sha256']})"
    )
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
