"""CT-like training slices beyond ellipses: textures, vessel trees, trabecular bone.

The anthropomorphic phantoms (:mod:`dicomio.phantoms`) are smooth ellipses; a
denoiser trained on them alone learns that anything finer than an organ is noise
and blurs real anatomy into the residual. :func:`textured_slice` builds clean
slices with what real scans have and phantoms lack: organ texture taken from
scikit-image's natural and texture photographs (brick, grass, gravel, moon,
microscopy...) mapped to HU ranges from a few HU (liver, brain) to hundreds (bone,
contrast), branching vessel trees of every calibre, trabecular bone inside a
cortical shell, lung with vessels, partial-volume edges, and low-contrast lesions
with known contrast. Everything is drawn from the seed: the same seed gives the
same slice.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from dicomio.phantoms import Lesion, Phantom

__all__ = ["TEXTURE_SOURCES", "textured_slice"]

#: scikit-image data sets (shipped with the package, no download) used as texture.
TEXTURE_SOURCES: tuple[str, ...] = (
    "brick",
    "grass",
    "gravel",
    "moon",
    "camera",
    "cell",
    "retina",
    "immunohistochemistry",
    "hubble_deep_field",
    "coffee",
    "astronaut",
    "coins",
)


@functools.cache
def _texture(name: str) -> np.ndarray:
    """A texture as float32 with zero mean and unit SD (colour images as grey)."""
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)(), dtype=np.float32)
    if image.ndim == 3:
        image = image[..., :3].mean(axis=2)
    image -= image.mean()
    return image / max(float(image.std()), 1e-6)


def _texture_patch(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A random crop of a random texture, zoomed and turned, filling ``shape``."""
    source = _texture(TEXTURE_SOURCES[int(rng.integers(len(TEXTURE_SOURCES)))])
    zoom = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    need = [int(np.ceil(n / zoom)) + 2 for n in shape]
    reps = [max(1, -(-need[i] // source.shape[i])) for i in range(2)]
    if reps[0] > 1 or reps[1] > 1:
        source = np.tile(source, reps)
    y = int(rng.integers(source.shape[0] - need[0] + 1))
    x = int(rng.integers(source.shape[1] - need[1] + 1))
    crop = source[y : y + need[0], x : x + need[1]]
    crop = ndimage.zoom(crop, zoom, order=1)[: shape[0], : shape[1]]
    crop = np.rot90(crop, int(rng.integers(4)))
    if crop.shape != shape:
        crop = np.resize(crop, shape)
    crop = crop - crop.mean()
    return crop / max(float(crop.std()), 1e-6)


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, int], scale_px: float
) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(size=shape), scale_px)
    return field / max(float(field.std()), 1e-12)


def _vessel_tree(
    rng: np.random.Generator, shape: tuple[int, int], inside: np.ndarray
) -> np.ndarray:
    """A branching tree of tubes as a partial-volume map in [0, 1]."""
    canvas = np.zeros(shape, np.float32)
    ys, xs = np.nonzero(inside)
    if ys.size == 0:
        return canvas
    stack = []
    for _ in range(int(rng.integers(1, 4))):
        k = int(rng.integers(ys.size))
        stack.append(
            (float(ys[k]), float(xs[k]), rng.uniform(0, 2 * np.pi), rng.uniform(1.5, 5))
        )
    segments = 0
    while stack and segments < 120:
        y, x, angle, radius = stack.pop()
        length = rng.uniform(15, 60) * radius / 3
        steps = max(2, int(length))
        for _ in range(steps):
            angle += rng.normal(0, 0.12)
            y += np.sin(angle)
            x += np.cos(angle)
            iy, ix = int(round(y)), int(round(x))
            if not (0 <= iy < shape[0] and 0 <= ix < shape[1]) or not inside[iy, ix]:
                break
            r = int(np.ceil(radius))
            y0, y1 = max(iy - r - 1, 0), min(iy + r + 2, shape[0])
            x0, x1 = max(ix - r - 1, 0), min(ix + r + 2, shape[1])
            gy, gx = np.mgrid[y0:y1, x0:x1]
            distance = np.sqrt((gy - y) ** 2 + (gx - x) ** 2)
            cover = np.clip(radius + 0.5 - distance, 0.0, 1.0)
            np.maximum(canvas[y0:y1, x0:x1], cover, out=canvas[y0:y1, x0:x1])
        segments += 1
        if radius > 0.6:
            for turn in (-1, 1):
                if rng.random() < 0.8:
                    stack.append(
                        (y, x, angle + turn * rng.uniform(0.3, 1.0), radius * 0.72)
                    )
    return canvas


def _trabecular(
    rng: np.random.Generator, shape: tuple[int, int], pixel_mm: float
) -> np.ndarray:
    """A trabecular network (plates and rods about 0.2-0.4 mm, spaced 0.5-1.5 mm)
    as a partial-volume map in [0, 1]."""
    spacing_px = rng.uniform(0.5, 1.5) / pixel_mm
    band = ndimage.gaussian_filter(rng.normal(size=shape), spacing_px / 3)
    band -= ndimage.gaussian_filter(band, spacing_px)
    band /= max(float(band.std()), 1e-12)
    threshold = rng.uniform(0.3, 0.9)
    return np.clip((np.abs(band) < threshold * 0.5).astype(np.float32), 0, 1)


def _ellipse(
    shape: tuple[int, int],
    centre: tuple[float, float],
    axes: tuple[float, float],
    angle: float,
) -> np.ndarray:
    """Signed distance-like value: < 1 inside the ellipse."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    dy, dx = yy - centre[0], xx - centre[1]
    c, s = np.cos(angle), np.sin(angle)
    u = (dx * c + dy * s) / axes[1]
    v = (-dx * s + dy * c) / axes[0]
    return np.sqrt(u * u + v * v)


def textured_slice(size: int = 512, *, seed: int) -> Phantom:
    """One clean CT-like slice (HU) with realistic content and known lesions.

    Args:
        size: edge of the square slice in pixels, default 512.
        seed: everything is drawn from it.

    Returns:
        A :class:`dicomio.phantoms.Phantom` (``labels`` and ``tissues`` give the
        body only: 0 air, 1 body).
    """
    rng = np.random.default_rng([seed, 4242])
    shape = (size, size)
    pixel_mm = float(rng.uniform(0.35, 0.9))
    centre = (
        size / 2 + rng.normal(0, size * 0.03),
        size / 2 + rng.normal(0, size * 0.03),
    )
    a = size * rng.uniform(0.3, 0.46)
    axes = (a * rng.uniform(0.6, 1.0), a)
    body_r = _ellipse(shape, centre, axes, rng.uniform(-0.3, 0.3))
    body = body_r < 1.0
    image = np.full(shape, -1000.0, np.float32)

    # Shell: fat and muscle, or a skull.
    skull = rng.random() < 0.3
    shell_mm = rng.uniform(2, 15)
    shell = body & (body_r > 1.0 - shell_mm / pixel_mm / a)
    # Soft tissue is never perfectly flat: a faint texture everywhere.
    image[body] = rng.uniform(20, 60)
    faint = float(np.exp(rng.uniform(np.log(0.5), np.log(8.0))))
    image[body] += faint * _texture_patch(rng, shape)[body]
    if skull:
        image[shell] = rng.uniform(900, 1600)
    else:
        image[shell] = rng.uniform(-120, -70)
    inner = body & ~shell

    # Organs: smooth blobs, each filled with a texture at its own level and contrast.
    labels = np.zeros(shape, np.int32)
    for k in range(int(rng.integers(2, 7))):
        blob = _smooth_field(rng, shape, size * rng.uniform(0.04, 0.12)) > rng.uniform(
            0.3, 1.5
        )
        region = blob & inner
        if not region.any():
            continue
        labels[region] = k + 1
        level = rng.uniform(-60, 160) if not skull else rng.uniform(15, 50)
        contrast = float(np.exp(rng.uniform(np.log(1.0), np.log(40.0))))
        texture = _texture_patch(rng, shape)
        image[region] = level + contrast * texture[region]

    # Lung with vessels, in some slices.
    if not skull and rng.random() < 0.3:
        lung = (_smooth_field(rng, shape, size * 0.1) > 0.6) & inner
        image[lung] = -850 + 30 * _texture_patch(rng, shape)[lung]
        vessels = _vessel_tree(rng, shape, lung)
        image += vessels * (rng.uniform(-50, 80) - image) * (vessels > 0)

    # Vessel tree in soft tissue (contrast-enhanced or not).
    vessels = _vessel_tree(rng, shape, inner & (image > -200))
    enhancement = rng.uniform(20, 350)
    image += vessels * enhancement

    # Bone with a cortical shell and trabecular interior.
    if not skull and rng.random() < 0.7:
        bone_r = _ellipse(
            shape,
            (
                centre[0] + rng.uniform(-0.3, 0.3) * axes[0],
                centre[1] + rng.uniform(-0.3, 0.3) * axes[1],
            ),
            (rng.uniform(12, 30) / pixel_mm, rng.uniform(12, 30) / pixel_mm),
            rng.uniform(0, np.pi),
        )
        bone = (bone_r < 1.0) & inner
        cortex = bone & (bone_r > 1.0 - rng.uniform(0.8, 3.0) / pixel_mm / 20)
        trabeculae = _trabecular(rng, shape, pixel_mm)
        marrow = rng.uniform(20, 150)
        image[bone] = marrow + trabeculae[bone] * rng.uniform(150, 600)
        image[cortex] = rng.uniform(700, 1500)

    # Low-contrast lesions with known contrast (for the lesion losses).
    lesion_mask = np.zeros(shape, np.int32)
    lesions: list[Lesion] = []
    soft = inner & (image > -150) & (image < 250)
    for _ in range(int(rng.integers(2, 6))):
        ys, xs = np.nonzero(soft & (lesion_mask == 0))
        if ys.size == 0:
            break
        k = int(rng.integers(ys.size))
        radius = rng.uniform(2, 10) / pixel_mm
        contrast = float(rng.choice([-1, 1]) * rng.uniform(4, 20))
        disc = _ellipse(shape, (ys[k], xs[k]), (radius, radius), 0.0) < 1.0
        disc &= soft
        if disc.sum() < 12:
            continue
        lesion_mask[disc] = len(lesions) + 1
        image[disc] += contrast
        lesions.append(
            Lesion((float(ys[k]), float(xs[k])), float(radius), contrast, "tissue")
        )

    # System blur: partial-volume edges, as a reconstruction leaves them.
    image = ndimage.gaussian_filter(image, rng.uniform(0.4, 0.9)).astype(np.float32)
    image[~ndimage.binary_dilation(body, iterations=3)] = -1000.0
    return Phantom(
        image=image,
        lesion_mask=lesion_mask.astype(np.int16),
        lesions=lesions,
        labels=body.astype(np.uint8),
        tissues=["air", "body"],
        modality="CT",
        pixel_mm=pixel_mm,
        seed=seed,
    )
