"""DICOM JSON (PS3.18 Annex F) for DICOMweb answers, written by pydicom.

Every answer is a :class:`pydicom.Dataset` serialised with ``Dataset.to_json_dict``;
attributes without a value (``None`` or ``""``) are sent with their VR only.
"""

from __future__ import annotations

import functools
import json

import pydicom
from django.http import HttpRequest, HttpResponse
from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement

from ..models import Instance, Series, Study

__all__ = [
    "DICOM_JSON",
    "BULK_DATA_THRESHOLD",
    "base_url",
    "dataset",
    "failed_sop",
    "instance_attributes",
    "instance_metadata",
    "instance_url",
    "referenced_sop",
    "response",
    "series_attributes",
    "series_url",
    "store_result",
    "study_attributes",
    "study_url",
]

DICOM_JSON = "application/dicom+json"
#: Binary values longer than this (bytes) are sent as a BulkDataURI in metadata.
BULK_DATA_THRESHOLD = 4096
_CHARSET = "ISO_IR 192"  # UTF-8


def dataset(**attributes) -> Dataset:
    """A dataset of the given attributes, by keyword, in the order given.

    A value is one value or a list of them (a sequence: a list of datasets);
    ``None`` and ``""`` are left out. Values are taken as stored, never split on
    backslashes or checked against the VR's length.
    """
    ds = Dataset()
    for keyword, value in attributes.items():
        tag, vr = _tag_and_vr(keyword)
        values = value if isinstance(value, list) else [value]
        kept = [v for v in values if v is not None and v != ""]
        ds.add(DataElement(tag, vr, kept, validation_mode=pydicom.config.IGNORE))
    return ds


@functools.cache
def _tag_and_vr(keyword: str) -> tuple[int, str]:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"dicom_json: {keyword!r} is not a DICOM keyword")
    return tag, dictionary_VR(tag)


def base_url(request: HttpRequest) -> str:
    return request.build_absolute_uri("/dicomweb")


def study_url(base: str, study_uid: str) -> str:
    return f"{base}/studies/{study_uid}"


def series_url(base: str, study_uid: str, series_uid: str) -> str:
    return f"{study_url(base, study_uid)}/series/{series_uid}"


def instance_url(base: str, study_uid: str, series_uid: str, sop_uid: str) -> str:
    return f"{series_url(base, study_uid, series_uid)}/instances/{sop_uid}"


def study_attributes(
    base: str, study: Study, series: list[Series], instances: int
) -> dict:
    """QIDO-RS study result: the study with its ``series`` and instance count."""
    return dataset(
        SpecificCharacterSet=_CHARSET,
        StudyDate=study.study_date,
        ModalitiesInStudy=sorted({s.modality for s in series if s.modality}),
        StudyDescription=study.description,
        RetrieveURL=study_url(base, study.study_instance_uid),
        PatientID=study.patient_id,
        StudyInstanceUID=study.study_instance_uid,
        NumberOfStudyRelatedSeries=len(series),
        NumberOfStudyRelatedInstances=instances,
    ).to_json_dict()


def series_attributes(base: str, series: Series) -> dict:
    """QIDO-RS series result."""
    study = series.study
    return dataset(
        SpecificCharacterSet=_CHARSET,
        StudyDate=study.study_date,
        Modality=series.modality,
        SeriesDescription=series.description,
        RetrieveURL=series_url(
            base, study.study_instance_uid, series.series_instance_uid
        ),
        PatientID=study.patient_id,
        StudyInstanceUID=study.study_instance_uid,
        SeriesInstanceUID=series.series_instance_uid,
        NumberOfSeriesRelatedInstances=series.instance_count,
    ).to_json_dict()


def instance_attributes(base: str, instance: Instance) -> dict:
    """QIDO-RS instance result."""
    series = instance.series
    study_uid = series.study.study_instance_uid
    return dataset(
        SpecificCharacterSet=_CHARSET,
        SOPClassUID=instance.sop_class_uid,
        SOPInstanceUID=instance.sop_instance_uid,
        Modality=series.modality,
        RetrieveURL=instance_url(
            base, study_uid, series.series_instance_uid, instance.sop_instance_uid
        ),
        StudyInstanceUID=study_uid,
        SeriesInstanceUID=series.series_instance_uid,
        NumberOfFrames=instance.frame_count,
    ).to_json_dict()


def instance_metadata(ds: Dataset, url: str) -> dict:
    """WADO-RS metadata of the stored instance ``ds`` (read without its pixels),
    whose retrieve URL is ``url``: long binary values and the pixel data become
    BulkDataURIs."""
    data = ds.to_json_dict(
        bulk_data_threshold=BULK_DATA_THRESHOLD,
        bulk_data_element_handler=lambda _element: url,
    )
    data["7FE00010"] = {"vr": "OW", "BulkDataURI": f"{url}/frames/1"}
    return data


def failed_sop(sop_class_uid: str, sop_instance_uid: str, reason: int) -> Dataset:
    """An item of STOW-RS's FailedSOPSequence; ``reason`` as in PS3.4 B.2.3."""
    return dataset(
        ReferencedSOPClassUID=sop_class_uid,
        ReferencedSOPInstanceUID=sop_instance_uid,
        FailureReason=reason,
    )


def referenced_sop(sop_class_uid: str, sop_instance_uid: str, url: str) -> Dataset:
    """An item of STOW-RS's ReferencedSOPSequence: a stored instance and its URL."""
    return dataset(
        ReferencedSOPClassUID=sop_class_uid,
        ReferencedSOPInstanceUID=sop_instance_uid,
        RetrieveURL=url,
    )


def store_result(
    *, retrieve_url: str | None, referenced: list[Dataset], failed: list[Dataset]
) -> dict:
    """The STOW-RS response: the study's URL (a store into one study), what was
    stored and what was not."""
    attributes: dict = {}
    if retrieve_url:
        attributes["RetrieveURL"] = retrieve_url
    if referenced:
        attributes["ReferencedSOPSequence"] = referenced
    if failed:
        attributes["FailedSOPSequence"] = failed
    return dataset(**attributes).to_json_dict()


def response(payload: dict | list, status: int = 200) -> HttpResponse:
    return HttpResponse(json.dumps(payload), status=status, content_type=DICOM_JSON)
