"""Training loops: supervised (noisy to clean) and self-supervised (Noise2Void)."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.optimizers import WarmupCosineSchedule
from monai.utils import set_determinism
from torch import nn
from tqdm import tqdm

from inference.devices import device_name, select_device
from inference.networks import DenoisingNetwork, build_network
from inference.noise import estimate_noise_sd
from inference.runner import denoise_images, input_channels
from training.config import default_input_spec, with_inference_settings
from training.data import (
    HELD_OUT_PHANTOM_SEED,
    Pair,
    PairPool,
    Slice,
    cache_key,
    folder_slices,
    make_pairs,
    phantom_slices,
    real_slices,
    series_neighbours,
    series_slices,
    volume_slices,
)
from training.errors import ConfigError, DataError
from training.metrics import psnr
from training.synth import SynthBatch, SynthPool, measured_profiles, projection_noise
from training.synth import validation_pairs as synth_validation_pairs

__all__ = [
    "seed_everything",
    "training_pairs",
    "validation_pairs",
    "blind_spot_batch",
    "lowpass_loss",
    "lesion_contrast_loss",
    "parent_of",
    "BudgetedWarmupCosine",
    "default_warmup_steps",
    "END_LR_FRACTION",
    "train",
    "run_dir",
]

log = logging.getLogger(__name__)

#: Part of every cache key: bump it when phantoms or noise models change, so stale
#: simulated pairs are never reused.
CACHE_VERSION = 3
#: The least learning rate, reached at the end of the cosine, as a share of train.lr.
END_LR_FRACTION = 0.02


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (MONAI's ``set_determinism``) and ask PyTorch
    for deterministic kernels, warning rather than failing where one has none."""
    set_determinism(seed=seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def run_dir(config: Mapping[str, Any]) -> Path:
    """Where a config's checkpoints, history and plots go (``runs/<name>``)."""
    return Path(config["train"]["output_dir"] or Path("runs") / config["name"])


def _source_slices(
    source: Mapping[str, Any], modality: str, workers: int = 1
) -> list[Slice]:
    kind = source.get("kind")
    if kind in ("phantom", "texture"):
        seed, count = int(source.get("seed", 1000)), int(source.get("count", 16))
        size = int(source.get("size", 512))
        if workers <= 1 or count < 2:
            return phantom_slices(modality, count, seed=seed, size=size, kind=str(kind))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parts = [
                pool.submit(
                    phantom_slices, modality, 1, seed=s, size=size, kind=str(kind)
                )
                for s in range(seed, seed + count)
            ]
            return [item for part in parts for item in part.result()]
    if kind == "bundled":
        return real_slices(modality, "train")
    if kind == "volume":
        if "path" not in source or "pixel_mm" not in source:
            raise ConfigError("config: a volume source needs a path and pixel_mm")
        return volume_slices(
            source["path"], float(source["pixel_mm"]), held_out=source.get("held_out")
        )
    if kind == "series_neighbours":
        if "path" not in source:
            raise ConfigError("config: a series_neighbours source needs a path")
        return series_neighbours(
            source["path"], modality, held_out=source.get("held_out")
        )
    if kind in ("dicom_folder", "dicom_series"):
        if "path" not in source:
            raise ConfigError(f"config: a {kind} source needs a path")
        if kind == "dicom_series":
            return series_slices(
                source["path"], modality, held_out=source.get("held_out")
            )
        return folder_slices(source["path"], modality)
    raise ConfigError(
        "config: data source kind must be phantom, texture, bundled, dicom_folder, "
        f"dicom_series, series_neighbours or volume, got {kind!r}"
    )


def training_slices(config: Mapping[str, Any], *, cache: bool = True) -> list[Slice]:
    """The clean (synthetic) and full-dose (real) slices of a config's sources,
    each source cached under ``data.cache_dir`` except site folders, whose content
    may change; real slices get their own noise estimate (``Slice.noise_sd``)."""
    modality = config["modality"]
    slices: list[Slice] = []
    for source in config["data"]["sources"]:
        key = {"v": CACHE_VERSION, "modality": modality, "source": dict(source)}

        def build(source: Mapping[str, Any] = source) -> list[Slice]:
            found = _source_slices(source, modality, int(config["data"]["workers"]))
            for item in found:
                if item.full_dose and item.target is None:
                    body = -500.0 if modality == "CT" else None
                    item.noise_sd = float(
                        estimate_noise_sd(item.image, body_threshold=body)[0]
                    )
            return found

        slices.extend(
            _cached(
                config,
                "source",
                key,
                build,
                cache and source["kind"] not in ("dicom_folder", "volume"),
            )
        )
    if not slices:
        raise DataError("training data: the sources gave no slices")
    return slices


def _cached(
    config: Mapping[str, Any], prefix: str, key_obj: Any, build: Any, cache: bool
) -> Any:
    cache_dir = Path(config["data"]["cache_dir"])
    path = cache_dir / f"{prefix}-{cache_key(key_obj)}.pkl"
    if cache and path.exists():
        with open(path, "rb") as handle:
            return pickle.load(handle)
    pairs = build()
    if cache:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as handle:
            pickle.dump(pairs, handle, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
    return pairs


def training_pairs(config: Mapping[str, Any], *, cache: bool = True) -> list[Pair]:
    """The (noisy, clean) training pairs a config describes, cached under
    ``data.cache_dir`` (simulating CT noise costs about a second per slice)."""
    data, modality = config["data"], config["modality"]
    key = {
        "v": CACHE_VERSION,
        "modality": modality,
        "sources": data["sources"],
        "levels": data["levels"],
        "realisations": data["realisations"],
        "seed": config["seed"],
    }

    def build() -> list[Pair]:
        slices = []
        for source in data["sources"]:
            slices.extend(_source_slices(source, modality))
        if not slices:
            raise DataError("training data: the sources gave no slices")
        return make_pairs(
            slices,
            modality,
            data["levels"],
            seed=config["seed"],
            realisations=int(data["realisations"]),
        )

    folder_sources = any(s.get("kind") == "dicom_folder" for s in data["sources"])
    return _cached(config, "pairs", key, build, cache and not folder_sources)


def validation_pairs(config: Mapping[str, Any], *, cache: bool = True) -> list[Pair]:
    """Validation pairs: phantoms from a seed range used neither for training nor
    for the held-out evaluation."""
    val, modality = config["data"]["validation"], config["modality"]
    seed = int(val["seed"])
    if seed >= HELD_OUT_PHANTOM_SEED:
        raise ConfigError(
            f"config: data.validation.seed must be below {HELD_OUT_PHANTOM_SEED}"
        )
    synth = config["data"]["noise"] is not None
    key = {
        "v": CACHE_VERSION,
        "validation": dict(val),
        "modality": modality,
        "synth": synth,
    }

    def build() -> list[Pair]:
        slices = phantom_slices(
            modality, int(val["count"]), seed=seed, size=int(val["size"])
        )
        if synth:
            slices += phantom_slices(
                modality,
                int(val["count"]),
                seed=seed,
                size=int(val["size"]),
                kind="texture",
            )
            return synth_validation_pairs(slices, val["levels"], seed=seed)
        return make_pairs(slices, modality, val["levels"], seed=seed)

    return _cached(config, "validation", key, build, cache)


def projection_bank(
    config: Mapping[str, Any], slices: list[Slice], *, cache: bool = True
) -> list[np.ndarray]:
    """:func:`training.synth.projection_noise` of the training slices, each cached
    under ``data.cache_dir/bank`` by the slice's content and the config's seed, so
    adding a source simulates only its slices."""
    seed = int(config["seed"])
    folder = Path(config["data"]["cache_dir"]) / "bank"
    keys = [
        cache_key(
            {
                "v": CACHE_VERSION,
                "seed": seed,
                "source": item.source,
                "image": hashlib.sha256(item.image.tobytes()).hexdigest(),
            }
        )
        for item in slices
    ]
    bank: list[np.ndarray | None] = [
        np.load(folder / f"{key}.npy")
        if cache and (folder / f"{key}.npy").exists()
        else None
        for key in keys
    ]
    missing = [i for i, noise in enumerate(bank) if noise is None]
    made = projection_noise(
        [slices[i] for i in missing],
        seeds=[int(keys[i][:8], 16) for i in missing],
        workers=int(config["data"]["workers"]),
    )
    if cache and missing:
        folder.mkdir(parents=True, exist_ok=True)
    for i, noise in zip(missing, made, strict=True):
        bank[i] = noise
        if cache:
            np.save(folder / f"{keys[i]}.npy", noise)
    return [noise for noise in bank if noise is not None]


def blind_spot_batch(
    noisy: torch.Tensor, fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise2Void masking: replace a random ``fraction`` of pixels by a random
    neighbour within a 5x5 window (never the pixel itself).

    Args:
        noisy: ``(B, 1, H, W)`` noisy batch.
        fraction: share of pixels to mask, e.g. 0.02.
        generator: torch random generator.

    Returns:
        ``(masked input, boolean mask of the replaced pixels)``; the loss compares
        the network's output with the *unmasked* noisy value at those pixels only,
        so it cannot learn the identity and, with noise independent between the
        pixel and its neighbours, its optimum is the clean value.
    """
    b, c, h, w = noisy.shape
    mask = torch.rand((b, c, h, w), generator=generator) < fraction
    dy = torch.randint(-2, 3, (b, c, h, w), generator=generator)
    dx = torch.randint(-2, 3, (b, c, h, w), generator=generator)
    same = (dy == 0) & (dx == 0)
    dx = torch.where(same, torch.ones_like(dx), dx)
    yy = torch.arange(h).view(1, 1, h, 1).expand(b, c, h, w)
    xx = torch.arange(w).view(1, 1, 1, w).expand(b, c, h, w)
    # Offsets that leave the patch are mirrored, so a pixel is never its own donor.
    ny = torch.where((yy + dy < 0) | (yy + dy >= h), yy - dy, yy + dy)
    nx = torch.where((xx + dx < 0) | (xx + dx >= w), xx - dx, xx + dx)
    flat = noisy.reshape(b, c, h * w)
    neighbours = torch.gather(flat, 2, (ny * w + nx).reshape(b, c, h * w)).reshape(
        b, c, h, w
    )
    return torch.where(mask, neighbours, noisy), mask


def parent_record(meta: Mapping[str, Any]) -> dict[str, Any]:
    """What a child bundle records of its parent: name, version, weights SHA-256
    and the parent's training data."""
    return {
        "name": meta["name"],
        "version": meta["version"],
        "weights_sha256": meta["weights_sha256"],
        "training_data": meta.get("training", {}).get("data"),
    }


def parent_of(bundle_dir: Path | str) -> tuple[DenoisingNetwork, dict[str, Any]]:
    """Load a parent bundle to fine-tune: its network (weights checked against the
    recorded SHA-256) and its metadata."""
    from inference.bundle import WEIGHTS_PATH, read_metadata, sha256_file

    folder = Path(bundle_dir)
    meta = read_metadata(folder)
    weights = folder / WEIGHTS_PATH
    actual = sha256_file(weights)
    if actual != meta.get("weights_sha256"):
        raise DataError(
            f"fine-tune: {weights}: SHA-256 {actual} does not match the metadata's "
            f"{meta.get('weights_sha256')}; refusing a modified parent"
        )
    network = build_network(meta["network_def"])
    network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return network, meta


def default_warmup_steps(total_steps: int) -> int:
    """Warm-up steps when ``train.warmup_steps`` is not set: 5% of the steps, at
    least 1 and at most 100."""
    return max(1, min(total_steps // 20, 100))


class BudgetedWarmupCosine(WarmupCosineSchedule):
    """MONAI's linear warm-up from 0 and cosine decay, held at ``end_lr`` from the
    end of the cosine on; with a time budget the cosine follows whichever is further
    along, the steps or the share of the budget spent, so the rate reaches
    ``end_lr`` when the time runs out.

    Args:
        optimizer: the wrapped optimiser.
        warmup_steps: steps of linear warm-up.
        t_total: steps of the whole run.
        end_lr: the least learning rate, reached at the end of the cosine.
        budget_s: the run's time budget in seconds; ``None`` (default): steps only.
        started: ``time.perf_counter()`` at the start of the run (default now).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        warmup_steps: int,
        t_total: int,
        end_lr: float,
        budget_s: float | None = None,
        started: float | None = None,
    ) -> None:
        self.budget_s = budget_s
        self.started = time.perf_counter() if started is None else started
        super().__init__(
            optimizer, warmup_steps=warmup_steps, t_total=t_total, end_lr=end_lr
        )

    def lr_lambda(self, step: float) -> float:
        if step >= self.warmup_steps:
            if self.budget_s:
                spent = (time.perf_counter() - self.started) / self.budget_s
                by_time = self.warmup_steps + spent * (self.t_total - self.warmup_steps)
                step = max(step, by_time)
            step = min(step, self.t_total)  # past the end the cosine would rise again
        return float(super().lr_lambda(step))


def _weighted_loss(
    name: str, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    error = pred - target
    error = error.square() if name == "mse" else error.abs()
    return (error * weight).sum() / weight.sum()


def lowpass_loss(
    pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, kernel: int = 5
) -> torch.Tensor:
    """Contrast-preserving loss: the weighted mean square of the error averaged
    over ``kernel`` x ``kernel`` neighbourhoods. Averaging leaves a local bias (a
    flattened low-contrast lesion) intact but shrinks residual noise, so this term
    penalises lost contrast far more than the pixel-wise loss does."""
    local = nn.functional.avg_pool2d(
        pred - target, kernel, stride=1, padding=kernel // 2, count_include_pad=False
    )
    return (local.square() * weight).sum() / weight.sum()


def lesion_contrast_loss(
    pred: torch.Tensor, target: torch.Tensor, regions: torch.Tensor
) -> torch.Tensor:
    """Mean square of the contrast each lesion loses or gains: per lesion in each
    crop, (core mean - ring mean) of ``pred - target``, the error in exactly the
    contrast the quality benchmark measures. Noise averages out over a lesion's
    pixels, so unlike a pixel loss this term barely rewards smoothing and mostly
    punishes a flattened (or exaggerated) lesion. 0 for a batch without lesions.

    Args:
        pred, target: ``(B, 1, H, W)`` in normalised units.
        regions: ``(B, 1, H, W)`` integer map, ``+k`` on lesion ``k``'s core and
            ``-k`` on its ring (:class:`training.data.Batch`).
    """
    error = (pred - target).flatten().float()
    labels = regions.flatten().long()
    crops = regions.shape[0]
    count = int(labels.abs().max()) + 1 if labels.numel() else 1
    crop_of = torch.arange(crops, device=labels.device).repeat_interleave(
        labels.numel() // max(crops, 1)
    )
    index = crop_of * count + labels.abs()
    means = []
    for side in (labels > 0, labels < 0):
        total = torch.zeros(crops * count, device=error.device).index_add(
            0, index[side], error[side]
        )
        pixels = torch.zeros(crops * count, device=error.device).index_add(
            0, index[side], torch.ones_like(error[side])
        )
        means.append((total / pixels.clamp(min=1), pixels))
    (core, core_pixels), (ring, ring_pixels) = means
    # The benchmark's own bar: a lesion needs 4 core and 8 ring pixels in view.
    seen = (core_pixels >= 4) & (ring_pixels >= 8)
    if not bool(seen.any()):
        return pred.sum() * 0.0
    return (core - ring)[seen].square().mean()


def _synth_loss(
    network: DenoisingNetwork, batch: SynthBatch, train: Mapping[str, Any]
) -> torch.Tensor:
    """Loss of one on-the-fly batch, in units of each crop's noise SD: the
    weighted pixel loss plus, when asked, the lesion contrast and low-pass terms
    on the same scale."""
    inputs = batch.noisy if input_channels(network) == 2 else batch.noisy[:, :1]
    pred = network(inputs)
    error = pred - batch.clean
    error = error.square() if train["loss"] == "mse" else error.abs()
    loss = (error * batch.weight).mean()
    unit = batch.unit
    if float(train["lowpass_weight"]) > 0:
        loss = loss + float(train["lowpass_weight"]) * lowpass_loss(
            pred * unit, batch.clean * unit, torch.ones_like(batch.weight)
        )
    if float(train["contrast_weight"]) > 0:
        loss = loss + float(train["contrast_weight"]) * lesion_contrast_loss(
            pred * unit, batch.clean * unit, batch.regions
        )
    return loss


def _loss_fn(name: str) -> nn.Module:
    return nn.MSELoss() if name == "mse" else nn.L1Loss()


def _validate(
    network: DenoisingNetwork,
    pairs: list[Pair],
    input_spec: Mapping[str, Any],
    noise_floor: float | None = None,
) -> dict[str, float]:
    outputs = denoise_images(
        network,
        [p.noisy for p in pairs],
        input_spec,
        pixel_mm=[p.clean.pixel_mm for p in pairs],
    )
    losses, psnrs = [], []
    for pair, out in zip(pairs, outputs, strict=True):
        clean = pair.clean.image
        if noise_floor is not None:
            # In units of the noise SD (Pair.level, HU) inside the body.
            body = clean > -500.0
            sd = max(pair.level, noise_floor)
            losses.append(float(np.mean(((out - clean)[body] / sd) ** 2)))
            psnrs.append(
                psnr(np.clip(clean, -160, 240), np.clip(out, -160, 240), 400.0)
            )
            continue
        if input_spec["normalisation"]["kind"] == "linear":
            scale = float(input_spec["normalisation"]["scale"])
        else:
            scale = float(
                np.percentile(pair.noisy, input_spec["normalisation"]["upper"])
            )
        losses.append(float(np.mean(((out - clean) / scale) ** 2)))
        if input_spec["modality"] == "CT":
            psnrs.append(
                psnr(np.clip(clean, -160, 240), np.clip(out, -160, 240), 400.0)
            )
        else:
            psnrs.append(psnr(clean, out, float(clean.max() - clean.min())))
    return {"val_loss": float(np.mean(losses)), "val_psnr": float(np.mean(psnrs))}


def _plot(history: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].semilogy(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax[0].semilogy(epochs, [h["val_loss"] for h in history], "s-", label="validation")
    ax[0].set_xlabel("epoch")
    ax[0].set_ylabel("loss (normalised units)")
    ax[0].legend()
    ax[1].plot(epochs, [h["val_psnr"] for h in history], "s-", color="C1")
    ax[1].set_xlabel("epoch")
    ax[1].set_ylabel("validation PSNR (dB)")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def train(
    config: Mapping[str, Any], *, progress: bool = True, cache: bool = True
) -> dict[str, Any]:
    """Train the network a config describes; write checkpoints and plots.

    Writes into :func:`run_dir`: ``checkpoint_last.pt`` and ``checkpoint_best.pt``
    (lowest validation loss; ``{"state_dict", "epoch", "val_loss", ...}``),
    ``history.json`` and ``loss_curve.png``, after every epoch.

    Args:
        config: a completed config (:func:`training.config.complete_config`).
        progress: show a tqdm progress bar.
        cache: cache simulated pairs under ``data.cache_dir``.

    Returns:
        ``{"history", "best", "run_dir", "parent", "sources", "elapsed_s"}``.
    """
    started = time.perf_counter()
    t = config["train"]
    torch.set_num_threads(int(t["threads"]))
    seed_everything(int(config["seed"]))
    parent = None
    if t["init_from"]:
        network, parent_meta = parent_of(t["init_from"])
        if parent_meta["network_def"] != dict(config["network"]):
            log.info("fine-tune: using the parent's network definition")
        if parent_meta.get("input_spec", {}).get("modality") != config["modality"]:
            raise ConfigError(
                f"config: parent {t['init_from']} is for "
                f"{parent_meta.get('input_spec', {}).get('modality')}, not "
                f"{config['modality']}"
            )
        network_def = parent_meta["network_def"]
        parent = parent_record(parent_meta)
    else:
        network_def = dict(config["network"])
        if network_def.get("args", {}).get("spatial_dims", 2) != 2:
            raise ConfigError("config: training supports 2D networks (spatial_dims 2)")
        network = build_network(network_def)
    device = select_device(None if t["device"] == "auto" else t["device"])
    network.to(device)
    if parent is not None:
        input_spec = with_inference_settings(parent_meta["input_spec"], config)
    else:
        input_spec = with_inference_settings(
            default_input_spec(
                config["modality"],
                network,
                int(config["export"]["batch_size"]),
                config["normalisation"],
                config["residual_limit"],
            ),
            config,
        )
    noise = config["data"]["noise"]
    pool: PairPool | SynthPool
    if noise is not None:
        slices = training_slices(config, cache=cache)
        pool = SynthPool(
            slices,
            projection_bank(config, slices, cache=cache),
            measured_profiles(slices),
            input_spec,
            noise,
            device,
            lesion_weight=float(t["lesion_weight"]),
            lesion_crops=float(t["lesion_crops"]),
        )
        noise_floor: float | None = float(noise["loss_floor_hu"])
    else:
        pool = PairPool(
            training_pairs(config, cache=cache),
            input_spec,
            lesion_weight=float(t["lesion_weight"]),
            lesion_crops=float(t["lesion_crops"]),
        )
        noise_floor = None
    val_pairs = validation_pairs(config, cache=cache)
    patch = int(t["patch_size"])
    if network.fixed_roi is not None:
        patch = int(network.fixed_roi[0])
    elif patch % network.size_multiple:
        raise ConfigError(
            f"config: train.patch_size {patch} must be a multiple of "
            f"{network.size_multiple} for {network_def['kind']}"
        )
    out_dir = run_dir(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, default=str))

    optimiser = torch.optim.Adam(network.parameters(), lr=float(t["lr"]))
    total_steps = int(t["epochs"]) * int(t["steps_per_epoch"])
    budget = t["time_budget_s"]
    warmup = t["warmup_steps"]
    scheduler = BudgetedWarmupCosine(
        optimiser,
        warmup_steps=default_warmup_steps(total_steps) if warmup is None else warmup,
        t_total=total_steps,
        end_lr=END_LR_FRACTION * float(t["lr"]),
        budget_s=float(budget) if budget else None,
    )
    loss_fn = _loss_fn(t["loss"])
    rng = np.random.default_rng(int(config["seed"]))
    generator = torch.Generator().manual_seed(int(config["seed"]))
    noise_generator = torch.Generator(device=device).manual_seed(int(config["seed"]))
    self_supervised = t["mode"] == "self_supervised"
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"val_loss": float("inf"), "epoch": 0}
    bar = tqdm(
        total=total_steps, disable=not progress, desc=config["name"], unit="step"
    )
    for epoch in range(1, int(t["epochs"]) + 1):
        network.train()
        losses = []
        for _ in range(int(t["steps_per_epoch"])):
            if isinstance(pool, SynthPool):
                data_loss = _synth_loss(
                    network,
                    pool.batch(rng, noise_generator, int(t["batch_size"]), patch),
                    t,
                )
            elif self_supervised:
                crops = pool.batch(rng, int(t["batch_size"]), patch)
                noisy = torch.from_numpy(crops.noisy)
                # Masks come from the CPU generator: the same on every device.
                masked, mask = blind_spot_batch(
                    noisy, float(t["mask_fraction"]), generator
                )
                noisy, mask = noisy.to(device), mask.to(device)
                pred = network(masked.to(device))
                data_loss = loss_fn(pred[mask], noisy[mask])
            else:
                crops = pool.batch(rng, int(t["batch_size"]), patch)
                noisy = torch.from_numpy(crops.noisy).to(device)
                pred = network(noisy)
                clean = torch.from_numpy(crops.clean).to(device)
                weight = torch.from_numpy(crops.weight).to(device)
                data_loss = _weighted_loss(t["loss"], pred, clean, weight)
                if float(t["lowpass_weight"]) > 0:
                    data_loss = data_loss + float(t["lowpass_weight"]) * lowpass_loss(
                        pred, clean, weight
                    )
                if float(t["contrast_weight"]) > 0:
                    regions = torch.from_numpy(crops.regions).to(device)
                    data_loss = data_loss + float(
                        t["contrast_weight"]
                    ) * lesion_contrast_loss(pred, clean, regions)
            loss = data_loss + network.regularisation()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            losses.append(float(data_loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3g}", epoch=epoch)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses))}
        row.update(_validate(network, val_pairs, input_spec, noise_floor))
        row["elapsed_s"] = time.perf_counter() - started
        history.append(row)
        state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
        checkpoint = {
            "state_dict": state,
            "optimiser": optimiser.state_dict(),
            "epoch": epoch,
            "val_loss": row["val_loss"],
            "network_def": network_def,
            "input_spec": input_spec,
        }
        torch.save(checkpoint, out_dir / "checkpoint_last.pt")
        if row["val_loss"] < best["val_loss"]:
            best = {"val_loss": row["val_loss"], "epoch": epoch}
            torch.save(checkpoint, out_dir / "checkpoint_best.pt")
        (out_dir / "history.json").write_text(json.dumps(history, indent=2))
        _plot(history, out_dir / "loss_curve.png")
        if progress:
            tqdm.write(
                f"epoch {epoch}: train {row['train_loss']:.4g} val "
                f"{row['val_loss']:.4g} val PSNR {row['val_psnr']:.2f} dB "
                f"({row['elapsed_s']:.0f} s)"
            )
        if budget is not None and row["elapsed_s"] > float(budget):
            break
    bar.close()
    summary = {
        "history": history,
        "best": best,
        "run_dir": str(out_dir),
        "parent": parent,
        "network_def": network_def,
        "input_spec": input_spec,
        "device": device_name(device),
        "sources": pool.sources,
        "pairs": len(pool),
        "elapsed_s": time.perf_counter() - started,
    }
    (out_dir / "train_summary.json").write_text(
        json.dumps(summary, indent=2, default=str)
    )
    return summary
