"""QIDO-RS: search for studies, series and instances the caller may see."""

from __future__ import annotations

import re

import pydicom
from django.http import HttpRequest, HttpResponse

from .. import selectors
from ..errors import DicomwebError
from ..models import Instance, Series
from . import dicom_json

__all__ = [
    "MAX_PATTERN",
    "MAX_WILDCARDS",
    "search_instances",
    "search_series",
    "search_studies",
    "wildcard_match",
]

#: Longest wildcard value and most wildcards a QIDO-RS query may use.
MAX_PATTERN = 64
MAX_WILDCARDS = 8

_CONTROL_PARAMS = {"limit", "offset", "includefield", "fuzzymatching"}
# Query attribute (keyword or tag) -> (ORM field per level, kind).
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


def _parse_query(
    request: HttpRequest, allowed: dict
) -> tuple[dict[str, str], int, int]:
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


def search_studies(request: HttpRequest) -> HttpResponse:
    filters, limit, offset = _parse_query(request, _STUDY_FIELDS)
    visible = selectors.visible_series(request.user)
    series = _unique_series(_filter_series(visible, filters))
    if "ModalitiesInStudy" in filters:
        # Match on one series' modality, answer with all of the study's series.
        uids = {s.study.study_instance_uid for s in series}
        series = _unique_series(visible.filter(study__study_instance_uid__in=uids))
    by_study: dict[str, list[Series]] = {}
    for s in series:
        by_study.setdefault(s.study.study_instance_uid, []).append(s)
    base = dicom_json.base_url(request)
    results = []
    for uid in sorted(by_study)[offset : offset + limit]:
        members = by_study[uid]
        count = sum(s.instance_count for s in members)
        results.append(
            dicom_json.study_attributes(base, members[0].study, members, count)
        )
    return dicom_json.response(results)


def search_series(request: HttpRequest, study: str | None = None) -> HttpResponse:
    filters, limit, offset = _parse_query(request, _SERIES_FIELDS)
    qs = (
        selectors.series_of_study_uid(request.user, study)
        if study
        else selectors.visible_series(request.user)
    )
    series = _unique_series(_filter_series(qs, filters))[offset : offset + limit]
    base = dicom_json.base_url(request)
    return dicom_json.response([dicom_json.series_attributes(base, s) for s in series])


def search_instances(
    request: HttpRequest, study: str | None = None, series: str | None = None
) -> HttpResponse:
    allowed = {**_SERIES_FIELDS, **_INSTANCE_FIELDS}
    filters, limit, offset = _parse_query(request, allowed)
    if series:
        series_rows = selectors.series_of_uid(request.user, study, series)
    elif study:
        series_rows = list(selectors.series_of_study_uid(request.user, study))
    else:
        series_rows = list(selectors.visible_series(request.user))
    series_rows = list(
        _filter_series(
            Series.objects.filter(pk__in=[s.pk for s in series_rows]).select_related(
                "study"
            ),
            filters,
        )
    )
    qs = Instance.objects.filter(series__in=series_rows).select_related("series__study")
    for keyword, value in filters.items():
        if keyword in _INSTANCE_FIELDS and value:
            field, kind = _INSTANCE_FIELDS[keyword]
            qs = _match(qs, field, kind, value)
    seen: dict[str, Instance] = {}
    for instance in qs.order_by("series_id", "slice_index"):
        seen.setdefault(instance.sop_instance_uid, instance)
    chosen = list(seen.values())[offset : offset + limit]
    base = dicom_json.base_url(request)
    return dicom_json.response(
        [dicom_json.instance_attributes(base, i) for i in chosen]
    )
