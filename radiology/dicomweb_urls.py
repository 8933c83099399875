"""URL routes of the DICOMweb subset, included under ``/dicomweb/``."""

from django.urls import path, register_converter

from . import dicomweb


class UIDConverter:
    # As ingest stores them: conformant UIDs and the letters some scanners write.
    regex = r"[0-9A-Za-z][0-9A-Za-z._-]{0,63}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


class FrameListConverter:
    regex = r"[0-9]+(,[0-9]+)*"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(UIDConverter, "uid")
register_converter(FrameListConverter, "frames")

_SERIES = "studies/<uid:study>/series/<uid:series>"
_INSTANCE = f"{_SERIES}/instances/<uid:sop>"

urlpatterns = [
    path("studies", dicomweb.studies, name="dicomweb-studies"),
    path("series", dicomweb.all_series, name="dicomweb-all-series"),
    path("instances", dicomweb.all_instances, name="dicomweb-all-instances"),
    path("studies/<uid:study>", dicomweb.study, name="dicomweb-study"),
    path("studies/<uid:study>/metadata", dicomweb.study_metadata),
    path("studies/<uid:study>/series", dicomweb.study_series),
    path("studies/<uid:study>/instances", dicomweb.study_instances),
    path(_SERIES, dicomweb.series, name="dicomweb-series"),
    path(f"{_SERIES}/metadata", dicomweb.series_metadata),
    path(f"{_SERIES}/instances", dicomweb.series_instances),
    path(_INSTANCE, dicomweb.instance, name="dicomweb-instance"),
    path(f"{_INSTANCE}/metadata", dicomweb.instance_metadata),
    path(f"{_INSTANCE}/frames/<frames:frames>", dicomweb.instance_frames),
]
