"""STOW-RS: multipart/related DICOM instances, stored by the ingest service."""

from __future__ import annotations

import logging
import mmap
import shutil
import tempfile
from pathlib import Path

import pydicom
from django.http import HttpRequest, HttpResponse

from .. import selectors
from ..errors import DicomwebError
from ..services.ingest import upload_ingest
from . import dicom_json

__all__ = ["store"]

logger = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
# FailureReason (0008,1197) values, PS3.4 Annex B.2.3.
_PROCESSING_FAILURE = 0x0110
_CANNOT_UNDERSTAND = 0xC000
_STUDY_MISMATCH = 0xA900


def _boundary(request: HttpRequest) -> bytes:
    content_type = request.headers.get("Content-Type", "")
    media, *params = [p.strip() for p in content_type.split(";")]
    values = {k.lower(): v.strip('"') for k, _, v in (p.partition("=") for p in params)}
    if media.lower() != "multipart/related" or values.get(
        "type", "application/dicom"
    ) != ("application/dicom"):
        raise DicomwebError(
            415,
            'STOW-RS: the body must be multipart/related; type="application/dicom"',
        )
    if not values.get("boundary"):
        raise DicomwebError(400, "STOW-RS: Content-Type has no boundary")
    return values["boundary"].encode()


def _split_parts(body: Path, boundary: bytes, workdir: Path) -> list[Path]:
    """Write each part's content to its own file; the body is never held in memory."""
    delimiter = b"--" + boundary
    paths: list[Path] = []
    if body.stat().st_size == 0:
        return paths
    with (
        open(body, "rb") as handle,
        mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data,
    ):
        position = data.find(delimiter)
        while position >= 0:
            start = position + len(delimiter)
            if data[start : start + 2] == b"--":
                break
            headers_end = data.find(b"\r\n\r\n", start)
            if headers_end < 0:
                break
            content_start = headers_end + 4
            following = data.find(b"\r\n" + delimiter, content_start)
            if following < 0:
                raise DicomwebError(400, "STOW-RS: body ends inside a part")
            path = workdir / f"part-{len(paths) + 1:05d}.dcm"
            with open(path, "wb") as out:
                out.write(data[content_start:following])
            paths.append(path)
            position = following + 2
    return paths


def store(request: HttpRequest, study: str | None = None) -> HttpResponse:
    """Store the request's instances (into ``study`` only, when given): 200 when
    all were stored, 202 when some were, 409 when none; a ``Warning`` says why."""
    boundary = _boundary(request)
    base = dicom_json.base_url(request)
    workdir = Path(tempfile.mkdtemp(prefix="stow-"))
    try:
        body = workdir / "body"
        with open(body, "wb") as out:
            while chunk := request.read(_CHUNK):
                out.write(chunk)
        parts = _split_parts(body, boundary, workdir)
        body.unlink()
        if not parts:
            raise DicomwebError(400, "STOW-RS: the request has no parts")
        headers: dict[str, pydicom.Dataset] = {}
        failed, reasons = [], []
        for path in parts:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                ds.SOPInstanceUID  # noqa: B018 - a part without one is refused
            except Exception as exc:
                failed.append(dicom_json.failed_sop("", "", _CANNOT_UNDERSTAND))
                reasons.append(
                    f"{path.name}: not a DICOM instance ({type(exc).__name__})"
                )
                path.unlink()
                continue
            if study and str(ds.get("StudyInstanceUID", "")) != study:
                failed.append(
                    dicom_json.failed_sop(
                        ds.get("SOPClassUID", ""), ds.SOPInstanceUID, _STUDY_MISMATCH
                    )
                )
                reasons.append(f"{path.name}: StudyInstanceUID is not {study}")
                path.unlink()
                continue
            headers[path.name] = ds
        report = upload_ingest(
            sources=[(workdir / name, name) for name in headers], owner=request.user
        )
        rejected = {r["name"]: r["reason"] for r in report.rejections}
        stored_uids = selectors.stored_sop_instance_uids(
            request.user, [str(ds.SOPInstanceUID) for ds in headers.values()]
        )
        referenced = []
        for name, ds in headers.items():
            uid = str(ds.SOPInstanceUID)
            if name in rejected or uid not in stored_uids:
                failed.append(
                    dicom_json.failed_sop(
                        ds.get("SOPClassUID", ""), uid, _PROCESSING_FAILURE
                    )
                )
                reasons.append(f"{name}: {rejected.get(name, 'not stored')}")
                continue
            referenced.append(
                dicom_json.referenced_sop(
                    str(ds.get("SOPClassUID", "")),
                    uid,
                    dicom_json.instance_url(
                        base,
                        str(ds.StudyInstanceUID),
                        str(ds.SeriesInstanceUID),
                        uid,
                    ),
                )
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = dicom_json.store_result(
        retrieve_url=dicom_json.study_url(base, study) if study else None,
        referenced=referenced,
        failed=failed,
    )
    status = 200 if not failed else (202 if referenced else 409)
    response = dicom_json.response(result, status=status)
    if reasons:
        logger.info("STOW-RS refused %d part(s): %s", len(reasons), "; ".join(reasons))
        text = "; ".join(reasons)[:500].replace('"', "'")
        response["Warning"] = f'299 dicomweb "{text}"'
    return response
