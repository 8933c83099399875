"""WADO-RS: stored instances as uploaded, their metadata, and uncompressed frames."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable, Iterator

import numpy as np
import pydicom
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID

from dicomio.sandbox import DecodeFailed, decode_isolated

from ..errors import DicomwebError
from ..models import Instance
from ..storage import media_path
from . import dicom_json

__all__ = ["MAX_FRAMES_BYTES", "frames", "metadata", "retrieve"]

#: Largest uncompressed frames response (bytes).
MAX_FRAMES_BYTES = 256 * 1024 * 1024

_CHUNK = 1024 * 1024
_NATIVE_LITTLE_ENDIAN = {
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.1.99",
}
_EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"


def _accepts(request: HttpRequest, media_type: str) -> str | None:
    """The transfer syntax asked for with ``media_type``: ``"*"``, a UID or None."""
    accept = request.headers.get("Accept", "")
    if not accept or "*/*" in accept:
        return None
    wanted = None
    for option in accept.split(","):
        params = [p.strip() for p in option.split(";")]
        if params[0] not in ("multipart/related", media_type, "multipart/*"):
            continue
        values = dict(p.partition("=")[::2] for p in params[1:])
        kind = values.get("type", media_type).strip('"')
        if kind not in (media_type, "*/*"):
            continue
        syntax = values.get("transfer-syntax", "").strip('"')
        if not syntax or syntax == "*":
            return "*" if syntax == "*" else None
        wanted = syntax
    if wanted is None:
        raise DicomwebError(
            406,
            f"WADO-RS: this resource is served as multipart/related; type={media_type}",
        )
    return wanted


def _multipart(parts: Iterator[tuple[str, Iterable[bytes]]], media_type: str):
    boundary = uuid.uuid4().hex

    def body() -> Iterator[bytes]:
        for content_type, chunks in parts:
            yield f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode()
            yield from chunks
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    return StreamingHttpResponse(
        body(),
        content_type=f'multipart/related; type="{media_type}"; boundary={boundary}',
    )


def _file_chunks(name: str) -> Iterator[bytes]:
    with open(media_path(name), "rb") as handle:
        while chunk := handle.read(_CHUNK):
            yield chunk


def _stored_syntax(instance: Instance) -> str:
    meta = read_file_meta_info(media_path(instance.file))
    return str(meta.get("TransferSyntaxUID", ""))


def retrieve(request: HttpRequest, instances: list[Instance]) -> StreamingHttpResponse:
    """The instances byte-identical as stored, in their stored transfer syntaxes."""
    wanted = _accepts(request, "application/dicom")
    syntaxes = [_stored_syntax(i) for i in instances]
    if wanted not in (None, "*") and any(s != wanted for s in syntaxes):
        raise DicomwebError(
            406,
            "WADO-RS: instances are served as stored "
            f"({', '.join(sorted(set(syntaxes)))})"
            f"; transcoding to {wanted} is not supported, ask for transfer-syntax=*",
        )
    parts = (
        (f"application/dicom; transfer-syntax={syntax}", _file_chunks(i.file))
        for i, syntax in zip(instances, syntaxes, strict=True)
    )
    return _multipart(parts, "application/dicom")


def metadata(request: HttpRequest, instances: list[Instance]) -> HttpResponse:
    """The instances' headers as DICOM JSON, bulk data as URIs."""
    base = dicom_json.base_url(request)
    results = []
    for instance in instances:
        with open(media_path(instance.file), "rb") as handle:
            ds = pydicom.dcmread(handle, stop_before_pixels=True)
        series = instance.series
        url = dicom_json.instance_url(
            base,
            series.study.study_instance_uid,
            series.series_instance_uid,
            instance.sop_instance_uid,
        )
        results.append(dicom_json.instance_metadata(ds, url))
    return dicom_json.response(results)


def _frame_numbers(text: str, count: int) -> list[int]:
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError as exc:
        raise DicomwebError(400, f"WADO-RS: bad frame list {text!r}") from exc
    bad = [n for n in numbers if not 1 <= n <= count]
    if bad:
        raise DicomwebError(
            404, f"WADO-RS: frame {bad[0]} does not exist (instance has {count})"
        )
    if len(numbers) > count:
        # One frame asked for a thousand times was a 524 MB answer: no more frames
        # than the instance has.
        raise DicomwebError(
            400,
            f"WADO-RS: {len(numbers)} frames asked for; at most {count} per request "
            f"(the instance has {count})",
        )
    return numbers


def frames(
    request: HttpRequest, instance: Instance, frame_list: str
) -> StreamingHttpResponse:
    """Frames ``frame_list`` (``"1,3"``) of the instance, uncompressed."""
    wanted = _accepts(request, "application/octet-stream")
    if wanted not in (None, "*", _EXPLICIT_LITTLE):
        raise DicomwebError(
            406, f"WADO-RS: frames are served uncompressed ({_EXPLICIT_LITTLE})"
        )
    data = media_path(instance.file).read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    count = int(ds.get("NumberOfFrames") or 1)
    numbers = _frame_numbers(frame_list, count)
    frame_bytes = (
        int(ds.get("Rows") or 0)
        * int(ds.get("Columns") or 0)
        * int(ds.get("SamplesPerPixel") or 1)
        * max(1, int(ds.get("BitsAllocated") or 16) // 8)
    )
    if len(numbers) * frame_bytes > MAX_FRAMES_BYTES:
        raise DicomwebError(
            413,
            f"WADO-RS: {len(numbers)} frames of {frame_bytes} bytes exceed "
            f"{MAX_FRAMES_BYTES // 2**20} MB per response; ask in smaller sets",
        )
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if syntax in _NATIVE_LITTLE_ENDIAN and "PixelData" in ds:
        raw = bytes(ds.PixelData)
        size = len(raw) // count

        def frame(n: int) -> bytes:
            return raw[(n - 1) * size : n * size]
    else:
        # Compressed: third-party decoders run in the sandboxed child, never here.
        try:
            decoded = (
                decode_isolated(data) if UID(syntax).is_encapsulated else ds.pixel_array
            )
        except DecodeFailed as exc:
            raise DicomwebError(500, f"WADO-RS: cannot decode frames: {exc}") from exc
        pixels = decoded.reshape(count, int(ds.Rows), int(ds.Columns), -1)

        def frame(n: int) -> bytes:
            values = pixels[n - 1]
            return np.ascontiguousarray(
                values, dtype=values.dtype.newbyteorder("<")
            ).tobytes()

    content_type = f"application/octet-stream; transfer-syntax={_EXPLICIT_LITTLE}"
    return _multipart(
        ((content_type, [frame(n)]) for n in numbers), "application/octet-stream"
    )
