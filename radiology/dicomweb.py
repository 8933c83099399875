"""DICOMweb subset (PS3.18): STOW-RS, QIDO-RS and WADO-RS over the stored originals.

Instances are served exactly as uploaded (byte-identical, in their stored transfer
syntax); frames are served uncompressed (Explicit VR Little Endian octets). Access
follows the app's rules: a user sees the studies they own or that are shared with
their group; anything else answers 404. Authentication is the session (with CSRF
on POST) or ``Authorization: Bearer <API token>``.
"""

from __future__ import annotations

import io
import json
import logging
import mmap
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from functools import wraps
from pathlib import Path

import numpy as np
import pydicom
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID

from dicomio.sandbox import DecodeFailed, decode_isolated

from .api import TokenAuth
from .audit import audit_record
from .errors import DicomwebError
from .models import AuditEvent, Instance, Series, Study
from .services.ingest import upload_ingest
from .storage import media_path

logger = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
_CHUNK = 1024 * 1024
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_NATIVE_LITTLE_ENDIAN = {
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.1.99",
}
_EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
# FailureReason (0008,1197) values, PS3.4 Annex B.2.3.
_PROCESSING_FAILURE = 0x0110
_CANNOT_UNDERSTAND = 0xC000
_STUDY_MISMATCH = 0xA900


def _problem(status: int, detail: str) -> HttpResponse:
    response = HttpResponse(
        json.dumps({"detail": detail}), status=status, content_type="application/json"
    )
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="dicomweb"'
    return response


def _authenticate(request: HttpRequest) -> tuple[object | None, bool]:
    """(user, came with a bearer token); the session user when there is no token."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return TokenAuth().authenticate(request, token.strip()), True
    user = getattr(request, "user", None)
    return (user if user is not None and user.is_authenticated else None), False


def _csrf_failure(request: HttpRequest) -> HttpResponse | None:
    return CsrfViewMiddleware(lambda r: HttpResponse()).process_view(
        request, None, (), {}
    )


def dicomweb_view(*methods: str) -> Callable:
    """Method check, authentication, CSRF for session writes, errors as JSON."""

    def decorate(view: Callable) -> Callable:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method not in methods:
                response = _problem(405, f"method {request.method} not allowed")
                response["Allow"] = ", ".join(methods)
                return response
            user, by_token = _authenticate(request)
            if user is None:
                return _problem(
                    401, "authentication required (session or Bearer token)"
                )
            request.user = user
            if not by_token and request.method not in _SAFE_METHODS:
                failure = _csrf_failure(request)
                if failure is not None:
                    return _problem(403, "CSRF check failed for a session request")
            try:
                return view(request, *args, **kwargs)
            except Http404 as exc:
                return _problem(404, str(exc) or "not found")
            except DicomwebError as exc:
                return _problem(exc.status, exc.detail)

        return wrapper

    return decorate


# -- access ------------------------------------------------------------------


def _visible_series(user):
    return Series.objects.visible_to(user).select_related("study")


def _denied_or_missing(user, kind: str, uid: str, exists: bool) -> Http404:
    """One event either way and the same answer (selectors._denied)."""
    audit_record(
        action=AuditEvent.Action.ACCESS_DENIED,
        actor=user,
        target_type=kind,
        target_id=uid[:64],
        extra_data={
            "reason": "not owner or group member" if exists else "no such object",
            "exists": exists,
            "via": "dicomweb",
        },
    )
    return Http404(f"no {kind} {uid}")


def _series_in_study(user, study: str):
    qs = _visible_series(user).filter(study__study_instance_uid=study)
    if not qs.exists():
        exists = Study.objects.filter(study_instance_uid=study).exists()
        raise _denied_or_missing(user, "study", study, exists)
    return qs


def _one_series(user, study: str, series: str) -> list[Series]:
    found = list(_series_in_study(user, study).filter(series_instance_uid=series))
    if not found:
        exists = Series.objects.filter(series_instance_uid=series).exists()
        raise _denied_or_missing(user, "series", series, exists)
    return found


def _instances(series_rows: Iterable[Series]) -> list[Instance]:
    """Instances of the series, one per SOP Instance UID, in slice order."""
    seen: dict[str, Instance] = {}
    rows = Instance.objects.filter(series__in=list(series_rows)).select_related(
        "series__study"
    )
    for instance in rows.order_by("series_id", "slice_index"):
        seen.setdefault(instance.sop_instance_uid, instance)
    return list(seen.values())


def _one_instance(user, study: str, series: str, sop: str) -> Instance:
    found = [
        i
        for i in _instances(_one_series(user, study, series))
        if i.sop_instance_uid == sop
    ]
    if not found:
        exists = Instance.objects.filter(sop_instance_uid=sop).exists()
        raise _denied_or_missing(user, "instance", sop, exists)
    return found[0]


# -- DICOM JSON ----------------------------------------------------------------


def _attr(vr: str, *values) -> dict:
    kept = [v for v in values if v not in (None, "")]
    return {"vr": vr, "Value": kept} if kept else {"vr": vr}


def _base(request: HttpRequest) -> str:
    return request.build_absolute_uri("/dicomweb")


def _study_url(request, study_uid: str) -> str:
    return f"{_base(request)}/studies/{study_uid}"


def _series_url(request, series: Series) -> str:
    return (
        f"{_study_url(request, series.study.study_instance_uid)}"
        f"/series/{series.series_instance_uid}"
    )


def _study_json(request, study: Study, series: list[Series], instances: int) -> dict:
    return {
        "00080005": _attr("CS", "ISO_IR 192"),
        "00080020": _attr("DA", study.study_date),
        "00080061": _attr("CS", *sorted({s.modality for s in series if s.modality})),
        "00081030": _attr("LO", study.description),
        "00081190": _attr("UR", _study_url(request, study.study_instance_uid)),
        "00100020": _attr("LO", study.patient_id),
        "0020000D": _attr("UI", study.study_instance_uid),
        "00201206": _attr("IS", len(series)),
        "00201208": _attr("IS", instances),
    }


def _series_json(request, series: Series) -> dict:
    study = series.study
    return {
        "00080005": _attr("CS", "ISO_IR 192"),
        "00080020": _attr("DA", study.study_date),
        "00080060": _attr("CS", series.modality),
        "0008103E": _attr("LO", series.description),
        "00081190": _attr("UR", _series_url(request, series)),
        "00100020": _attr("LO", study.patient_id),
        "0020000D": _attr("UI", study.study_instance_uid),
        "0020000E": _attr("UI", series.series_instance_uid),
        "00201209": _attr("IS", series.instance_count),
    }


def _instance_json(request, instance: Instance) -> dict:
    series = instance.series
    return {
        "00080005": _attr("CS", "ISO_IR 192"),
        "00080016": _attr("UI", instance.sop_class_uid),
        "00080018": _attr("UI", instance.sop_instance_uid),
        "00080060": _attr("CS", series.modality),
        "00081190": _attr(
            "UR",
            f"{_series_url(request, series)}/instances/{instance.sop_instance_uid}",
        ),
        "0020000D": _attr("UI", series.study.study_instance_uid),
        "0020000E": _attr("UI", series.series_instance_uid),
        "00280008": _attr("IS", instance.frame_count),
    }


def _json(payload, status: int = 200) -> HttpResponse:
    return HttpResponse(json.dumps(payload), status=status, content_type=DICOM_JSON)


# -- QIDO-RS -------------------------------------------------------------------

_CONTROL_PARAMS = {"limit", "offset", "includefield", "fuzzymatching"}
# Query attribute (keyword or tag) -> (keyword, ORM field per level, kind).
_STUDY_FIELDS = {
    "StudyInstanceUID": ("study__study_instance_uid", "uid"),
    "PatientID": ("study__patient_id", "text"),
    "StudyDate": ("study__study_date", "date"),
    "StudyDescription": ("study__description", "text"),
    "ModalitiesInStudy": ("modality", "text"),
}
_SERIES_FIELDS = {
    **_STUDY_FIELDS,
    "SeriesInstanceUID": ("series_instance_uid", "uid"),
    "Modality": ("modality", "text"),
    "SeriesDescription": ("description", "text"),
}
_INSTANCE_FIELDS = {
    "SOPInstanceUID": ("sop_instance_uid", "uid"),
    "SOPClassUID": ("sop_class_uid", "uid"),
}
_TAGS = {
    pydicom.datadict.tag_for_keyword(k): k for k in {*_SERIES_FIELDS, *_INSTANCE_FIELDS}
}


def _keyword(name: str) -> str:
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        return _TAGS.get(int(name, 16), name)
    return name


def _match(qs, field: str, kind: str, value: str):
    if kind == "uid":
        return qs.filter(**{f"{field}__in": re.split(r"[\\,]", value)})
    if kind == "date" and "-" in value:
        start, _, end = value.partition("-")
        if start:
            qs = qs.filter(**{f"{field}__gte": start})
        return qs.filter(**{f"{field}__lte": end}) if end else qs
    if "*" in value or "?" in value:
        if (
            len(value) > MAX_PATTERN
            or value.count("*") + value.count("?") > MAX_WILDCARDS
        ):
            raise DicomwebError(
                400,
                f"QIDO-RS: a wildcard value may have at most {MAX_PATTERN} characters "
                f"and {MAX_WILDCARDS} wildcards, got {value[:80]!r}",
            )
        # Matched here in linear-ish time, never as a regular expression in the
        # database (a backtracking pattern stalled the server for minutes).
        rows = qs.values_list("pk", field)
        return qs.filter(
            pk__in=[pk for pk, text in rows if wildcard_match(value, text or "")]
        )
    return qs.filter(**{field: value})


#: Longest wildcard value and most wildcards a QIDO-RS query may use.
MAX_PATTERN = 64
MAX_WILDCARDS = 8


def wildcard_match(pattern: str, text: str) -> bool:
    """DICOM wildcard matching (``*`` any run, ``?`` one character), case-
    insensitive. Greedy with one back-track point (the last ``*``): at most
    len(pattern) x len(text) steps, never exponential."""
    p, t = pattern.casefold(), text.casefold()
    pi = ti = 0
    star, mark = -1, 0
    while ti < len(t):
        if pi < len(p) and p[pi] != "*" and (p[pi] == "?" or p[pi] == t[ti]):
            pi, ti = pi + 1, ti + 1
        elif pi < len(p) and p[pi] == "*":
            star, mark, pi = pi, ti, pi + 1
        elif star >= 0:
            mark += 1
            pi, ti = star + 1, mark
        else:
            return False
    while pi < len(p) and p[pi] == "*":
        pi += 1
    return pi == len(p)


def _parse_query(request, allowed: dict) -> tuple[dict[str, str], int, int]:
    filters: dict[str, str] = {}
    for name, value in request.GET.items():
        if name in _CONTROL_PARAMS:
            continue
        keyword = _keyword(name)
        if keyword not in allowed:
            raise DicomwebError(
                400,
                f"QIDO-RS: unsupported query attribute {name!r}; supported: "
                f"{', '.join(sorted(allowed))}",
            )
        filters[keyword] = value
    try:
        limit = int(request.GET.get("limit", 1000))
        offset = int(request.GET.get("offset", 0))
    except ValueError as exc:
        raise DicomwebError(400, "QIDO-RS: limit and offset must be integers") from exc
    return filters, max(1, min(limit, 10000)), max(0, offset)


def _filter_series(qs, filters: dict[str, str]):
    for keyword, value in filters.items():
        if keyword in _SERIES_FIELDS and value:
            field, kind = _SERIES_FIELDS[keyword]
            qs = _match(qs, field, kind, value)
    return qs


def _unique_series(qs) -> list[Series]:
    seen: dict[tuple[str, str], Series] = {}
    for series in qs.order_by("study__study_instance_uid", "created_at"):
        key = (series.study.study_instance_uid, series.series_instance_uid)
        seen.setdefault(key, series)
    return list(seen.values())


def _search_studies(request) -> HttpResponse:
    filters, limit, offset = _parse_query(request, _STUDY_FIELDS)
    series = _unique_series(_filter_series(_visible_series(request.user), filters))
    if "ModalitiesInStudy" in filters:
        # Match on one series' modality, answer with all of the study's series.
        uids = {s.study.study_instance_uid for s in series}
        series = _unique_series(
            _visible_series(request.user).filter(study__study_instance_uid__in=uids)
        )
    by_study: dict[str, list[Series]] = {}
    for s in series:
        by_study.setdefault(s.study.study_instance_uid, []).append(s)
    results = []
    for uid in sorted(by_study)[offset : offset + limit]:
        members = by_study[uid]
        count = sum(s.instance_count for s in members)
        results.append(_study_json(request, members[0].study, members, count))
    return _json(results)


def _search_series(request, study: str | None = None) -> HttpResponse:
    filters, limit, offset = _parse_query(request, _SERIES_FIELDS)
    qs = (
        _series_in_study(request.user, study)
        if study
        else _visible_series(request.user)
    )
    series = _unique_series(_filter_series(qs, filters))[offset : offset + limit]
    return _json([_series_json(request, s) for s in series])


def _search_instances(request, study: str | None = None, series: str | None = None):
    allowed = {**_SERIES_FIELDS, **_INSTANCE_FIELDS}
    filters, limit, offset = _parse_query(request, allowed)
    if series:
        series_rows = _one_series(request.user, study, series)
    elif study:
        series_rows = list(_series_in_study(request.user, study))
    else:
        series_rows = list(_visible_series(request.user))
    series_rows = [
        s
        for s in _filter_series(
            Series.objects.filter(pk__in=[s.pk for s in series_rows]).select_related(
                "study"
            ),
            filters,
        )
    ]
    qs = Instance.objects.filter(series__in=series_rows).select_related("series__study")
    for keyword, value in filters.items():
        if keyword in _INSTANCE_FIELDS and value:
            field, kind = _INSTANCE_FIELDS[keyword]
            qs = _match(qs, field, kind, value)
    seen: dict[str, Instance] = {}
    for instance in qs.order_by("series_id", "slice_index"):
        seen.setdefault(instance.sop_instance_uid, instance)
    chosen = list(seen.values())[offset : offset + limit]
    return _json([_instance_json(request, i) for i in chosen])


# -- WADO-RS -------------------------------------------------------------------


def _accepts(request, media_type: str) -> str | None:
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


def _retrieve(request, instances: list[Instance]) -> StreamingHttpResponse:
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


def _metadata(request, instances: list[Instance]) -> HttpResponse:
    results = []
    for instance in instances:
        with open(media_path(instance.file), "rb") as handle:
            ds = pydicom.dcmread(handle, stop_before_pixels=True)
        url = (
            f"{_series_url(request, instance.series)}/instances/"
            f"{instance.sop_instance_uid}"
        )
        data = ds.to_json_dict(
            bulk_data_threshold=4096, bulk_data_element_handler=lambda _e, url=url: url
        )
        data["7FE00010"] = {"vr": "OW", "BulkDataURI": f"{url}/frames/1"}
        results.append(data)
    return _json(results)


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


#: Largest uncompressed frames response (bytes).
MAX_FRAMES_BYTES = 256 * 1024 * 1024


def _frames(request, instance: Instance, frame_list: str) -> StreamingHttpResponse:
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


# -- STOW-RS -------------------------------------------------------------------


def _boundary(request) -> bytes:
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


def _failed(uid_class: str, uid: str, reason: int) -> dict:
    return {
        "00081150": _attr("UI", uid_class),
        "00081155": _attr("UI", uid),
        "00081197": _attr("US", reason),
    }


def _store(request, study: str | None = None) -> HttpResponse:
    boundary = _boundary(request)
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
                failed.append(_failed("", "", _CANNOT_UNDERSTAND))
                reasons.append(
                    f"{path.name}: not a DICOM instance ({type(exc).__name__})"
                )
                path.unlink()
                continue
            if study and str(ds.get("StudyInstanceUID", "")) != study:
                failed.append(
                    _failed(
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
        stored_uids = set(
            Instance.objects.filter(
                series__in=Series.objects.visible_to(request.user),
                sop_instance_uid__in=[
                    str(ds.SOPInstanceUID) for ds in headers.values()
                ],
            ).values_list("sop_instance_uid", flat=True)
        )
        referenced = []
        for name, ds in headers.items():
            uid = str(ds.SOPInstanceUID)
            if name in rejected or uid not in stored_uids:
                failed.append(
                    _failed(ds.get("SOPClassUID", ""), uid, _PROCESSING_FAILURE)
                )
                reasons.append(f"{name}: {rejected.get(name, 'not stored')}")
                continue
            referenced.append(
                {
                    "00081150": _attr("UI", str(ds.get("SOPClassUID", ""))),
                    "00081155": _attr("UI", uid),
                    "00081190": _attr(
                        "UR",
                        f"{_study_url(request, str(ds.StudyInstanceUID))}/series/"
                        f"{ds.SeriesInstanceUID}/instances/{uid}",
                    ),
                }
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result: dict = {}
    if study:
        result["00081190"] = _attr("UR", _study_url(request, study))
    if referenced:
        result["00081199"] = {"vr": "SQ", "Value": referenced}
    if failed:
        result["00081198"] = {"vr": "SQ", "Value": failed}
    status = 200 if not failed else (202 if referenced else 409)
    response = _json(result, status=status)
    if reasons:
        logger.info("STOW-RS refused %d part(s): %s", len(reasons), "; ".join(reasons))
        text = "; ".join(reasons)[:500].replace('"', "'")
        response["Warning"] = f'299 dicomweb "{text}"'
    return response


# -- views ---------------------------------------------------------------------


@dicomweb_view("GET", "POST")
def studies(request):
    if request.method == "POST":
        return _store(request)
    return _search_studies(request)


@dicomweb_view("GET", "POST")
def study(request, study):
    if request.method == "POST":
        return _store(request, study)
    series = _series_in_study(request.user, study)
    return _retrieve(request, _instances(series))


@dicomweb_view("GET")
def study_metadata(request, study):
    return _metadata(request, _instances(_series_in_study(request.user, study)))


@dicomweb_view("GET")
def study_series(request, study):
    return _search_series(request, study)


@dicomweb_view("GET")
def study_instances(request, study):
    return _search_instances(request, study)


@dicomweb_view("GET")
def series(request, study, series):
    return _retrieve(request, _instances(_one_series(request.user, study, series)))


@dicomweb_view("GET")
def series_metadata(request, study, series):
    return _metadata(request, _instances(_one_series(request.user, study, series)))


@dicomweb_view("GET")
def series_instances(request, study, series):
    return _search_instances(request, study, series)


@dicomweb_view("GET")
def instance(request, study, series, sop):
    return _retrieve(request, [_one_instance(request.user, study, series, sop)])


@dicomweb_view("GET")
def instance_metadata(request, study, series, sop):
    return _metadata(request, [_one_instance(request.user, study, series, sop)])


@dicomweb_view("GET")
def instance_frames(request, study, series, sop, frames):
    return _frames(request, _one_instance(request.user, study, series, sop), frames)


@dicomweb_view("GET")
def all_series(request):
    return _search_series(request)


@dicomweb_view("GET")
def all_instances(request):
    return _search_instances(request)


__all__ = [
    "DicomwebError",
    "all_instances",
    "all_series",
    "instance",
    "instance_frames",
    "instance_metadata",
    "series",
    "series_instances",
    "series_metadata",
    "studies",
    "study",
    "study_instances",
    "study_metadata",
    "study_series",
]
