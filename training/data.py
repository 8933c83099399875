"""Training and evaluation data: phantom pairs, bundled real DICOM, user folders."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage

import dicomio
from dicomio import DicomRejected, SeriesVolume, read_folder
from dicomio.noise import CTNoiseModel, add_rician_noise
from dicomio.phantoms import ct_phantom, mr_phantom
from dicomio.reader import Instance, read_instance
from inference.runner import normalisation_for
from training.content import textured_slice
from training.errors import DataError
from training.metrics import lesion_regions

__all__ = [
    "HELD_OUT_PHANTOM_SEED",
    "REAL_SERIES_HELD_OUT",
    "REAL_SLICES",
    "Slice",
    "Pair",
    "Batch",
    "PairPool",
    "bundled_dicom_files",
    "read_dicom_slices",
    "read_series",
    "real_slices",
    "phantom_slices",
    "series_neighbours",
    "series_slices",
    "volume_slices",
    "make_pairs",
]

#: Phantom seeds at or above this are reserved for evaluation and the benchmark;
#: training refuses them, so held-out phantoms are never seen in training.
HELD_OUT_PHANTOM_SEED = 900_000

#: Real slices shipped with pydicom (``test_files``) and pydicom-data
#: (``data_store/data``). Duplicates (the same scan in other transfer syntaxes)
#: are left out. ``held_out`` files are never used for training: they are the
#: real part of ``python -m training evaluate`` and ``python -m bench quality``.
REAL_SLICES: dict[str, dict[str, tuple[str, ...]]] = {
    "CT": {
        "train": (
            "693_UNCR.dcm",
            "J2K_pixelrep_mismatch.dcm",
            "bad_sequence.dcm",
            "eCT_Supplemental.dcm",
        ),
        "held_out": ("explicit_VR-UN.dcm", "CT_small.dcm"),
    },
    "MR": {
        # examples_overlay.dcm is left out: it is a crop of the Siemens slice.
        "train": ("MR2_UNCR.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm"),
        "held_out": ("MR_small.dcm", "emri_small.dcm"),
    },
}


#: The real CT series shipped beside the project for real-data work (a head
#: phantom, real scanner noise; ``../shared/data/real-ct-head-phantom``): slices
#: ``[24, 42)`` in position order are held out of training (the neighbour-slice
#: measures of ``python -m bench quality`` use them), two more either side are
#: unused, the rest may train.
REAL_SERIES_HELD_OUT: tuple[int, int] = (24, 42)


@dataclass
class Slice:
    """One clean (or full-dose) 2D image with where it came from.

    Attributes:
        image: float32 ``(y, x)``, HU for CT, magnitude for MR.
        pixel_mm: in-plane spacing in mm.
        source: a short description, e.g. ``"phantom:1003"`` or
            ``"dicom:693_UNCR.dcm#0"``.
        full_dose: ``True`` for real scans, which already carry full-dose noise.
        lesion_mask: labelled lesion mask for phantoms, else ``None``.
        lesion_contrast: contrast of each lesion label (1-based), for phantoms.
        noise_sd: the noise the image already carries (real scans: its estimate,
            :func:`inference.noise.estimate_noise_sd`), 0 for synthetic images.
        target: for self-supervised real slices, the mean of the two neighbouring
            slices (the same anatomy with independent noise), which stands in for
            the clean image where ``target_mask`` says they agree; else ``None``.
        target_mask: boolean map of the pixels where ``target`` may be trusted.
    """

    image: np.ndarray
    pixel_mm: float
    source: str
    full_dose: bool = False
    lesion_mask: np.ndarray | None = None
    lesion_contrast: list[float] = field(default_factory=list)
    noise_sd: float = 0.0
    target: np.ndarray | None = None
    target_mask: np.ndarray | None = None


@dataclass
class Pair:
    """A clean slice and one noisy realisation of it."""

    clean: Slice
    noisy: np.ndarray
    level: float  # CT dose fraction, or MR sigma as a fraction of the 99.5th percentile


def bundled_dicom_files() -> dict[str, Path]:
    """Map file name to path for the DICOM files bundled in pydicom and pydicom-data.

    Reads the installed folders directly: pydicom's own look-up may try to download.
    """
    from pydicom.data.data_manager import DATA_ROOT

    folders = [Path(DATA_ROOT) / "test_files"]
    try:
        import data_store

        folders.append(Path(data_store.__file__).parent / "data")
    except ImportError:  # pydicom-data is optional; only its slices go missing
        pass
    files: dict[str, Path] = {}
    for folder in folders:
        for path in sorted(folder.rglob("*.dcm")):
            files.setdefault(path.name, path)
    return files


def _slice(frame: np.ndarray, modality: str, pixel_mm: float, source: str) -> Slice:
    """A decoded frame as a full-dose :class:`Slice`: CT from -1024 HU up (outside
    the scan field some scanners store -2000 or -3024: call it air), MR from 0."""
    floor = np.float32(-1024.0 if modality == "CT" else 0.0)
    return Slice(np.maximum(frame.astype(np.float32), floor), pixel_mm, source, True)


def _frame_slices(instance: Instance, name: str) -> list[Slice]:
    """Each frame of a decoded CT or MR instance as a :class:`Slice`."""
    slices = []
    for i, frame in enumerate(instance.pixels):
        spacing = instance.pixel_spacings_mm[i]
        pixel_mm = float(spacing[0]) if spacing else 1.0
        slices.append(_slice(frame, instance.modality, pixel_mm, f"dicom:{name}#{i}"))
    return slices


def _wanted(instance: Instance, modality: str | None) -> bool:
    if modality is not None and instance.modality != modality:
        return False
    return instance.modality in ("CT", "MR")


def read_dicom_slices(path: Path | str, modality: str | None = None) -> list[Slice]:
    """Every 2D frame of a DICOM file as a :class:`Slice` in HU (CT) or magnitude,
    decoded by :func:`dicomio.read_instance`, as the app decodes an upload.

    Args:
        path: the file.
        modality: keep only this modality; ``None`` keeps CT and MR.

    Raises:
        DataError: naming the file when it cannot be read or is not an image the
            app would accept.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's notes on odd but usable files
            instance = read_instance(path.read_bytes(), path.name)
    except OSError as exc:
        raise DataError(f"read DICOM: {path}: {exc.strerror or exc}") from None
    except DicomRejected as exc:
        raise DataError(f"read DICOM: {path}: {exc.reason}") from None
    if not _wanted(instance, modality):
        return []
    return _frame_slices(instance, path.name)


def real_slices(modality: str, split: str) -> list[Slice]:
    """The bundled real slices of ``modality`` in ``split`` (``train`` or ``held_out``).

    Files that are not installed are skipped (pydicom-data is optional).
    """
    if modality not in REAL_SLICES or split not in REAL_SLICES[modality]:
        raise DataError(
            f"real slices: modality must be CT or MR and split train or held_out, "
            f"got {modality!r}, {split!r}"
        )
    files = bundled_dicom_files()
    slices: list[Slice] = []
    for name in REAL_SLICES[modality][split]:
        if name in files:
            slices.extend(read_dicom_slices(files[name], modality))
    return slices


def _base_name(member: str) -> str:
    return member.rsplit("/", 1)[-1]


def _read_folder(root: Path) -> list[Instance]:
    """The usable images under ``root``; other files (a README, a licence) are
    skipped, and pydicom's notes on odd but usable files are not shown."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        instances, _ = read_folder(root)
    return instances


def folder_slices(path: Path | str, modality: str) -> list[Slice]:
    """Every slice of ``modality`` in the DICOM files under a folder (recursively).

    Files that are not DICOM images (a README, a thumbnail) are skipped.

    Raises:
        DataError: when the folder is missing or holds no slice of that modality.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"dicom folder: {root}: not a directory")
    instances = _read_folder(root)
    slices: list[Slice] = []
    for instance in instances:
        if _wanted(instance, modality):
            slices.extend(_frame_slices(instance, _base_name(instance.name)))
    if not slices:
        raise DataError(f"dicom folder: {root}: no readable {modality} slices")
    return slices


def read_series(path: Path | str, modality: str) -> SeriesVolume:
    """The series of ``modality`` in a folder, as the app assembles an upload
    (:func:`dicomio.read_series`); pydicom's notes on odd but usable files are not
    shown.

    Raises:
        DataError: when the folder is missing or has no readable slices of
            ``modality``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return dicomio.read_series(path, modality)
        except DicomRejected as exc:
            raise DataError(f"dicom series: {exc}") from exc


def series_slices(
    path: Path | str,
    modality: str,
    *,
    held_out: Sequence[int] | None = None,
    split: str = "train",
) -> list[Slice]:
    """The slices of one DICOM series in a folder, in order of position, split.

    Args:
        path: a folder holding one series (files of other series are skipped).
        modality: keep only this modality.
        held_out: ``[start, stop)`` slice indices (in position order) kept out of
            training; the two slices either side are dropped from the training
            split too, so no training slice neighbours a held-out one.
        split: ``"train"`` (everything but the held-out range and its margin) or
            ``"held_out"`` (the range only).

    Raises:
        DataError: when the folder has no readable slices of ``modality``.
    """
    if split not in ("train", "held_out"):
        raise DataError(f"dicom series: split must be train or held_out, got {split!r}")
    series = read_series(path, modality)
    pixel_mm = series.spacing_mm[1]
    keep = []
    for index, (frame, ref) in enumerate(
        zip(series.frames, series.slices, strict=True)
    ):
        if _in_split(index, held_out, split):
            source = f"dicom:{_base_name(ref.name)}#{ref.frame_index}"
            keep.append(_slice(frame, modality, pixel_mm, source))
    return keep


#: Slices either side of a held-out range that neither split uses (no training
#: slice is the held-out one's neighbour).
HELD_OUT_MARGIN = 2


def _in_split(index: int, held_out: Sequence[int] | None, split: str) -> bool:
    """Whether slice ``index`` belongs to ``split`` ("train" or "held_out"); with no
    ``held_out`` range every slice is a training slice."""
    if not held_out:
        return split == "train"
    start, stop = (int(v) for v in held_out)
    if split == "held_out":
        return start <= index < stop
    return not start - HELD_OUT_MARGIN <= index < stop + HELD_OUT_MARGIN


def series_neighbours(
    path: Path | str, modality: str, *, held_out: Sequence[int] | None = None
) -> list[Slice]:
    """Self-supervised training items from a thin contiguous real series: each
    training slice whose two neighbours are training slices too, with their mean
    as :attr:`Slice.target` and, as :attr:`Slice.target_mask`, the flat blocks
    where the three agree (:func:`training.neighbours.agreement_mask`). Slices in
    ``held_out`` (and two either side) are never used.
    """
    from training.neighbours import agreement_mask, neighbour_noise_sd

    every = series_slices(path, modality, held_out=None)
    volume = np.stack([s.image for s in every])
    items = []
    for i in range(1, len(every) - 1):
        if not all(_in_split(j, held_out, "train") for j in (i - 1, i, i + 1)):
            continue
        noise = neighbour_noise_sd(volume, i)
        if not np.isfinite(noise):
            continue
        target = 0.5 * (volume[i - 1] + volume[i + 1])
        mask = agreement_mask(volume[i], target)
        if mask.sum() < 64 * 64:
            continue
        item = every[i]
        items.append(
            Slice(
                item.image,
                item.pixel_mm,
                item.source + "+neighbours",
                True,
                noise_sd=float(noise),
                target=target.astype(np.float32),
                target_mask=mask,
            )
        )
    return items


def volume_slices(
    path: Path | str,
    pixel_mm: float,
    *,
    held_out: Sequence[int] | None = None,
    split: str = "train",
) -> list[Slice]:
    """The slices of a stored (z, y, x) volume (``.npy``, HU), as a full-dose series,
    split like :func:`series_slices`.

    Raises:
        DataError: naming the file when it cannot be read or is not a volume.
    """
    path = Path(path)
    try:
        volume = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"volume: {path}: {exc}") from None
    if volume.ndim != 3:
        raise DataError(f"volume: {path}: expected (z, y, x), got shape {volume.shape}")
    keep = []
    for index in range(volume.shape[0]):
        if _in_split(index, held_out, split):
            image = np.maximum(np.asarray(volume[index], np.float32), -1024.0)
            keep.append(
                Slice(image, float(pixel_mm), f"volume:{path.name}#{index}", True)
            )
    return keep


def phantom_slices(
    modality: str,
    count: int,
    *,
    seed: int,
    size: int,
    held_out: bool = False,
    kind: str = "phantom",
) -> list[Slice]:
    """``count`` phantom slices with seeds ``seed .. seed + count - 1``.

    ``kind`` is ``"phantom"`` (:mod:`dicomio.phantoms`) or ``"texture"`` (CT
    only: :func:`training.content.textured_slice`).

    Raises:
        DataError: when a training request (``held_out=False``) reaches into the
            held-out seed range, or an evaluation request does not.
    """
    if count < 0:
        raise DataError(f"phantom count must be >= 0, got {count}")
    if kind not in ("phantom", "texture") or (kind == "texture" and modality != "CT"):
        raise DataError(
            f"phantom kind must be phantom, or texture for CT, got {kind!r} for "
            f"{modality}"
        )
    last = seed + count - 1
    if not held_out and count and last >= HELD_OUT_PHANTOM_SEED:
        raise DataError(
            f"phantom seeds {seed}..{last} reach the held-out range "
            f">= {HELD_OUT_PHANTOM_SEED}; pick lower seeds for training"
        )
    if held_out and seed < HELD_OUT_PHANTOM_SEED:
        raise DataError(
            f"held-out phantom seeds must be >= {HELD_OUT_PHANTOM_SEED}, got {seed}"
        )
    slices = []
    for s in range(seed, seed + count):
        if kind == "texture":
            ph = textured_slice(size, seed=s)
        elif modality == "CT":
            ph = ct_phantom((size, size), seed=s)
        else:
            ph = mr_phantom((size, size), seed=s)
        slices.append(
            Slice(
                ph.image,
                ph.pixel_mm,
                f"{kind}:{s}",
                False,
                ph.lesion_mask,
                [les.contrast for les in ph.lesions],
            )
        )
    return slices


def _square(image: np.ndarray, fill: float) -> tuple[np.ndarray, tuple[slice, slice]]:
    ny, nx = image.shape
    n = max(ny, nx)
    if ny == nx:
        return image, (slice(0, ny), slice(0, nx))
    out = np.full((n, n), fill, dtype=np.float32)
    oy, ox = (n - ny) // 2, (n - nx) // 2
    out[oy : oy + ny, ox : ox + nx] = image
    return out, (slice(oy, oy + ny), slice(ox, ox + nx))


def make_noisy(
    clean: Slice,
    modality: str,
    level: float,
    *,
    rng: np.random.Generator,
    ct_noise: CTNoiseModel | None = None,
) -> np.ndarray:
    """One noisy realisation of ``clean`` at ``level``.

    Args:
        clean: the slice.
        modality: ``"CT"`` (``level`` is the dose fraction) or ``"MR"`` (``level`` is
            the Rician sigma as a fraction of the slice's 99.5th percentile).
        level: see ``modality``.
        rng: random generator.
        ct_noise: the CT noise model, default :class:`CTNoiseModel()`.
    """
    if modality == "CT":
        model = ct_noise or CTNoiseModel()
        square, region = _square(clean.image, -1000.0)
        noise = model.noise(
            square,
            level,
            pixel_mm=clean.pixel_mm,
            rng=rng,
            full_dose_input=clean.full_dose,
        )
        return (clean.image + noise[region]).astype(np.float32)
    scale = float(np.percentile(clean.image, 99.5)) or 1.0
    return add_rician_noise(clean.image, level * scale, rng=rng)


def make_pairs(
    slices: Sequence[Slice],
    modality: str,
    levels: Sequence[float],
    *,
    seed: int,
    realisations: int = 1,
    ct_noise: CTNoiseModel | None = None,
) -> list[Pair]:
    """Noisy realisations of each slice at each level, reproducible from ``seed``."""
    pairs = []
    for i, clean in enumerate(slices):
        for j, level in enumerate(levels):
            for k in range(realisations):
                rng = np.random.default_rng([seed, i, j, k])
                noisy = make_noisy(clean, modality, level, rng=rng, ct_noise=ct_noise)
                pairs.append(Pair(clean, noisy, float(level)))
    return pairs


class Batch(NamedTuple):
    """Training crops, each ``(B, 1, patch, patch)``.

    Attributes:
        noisy: normalised noisy input, float32.
        clean: normalised clean target, float32.
        weight: per-pixel loss weight, float32 (1 away from lesions).
        regions: int16 lesion regions for the contrast loss: ``+k`` on the core
            and ``-k`` on the ring of lesion ``k`` (``training.metrics.
            lesion_regions``), 0 elsewhere and for images without lesions.
    """

    noisy: np.ndarray
    clean: np.ndarray
    weight: np.ndarray
    regions: np.ndarray


class PairPool:
    """A cache of 2D (noisy, clean) pairs from which training batches are cropped.

    Args:
        pairs: the pairs; the clean image is only used in supervised mode.
        input_spec: how to normalise each image (the noisy image sets the MR scale,
            as at inference).
        lesion_weight: loss weight of pixels within 2 pixels of a known lesion
            (phantoms), default 1 (no weighting). Weights above 1 counter the
            mean-squared-error optimum's pull towards flattening small
            low-contrast lesions.
        lesion_crops: share of crops centred on a random known lesion, default 0
            (crops anywhere in the body); lesions are small, so without this most
            batches hold none for the contrast loss to see.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        input_spec: Mapping[str, Any],
        *,
        lesion_weight: float = 1.0,
        lesion_crops: float = 0.0,
    ) -> None:
        if not pairs:
            raise DataError("training data: no pairs (check the data sources)")
        if lesion_weight < 1:
            raise DataError(f"lesion_weight must be >= 1, got {lesion_weight}")
        if not 0 <= lesion_crops <= 1:
            raise DataError(f"lesion_crops must be in [0, 1], got {lesion_crops}")
        self.lesion_crops = lesion_crops
        self.noisy: list[np.ndarray] = []
        self.clean: list[np.ndarray] = []
        self.weight: list[np.ndarray | None] = []
        self.regions: list[np.ndarray | None] = []
        self.lesion_centres: list[np.ndarray] = []
        regions_of: dict[int, tuple[np.ndarray | None, np.ndarray]] = {}
        for pair in pairs:
            # The worker's own normalisation, each slice a series of one.
            norm = normalisation_for(pair.noisy[None], input_spec)
            offset, scale = norm.offset, norm.scale
            self.noisy.append(((pair.noisy - offset) / scale).astype(np.float32))
            self.clean.append(((pair.clean.image - offset) / scale).astype(np.float32))
            mask = pair.clean.lesion_mask
            if lesion_weight > 1 and mask is not None and mask.any():
                near = ndimage.binary_dilation(mask > 0, iterations=2)
                self.weight.append(
                    np.where(near, lesion_weight, 1.0).astype(np.float32)
                )
            else:
                self.weight.append(None)
            # Realisations of one slice share its lesions: compute them once.
            key = id(pair.clean)
            if key not in regions_of:
                regions_of[key] = _region_map(mask)
            regions, centres = regions_of[key]
            self.regions.append(regions)
            self.lesion_centres.append(centres)
        self.sources = sorted({pair.clean.source for pair in pairs})

    def __len__(self) -> int:
        return len(self.noisy)

    def batch(self, rng: np.random.Generator, batch_size: int, patch: int) -> Batch:
        """Random crops with random flips and 90-degree rotations."""
        shape = (batch_size, 1, patch, patch)
        out = Batch(
            np.empty(shape, np.float32),
            np.empty(shape, np.float32),
            np.ones(shape, np.float32),
            np.zeros(shape, np.int16),
        )
        for b in range(batch_size):
            i = int(rng.integers(len(self.noisy)))
            sources = [self.noisy[i], self.clean[i], self.weight[i], self.regions[i]]
            ny, nx = self.noisy[i].shape
            if ny < patch or nx < patch:
                pad = ((0, max(0, patch - ny)), (0, max(0, patch - nx)))
                sources = [
                    None if a is None else np.pad(a, pad, mode="reflect")
                    for a in sources
                ]
            clean = sources[1]
            assert clean is not None
            y, x = self._corner(rng, i, clean, patch)
            k = int(rng.integers(4))
            flip = bool(rng.integers(2))
            for source, target in zip(sources, out, strict=True):
                if source is None:
                    continue
                arr = np.rot90(source[y : y + patch, x : x + patch], k)
                target[b, 0] = arr[:, ::-1] if flip else arr
        return out

    def _corner(
        self, rng: np.random.Generator, i: int, clean: np.ndarray, patch: int
    ) -> tuple[int, int]:
        return crop_corner(
            rng,
            clean.shape,
            patch,
            self.lesion_centres[i],
            self.lesion_crops,
            lambda y, x: np.ptp(clean[y : y + patch, x : x + patch]) > 0.005,
        )


def crop_corner(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    patch: int,
    centres: np.ndarray,
    lesion_crops: float,
    in_body: Callable[[int, int], bool],
) -> tuple[int, int]:
    """Top-left corner of a ``patch``-pixel training crop of a (y, x) image.

    A share ``lesion_crops`` of crops holds a lesion of ``centres`` anywhere in the
    patch (not always the middle: the network must not learn that lesions sit at
    the centre); the others are placed at random, retried a few times while
    ``in_body(y, x)`` says the patch is mostly air.
    """
    ny, nx = shape
    if lesion_crops and len(centres) and rng.random() < lesion_crops:
        cy, cx = centres[int(rng.integers(len(centres)))]
        y = cy - int(rng.integers(patch // 8, patch - patch // 8))
        x = cx - int(rng.integers(patch // 8, patch - patch // 8))
        return min(max(y, 0), ny - patch), min(max(x, 0), nx - patch)
    for _ in range(4):
        y = int(rng.integers(ny - patch + 1))
        x = int(rng.integers(nx - patch + 1))
        if in_body(y, x):
            break
    return y, x


def _region_map(
    lesion_mask: np.ndarray | None,
) -> tuple[np.ndarray | None, np.ndarray]:
    """The signed region map of :class:`Batch` and the lesions' centre pixels."""
    if lesion_mask is None or not lesion_mask.any():
        return None, np.zeros((0, 2), dtype=int)
    regions = np.zeros(lesion_mask.shape, np.int16)
    centres = []
    for label, (core, ring) in enumerate(lesion_regions(lesion_mask), start=1):
        regions[ring] = -label
        regions[core] = label
        centres.append(np.argwhere(core).mean(axis=0).round().astype(int))
    return regions, np.array(centres, dtype=int).reshape(-1, 2)


def cache_key(obj: Any) -> str:
    """A short stable hash of a JSON-serialisable object (for cache file names)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def body_mask(image: np.ndarray, modality: str) -> np.ndarray:
    """Pixels inside the patient: above -500 HU (CT) or 5% of the 99th percentile
    (MR), holes filled."""
    if modality == "CT":
        mask = image > -500.0
    else:
        mask = image > 0.05 * float(np.percentile(image, 99))
    return ndimage.binary_fill_holes(mask)
