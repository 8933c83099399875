"""Binary volume endpoints for the viewer: access-checked int16 slabs with scale/offset.

The browser receives each voxel once, as little-endian int16 ``q``, and recovers the
original units (HU for CT) as ``offset + scale * q``. The original and the
reconstruction of a series share one quantisation, so the client can blend them
(``alpha * denoised + (1 - alpha) * original``) without leaving integer space. Clients
ask for slabs of slices (``z0``..``z1``) so the first image shows before the rest
arrives.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
from django.http import HttpRequest, HttpResponse
from ninja import Router
from ninja.errors import HttpError

from dicomio.orientation import display_geometry

from . import selectors
from .models import DenoiseJob, Series
from .schemas import ErrorOut, binary_response
from .storage import load_array, media_path

__all__ = ["router", "Quantisation", "quantise"]

router = Router(tags=["viewer"])

_INT16_SPAN = 65534.0
#: Head-room beyond the original's range, so a reconstruction that overshoots a little
#: still fits the shared quantisation.
_MARGIN = 0.1


@dataclass(frozen=True)
class Quantisation:
    """Maps stored values to int16: ``value = offset + scale * q``."""

    scale: float
    offset: float


@functools.lru_cache(maxsize=64)
def _value_range(path: str, mtime_ns: int) -> tuple[float, float]:
    """Min and max of a stored array; stored files never change, so cache by mtime."""
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    return float(np.min(array)), float(np.max(array))


def value_range(name: str) -> tuple[float, float]:
    path = media_path(name)
    return _value_range(str(path), path.stat().st_mtime_ns)


def original_quantisation(name: str) -> Quantisation:
    """Shared quantisation of a series' volume and its reconstructions."""
    lo, hi = value_range(name)
    pad = _MARGIN * (hi - lo) + 1.0
    return Quantisation(scale=(hi - lo + 2 * pad) / _INT16_SPAN, offset=(hi + lo) / 2)


def residual_quantisation(name: str) -> Quantisation:
    """Symmetric quantisation around zero for a signed residual."""
    lo, hi = value_range(name)
    extent = max(abs(lo), abs(hi), 1e-3)
    return Quantisation(scale=extent / 32767.0, offset=0.0)


def quantise(array: np.ndarray, quant: Quantisation) -> np.ndarray:
    """Float array to little-endian int16 under ``quant`` (clipped to int16)."""
    scaled = (
        np.asarray(array, dtype=np.float32) - np.float32(quant.offset)
    ) / np.float32(quant.scale)
    return np.clip(np.rint(scaled), -32767, 32767).astype("<i2")


def _slab_response(
    request: HttpRequest,
    name: str,
    quant: Quantisation,
    z0: int,
    z1: int | None,
    etag: str,
) -> HttpResponse:
    volume = load_array(name)
    if volume.ndim != 3:
        raise HttpError(500, f"viewer: stored volume {name} is not 3-D")
    depth = volume.shape[0]
    stop = depth if z1 is None else z1
    if not 0 <= z0 < stop <= depth:
        raise HttpError(400, f"viewer: slice range {z0}..{stop} outside 0..{depth}")
    tag = f'"{etag[:32]}-{z0}-{stop}"'
    if request.headers.get("If-None-Match") == tag:
        return HttpResponse(status=304)
    data = quantise(volume[z0:stop], quant).tobytes()
    response = HttpResponse(data, content_type="application/octet-stream")
    response["X-Volume-Shape"] = ",".join(str(s) for s in volume.shape)
    response["X-Volume-Scale"] = repr(quant.scale)
    response["X-Volume-Offset"] = repr(quant.offset)
    response["X-Slice-Range"] = f"{z0},{stop}"
    response["ETag"] = tag
    # A series volume is rebuilt when slices are added: revalidate (ETag, 304).
    response["Cache-Control"] = "private, no-cache"
    return response


_SLAB = binary_response(
    "application/octet-stream",
    "Little-endian int16 slices; X-Volume-Shape, -Scale, -Offset and X-Slice-Range "
    "say how to read them",
)


@router.get(
    "/series/{series_id}/volume",
    response={200: None, 400: ErrorOut, 404: ErrorOut},
    openapi_extra=_SLAB,
)
def series_volume(request, series_id: int, z0: int = 0, z1: int | None = None):
    """The series' volume as int16 slices ``z0``..``z1`` (default: all)."""
    series = selectors.series_for(request.user, series_id)
    quant = original_quantisation(series.volume_file)
    return _slab_response(
        request, series.volume_file, quant, z0, z1, series.volume_sha256
    )


@router.get(
    "/jobs/{job_id}/volume/{kind}",
    response={200: None, 400: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    openapi_extra=_SLAB,
)
def job_volume(
    request,
    job_id: int,
    kind: Literal["reconstruction", "residual"],
    z0: int = 0,
    z1: int | None = None,
):
    """A succeeded job's reconstruction (series quantisation) or residual, as int16."""
    job = selectors.job_for(request.user, job_id)
    if job.status != DenoiseJob.Status.SUCCEEDED:
        raise HttpError(400, f"viewer: job {job.pk} is {job.status}; no outputs yet")
    if not job.is_current:
        raise HttpError(
            409,
            f"viewer: series {job.series_id} gained instances after job {job.pk}; "
            "denoise it again to compare",
        )
    if kind == "reconstruction":
        name, sha = job.reconstruction_file, job.reconstruction_sha256
        quant = original_quantisation(job.series.volume_file)
    else:
        name, sha = job.residual_file, job.residual_sha256
        quant = residual_quantisation(name)
    return _slab_response(request, name, quant, z0, z1, sha)


#: Thumbnail edge limits in pixels.
THUMBNAIL_SIZES = (32, 256)


def thumbnail_png(series: Series, size: int) -> bytes:
    """The middle stored slice of ``series`` as a greyscale PNG at most ``size``
    pixels across, the right way up (as the viewer shows it) and in the scan's own
    first window (else W400/L40 on CT, the 1st-99th percentile otherwise)."""
    import io

    from PIL import Image

    volume = load_array(series.volume_file)
    image = np.asarray(volume[volume.shape[0] // 2], dtype=np.float32)
    plane = display_geometry(series.orientation, series.shape, series.warnings)[
        "planes"
    ]["axial"]
    spacing = list(series.spacing_mm)
    if plane["col_axis"] == 1:  # shown transposed
        image, spacing = image.T, [spacing[0], spacing[2], spacing[1]]
    if plane["row_flip"]:
        image = image[::-1]
    if plane["col_flip"]:
        image = image[:, ::-1]
    if series.windows:
        center, width = series.windows[0]["center"], series.windows[0]["width"]
        low, high = center - width / 2, center + width / 2
    elif series.modality == "CT":
        low, high = 40 - 200, 40 + 200
    else:
        low, high = (float(v) for v in np.percentile(image, [1, 99]))
    scaled = np.clip((image - low) / max(high - low, 1e-6), 0, 1) * 255
    picture = Image.fromarray(np.ascontiguousarray(scaled.astype(np.uint8)), "L")
    # Square pixels on screen: rows are stretched by their spacing.
    height_mm, width_mm = image.shape[0] * spacing[1], image.shape[1] * spacing[2]
    fit = size / max(height_mm, width_mm)
    target = (max(1, round(width_mm * fit)), max(1, round(height_mm * fit)))
    picture = picture.resize(target, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    picture.save(out, format="PNG", optimize=True)
    return out.getvalue()


@router.get(
    "/series/{series_id}/thumbnail",
    response={200: None, 400: ErrorOut, 404: ErrorOut},
    openapi_extra=binary_response("image/png", "PNG of the middle slice"),
)
def series_thumbnail(request, series_id: int, size: int = 96):
    """A PNG thumbnail of the series' middle slice (study list, viewer)."""
    series = selectors.series_for(request.user, series_id)
    low, high = THUMBNAIL_SIZES
    if not low <= size <= high:
        raise HttpError(400, f"thumbnail: size must be {low} to {high} pixels")
    tag = f'"{series.volume_sha256}-{size}"'
    if request.headers.get("If-None-Match") == tag:
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(thumbnail_png(series, size), content_type="image/png")
    response["ETag"] = tag
    response["Cache-Control"] = "private, no-cache"
    return response
