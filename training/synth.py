"""Training batches with noise made on the fly: any level, real textures, real anatomy.

The fixed-level pairs of :mod:`training.data` teach a model a handful of doses and
one noise texture. Here every crop gets noise drawn anew, on the training device:

* its SD log-uniform over ``noise.sd_hu`` (near-noiseless to very low dose), or
  none at all for a share ``noise.clean_fraction`` of crops, so the model learns to
  leave a clean image alone;
* its texture either projection-domain CT noise (streaks along dense paths,
  :class:`dicomio.noise.CTNoiseModel`, precomputed per slice and scaled) or
  stationary noise with a noise power spectrum measured on the real training scans
  or drawn from the FBP family (:mod:`training.nps`), with a smooth amplitude
  modulation for the non-stationarity of real CT;
* real scans (which carry their own noise) only get noise at least
  ``noise.real_ratio`` times their own, so that their own noise is a small part of
  what the model is asked to remove, while synthetic images (phantoms, textured
  slices) have exactly clean targets at every level.

The network sees the crop's noise SD as a second channel (noise-conditioned
bundles), jittered by the typical error of the worker's estimate
(:func:`inference.noise.estimate_noise_sd`: 0.93-1.0x on real CT) and by the
texture it counts as noise at low noise, and the loss is measured in units of
the true SD, so quiet scans count as much as noisy ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.nn import functional as F

from dicomio.noise import CTNoiseModel
from inference.noise import noise_level_map
from training.data import Pair, Slice, _region_map, _square, crop_corner
from training.errors import DataError
from training.nps import NPS_BINS, measure_nps, parametric_nps, synthesise_noise

__all__ = [
    "NOISE_DEFAULTS",
    "SynthBatch",
    "SynthPool",
    "projection_noise",
    "measured_profiles",
    "validation_pairs",
]

#: Keys of ``data.noise`` and their defaults.
NOISE_DEFAULTS: dict[str, Any] = {
    "sd_hu": [0.5, 100.0],  # log-uniform range of the added noise SD
    "clean_fraction": 0.05,  # crops without added noise
    "projection_fraction": 0.35,  # crops with projection-domain noise
    "measured_fraction": 0.5,  # of the others: a measured (vs parametric) NPS
    "modulation": 0.3,  # SD of the log-amplitude of the smooth modulation
    "real_ratio": 2.5,  # real scans: added SD >= this times their own
    "loss_floor_hu": 1.0,  # the loss is in units of max(noise SD, this)
    "estimate_jitter": 0.15,  # SD of the log-ratio of the SD told to the true one
    "estimate_bias_hu": 1.5,  # told SD has up to this much texture added in quadrature
    "neighbour_fraction": 0.0,  # crops from series_neighbours items, when any
    # Real slices recorrupted (Pang et al., "Recorrupted-to-Recorrupted", CVPR
    # 2021): input y + a z, target y - z / a, z noise with the slice's own measured
    # NPS and SD, so input and target noise are independent and the target is an
    # unbiased view of the anatomy: the model learns to remove real scanner noise,
    # which a real slice that is its own target can never teach.
    "recorrupted_fraction": 0.0,  # of real crops (no neighbour target)
    "recorrupted_alpha": [0.3, 1.0],  # log-uniform range of a
}
#: Dose of the precomputed projection-domain noise (its SD is rescaled anyway).
_BANK_DOSE = 0.25
#: Parametric NPS profiles in a pool's table.
_PARAMETRIC_PROFILES = 256


class SynthBatch(NamedTuple):
    """Training crops on the training device.

    Attributes:
        noisy: (B, 2, P, P) normalised noisy crop and its noise level map
            (:func:`inference.noise.noise_level_map`).
        clean: (B, 1, P, P) normalised target.
        weight: (B, 1, P, P) loss weight: the lesion weight over the squared
            normalised noise SD (floored), so the loss is in noise units.
        regions: (B, 1, P, P) int16 lesion regions (see :class:`training.data.Batch`).
        noise_sd: (B,) noise SD of each crop's input in HU.
        unit: (B, 1, 1, 1) normalised units per noise SD of each crop (the square
            root of its weight before lesion weights and masks).
    """

    noisy: torch.Tensor
    clean: torch.Tensor
    weight: torch.Tensor
    regions: torch.Tensor
    noise_sd: torch.Tensor
    unit: torch.Tensor


def projection_noise(
    slices: Sequence[Slice], *, seeds: Sequence[int], workers: int = 1
) -> list[np.ndarray]:
    """One projection-domain noise image per slice, float16, unit SD in the body.

    Args:
        slices: the clean (or full-dose) slices.
        seeds: one noise seed per slice.
        workers: processes to simulate in (about a second per 512x512 slice).
    """
    jobs = [(s.image, s.pixel_mm, seed) for s, seed in zip(slices, seeds, strict=True)]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(_projection_one, jobs, chunksize=4))
    return [_projection_one(job) for job in jobs]


def _projection_one(job: tuple[np.ndarray, float, int]) -> np.ndarray:
    image, pixel_mm, seed = job
    square, region = _square(image, -1000.0)
    noise = CTNoiseModel().noise(
        square, _BANK_DOSE, pixel_mm=pixel_mm, rng=np.random.default_rng(seed)
    )[region]
    body = image > -500.0
    sd = float(noise[body].std()) if body.any() else float(noise.std())
    return (noise / max(sd, 1e-6)).astype(np.float16)


def measured_profiles(slices: Sequence[Slice]) -> np.ndarray:
    """Radial NPS profiles of the real slices among ``slices`` (those with their
    own noise), one row per slice that has enough flat area; (0, NPS_BINS) if none.
    """
    rows = [measure_nps(s.image) for s in slices if s.noise_sd > 0]
    kept = [r for r in rows if r is not None]
    return np.stack(kept) if kept else np.zeros((0, NPS_BINS))


@dataclass
class _Item:
    index: int
    y: int
    x: int
    turns: int
    flip: bool
    sd_added: float
    projection: bool
    profile: int
    #: Recorrupted real crop: the target is the slice minus the added noise / a^2.
    alpha: float = 0.0


class SynthPool:
    """Clean slices, their projection noise and NPS profiles, on the training device.

    Args:
        slices: clean or full-dose slices (real ones with ``noise_sd`` set).
        bank: :func:`projection_noise` of the same slices.
        profiles: measured NPS profiles (:func:`measured_profiles`).
        input_spec: the bundle's input spec (linear normalisation).
        noise: ``data.noise`` (keys of :data:`NOISE_DEFAULTS`).
        device: where batches are made.
        lesion_weight, lesion_crops: as for :class:`training.data.PairPool`.
    """

    def __init__(
        self,
        slices: Sequence[Slice],
        bank: Sequence[np.ndarray],
        profiles: np.ndarray,
        input_spec: Mapping[str, Any],
        noise: Mapping[str, Any],
        device: torch.device,
        *,
        lesion_weight: float = 1.0,
        lesion_crops: float = 0.0,
    ) -> None:
        if not slices:
            raise DataError("training data: no slices (check the data sources)")
        if len(bank) != len(slices):
            raise DataError("training data: one projection noise image per slice")
        norm = input_spec["normalisation"]
        if norm["kind"] != "linear":
            raise DataError(
                "training data: on-the-fly noise needs a linear normalisation (CT)"
            )
        self.offset, self.scale = float(norm["offset"]), float(norm["scale"])
        self.noise_unit = float(input_spec.get("noise_unit", 0.005))
        self.noise = {**NOISE_DEFAULTS, **dict(noise)}
        self.device = device
        self.lesion_weight = lesion_weight
        self.lesion_crops = lesion_crops
        self.slices = list(slices)
        self.images = [torch.from_numpy(s.image).to(device) for s in slices]
        # Self-supervised items: the neighbours' mean is the target where the
        # slices agree (training.data.series_neighbours); the loss sees nothing
        # elsewhere.
        self.targets = [
            None if s.target is None else torch.from_numpy(s.target).to(device)
            for s in slices
        ]
        self.target_masks = [
            None
            if s.target_mask is None
            else torch.from_numpy(s.target_mask.astype(np.float32)).to(device)
            for s in slices
        ]
        self.mask_pixels = [
            None if s.target_mask is None else np.argwhere(s.target_mask)[::97]
            for s in slices
        ]
        self.neighbour_items = [i for i, s in enumerate(slices) if s.target is not None]
        self.plain_items = [i for i, s in enumerate(slices) if s.target is None]
        self.bank = [torch.from_numpy(b).to(device) for b in bank]
        # Measured profiles first, then a fixed table of FBP-like ones with random
        # ramp, cut-off and roll-off; crops pick a row.
        self.measured = int(np.asarray(profiles).reshape(-1, NPS_BINS).shape[0])
        table_rng = np.random.default_rng(20261130)
        parametric = [
            parametric_nps(
                table_rng.uniform(0.6, 1.4),
                table_rng.uniform(0.08, 0.5),
                table_rng.uniform(2.0, 6.0),
            )
            for _ in range(_PARAMETRIC_PROFILES)
        ]
        # Each real slice's own NPS, for recorrupted crops (rows after the others).
        own_rows: list[np.ndarray] = []
        self.own_profile: list[int | None] = [None] * len(slices)
        if float(self.noise["recorrupted_fraction"]) > 0:
            first = self.measured + _PARAMETRIC_PROFILES
            for i, item in enumerate(slices):
                if item.noise_sd > 0 and item.target is None:
                    row = measure_nps(item.image)
                    if row is not None:
                        self.own_profile[i] = first + len(own_rows)
                        own_rows.append(row)
        table = np.concatenate(
            [
                np.asarray(profiles).reshape(-1, NPS_BINS),
                np.stack(parametric),
                np.asarray(own_rows).reshape(-1, NPS_BINS),
            ]
        )
        self.profiles = torch.as_tensor(table, dtype=torch.float32, device=device)
        self.regions: list[np.ndarray | None] = []
        self.centres: list[np.ndarray] = []
        for item in slices:
            regions, centres = _region_map(item.lesion_mask)
            self.regions.append(regions)
            self.centres.append(centres)
        self.sources = sorted({s.source for s in slices})

    def __len__(self) -> int:
        return len(self.slices)

    def batch(
        self,
        rng: np.random.Generator,
        generator: torch.Generator,
        batch_size: int,
        patch: int,
    ) -> SynthBatch:
        """Random crops, flips and turns, each with noise drawn anew."""
        items = [self._draw(rng, patch) for _ in range(batch_size)]
        image = torch.stack([self._crop(self.images[i.index], i, patch) for i in items])
        clean = image.clone()
        for b, item in enumerate(items):
            target = self.targets[item.index]
            if target is not None:
                clean[b] = self._crop(target, item, patch)
        regions = np.zeros((batch_size, patch, patch), np.int16)
        for b, item in enumerate(items):
            source = self.regions[item.index]
            if source is not None:
                regions[b] = _turn(
                    source[item.y : item.y + patch, item.x : item.x + patch], item
                )
        noise = self._noise(items, patch, generator)
        for b, item in enumerate(items):
            if item.alpha > 0:
                clean[b] = clean[b] - noise[b] / (item.alpha * item.alpha)
        own = torch.tensor(
            [self.slices[i.index].noise_sd for i in items], device=self.device
        )
        added = torch.tensor([i.sd_added for i in items], device=self.device)
        noise_sd = torch.sqrt(own * own + added * added)
        # The network is told the true SD give or take the error of the worker's
        # estimate from a slice (inference.noise; 0.93-1.0x on the real CT and
        # water phantom it was checked on, more where texture counts as noise),
        # so it follows the estimate without trusting it to the last HU.
        jitter = torch.randn(len(items), generator=generator, device=self.device)
        told = noise_sd * torch.exp(float(self.noise["estimate_jitter"]) * jitter)
        # Texture counts in the estimate at low noise: a few HU more than there is.
        bias = float(self.noise["estimate_bias_hu"]) * torch.rand(
            len(items), generator=generator, device=self.device
        )
        told = torch.sqrt(told * told + bias * bias)
        noisy = (image + noise - self.offset) / self.scale
        level = noise_level_map(told / self.scale, self.noise_unit)
        level = level.reshape(-1, 1, 1).expand_as(noisy)
        floor = float(self.noise["loss_floor_hu"])
        unit = (self.scale / noise_sd.clamp(min=floor)).reshape(-1, 1, 1, 1)
        weight = (unit**2).expand(-1, 1, patch, patch).clone()
        for b, item in enumerate(items):
            mask = self.target_masks[item.index]
            if mask is not None:
                # The loss is a mean over the trusted pixels of the crop, so a crop
                # counts as much as a whole synthetic one however few they are.
                crop = self._crop(mask, item, patch)
                weight[b, 0] *= crop * (crop.numel() / crop.sum().clamp(min=1.0))
        regions_t = torch.from_numpy(regions).to(self.device)[:, None]
        if self.lesion_weight > 1:
            near = F.max_pool2d((regions_t > 0).float(), 5, stride=1, padding=2).bool()
            weight = torch.where(near, weight * self.lesion_weight, weight)
        return SynthBatch(
            noisy=torch.stack([noisy, level], dim=1),
            clean=((clean - self.offset) / self.scale)[:, None],
            weight=weight,
            regions=regions_t,
            noise_sd=noise_sd,
            unit=unit,
        )

    def _draw(self, rng: np.random.Generator, patch: int) -> _Item:
        neighbours = bool(self.neighbour_items) and (
            not self.plain_items
            or rng.random() < float(self.noise["neighbour_fraction"])
        )
        pool = self.neighbour_items if neighbours else self.plain_items
        index = pool[int(rng.integers(len(pool)))]
        image = self.slices[index].image
        y, x = self._corner(rng, index, image, patch)
        low, high = (float(v) for v in self.noise["sd_hu"])
        own = self.slices[index].noise_sd
        if own > 0 and not neighbours:
            low = max(low, float(self.noise["real_ratio"]) * own)
        # A neighbours' target has its own, independent noise: the slice may be
        # taken at its own noise level (half the time) or with more added. A
        # real slice that is its own target always gets noise added: left as it
        # is, it would teach the model to keep the noise it has.
        if neighbours:
            clean_share = 0.5
        elif own > 0:
            clean_share = 0.0
        else:
            clean_share = float(self.noise["clean_fraction"])
        if low > high:
            sd = low
        elif rng.random() < clean_share:
            sd = 0.0
        else:
            sd = float(math.exp(rng.uniform(math.log(low), math.log(high))))
        if self.measured and rng.random() < float(self.noise["measured_fraction"]):
            profile = int(rng.integers(self.measured))
        else:
            profile = self.measured + int(rng.integers(_PARAMETRIC_PROFILES))
        projection = bool(rng.random() < float(self.noise["projection_fraction"]))
        alpha = 0.0
        own_profile = self.own_profile[index]
        if (
            not neighbours
            and own_profile is not None
            and rng.random() < float(self.noise["recorrupted_fraction"])
        ):
            a_low, a_high = (float(v) for v in self.noise["recorrupted_alpha"])
            alpha = float(math.exp(rng.uniform(math.log(a_low), math.log(a_high))))
            sd, profile, projection = alpha * own, own_profile, False
        return _Item(
            index,
            y,
            x,
            int(rng.integers(4)),
            bool(rng.integers(2)),
            sd,
            projection,
            profile,
            alpha,
        )

    def _corner(
        self, rng: np.random.Generator, index: int, image: np.ndarray, patch: int
    ) -> tuple[int, int]:
        ny, nx = image.shape
        trusted = self.mask_pixels[index]
        if trusted is not None and len(trusted):
            # Self-supervised items: around a pixel where the neighbours agree, or
            # the crop would often hold no pixel for the loss to see.
            cy, cx = trusted[int(rng.integers(len(trusted)))]
            y = cy - int(rng.integers(patch // 4, patch - patch // 4))
            x = cx - int(rng.integers(patch // 4, patch - patch // 4))
            return min(max(y, 0), ny - patch), min(max(x, 0), nx - patch)
        if ny < patch or nx < patch:
            raise DataError(
                f"training data: {self.slices[index].source} is {ny}x{nx}, smaller "
                f"than the {patch}-pixel patch"
            )
        return crop_corner(
            rng,
            image.shape,
            patch,
            self.centres[index],
            self.lesion_crops,
            lambda y, x: (image[y : y + patch, x : x + patch] > -500).mean() > 0.3,
        )

    def _crop(self, source: torch.Tensor, item: _Item, patch: int) -> torch.Tensor:
        return _turn(source[item.y : item.y + patch, item.x : item.x + patch], item)

    def _noise(
        self, items: Sequence[_Item], patch: int, generator: torch.Generator
    ) -> torch.Tensor:
        count = len(items)
        rows = torch.tensor([i.profile for i in items], device=self.device)
        profiles = self.profiles[rows]
        noise = synthesise_noise(profiles, (patch, patch), generator=generator)
        amount = float(self.noise["modulation"])
        if amount > 0:
            coarse = torch.randn(
                count, 1, 4, 4, generator=generator, device=self.device
            )
            field = F.interpolate(
                coarse, size=(patch, patch), mode="bicubic", align_corners=False
            )[:, 0]
            noise = noise * torch.exp(amount * field)
            noise = noise / noise.std(dim=(1, 2), keepdim=True).clamp(min=1e-12)
        for b, item in enumerate(items):
            if item.projection:
                noise[b] = self._crop(self.bank[item.index], item, patch).float()
        scale = torch.tensor([i.sd_added for i in items], device=self.device)
        return noise * scale.reshape(-1, 1, 1)


def _turn(array: Any, item: _Item) -> Any:
    """Rotate by ``item.turns`` quarter turns and flip, NumPy array or tensor."""
    if isinstance(array, torch.Tensor):
        out = torch.rot90(array, item.turns, dims=(0, 1))
        return torch.flip(out, dims=(1,)) if item.flip else out
    out = np.rot90(array, item.turns)
    return out[:, ::-1] if item.flip else out


def validation_pairs(
    slices: Sequence[Slice], levels: Sequence[float], *, seed: int
) -> list[Pair]:
    """Fixed noisy copies of ``slices`` at each noise SD in ``levels`` (HU), with a
    mid-sharp FBP noise texture, reproducible from ``seed``; ``Pair.level`` is the
    SD."""
    profile = torch.from_numpy(parametric_nps(1.0, 0.25))[None].float()
    pairs = []
    for i, item in enumerate(slices):
        for j, level in enumerate(levels):
            generator = torch.Generator().manual_seed(seed * 1000 + i * 10 + j)
            noise = synthesise_noise(profile, item.image.shape, generator=generator)
            noisy = (item.image + float(level) * noise[0].numpy()).astype(np.float32)
            pairs.append(Pair(item, noisy, float(level)))
    return pairs
