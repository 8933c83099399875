"""URL routes of the DICOMweb subset, included under ``/dicomweb/``."""

from django.urls import path, register_converter

from . import views


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
    path("studies", views.studies, name="dicomweb-studies"),
    path("series", views.all_series, name="dicomweb-all-series"),
    path("instances", views.all_instances, name="dicomweb-all-instances"),
    path("studies/<uid:study>", views.study, name="dicomweb-study"),
    path("studies/<uid:study>/metadata", views.study_metadata),
    path("studies/<uid:study>/series", views.study_series),
    path("studies/<uid:study>/instances", views.study_instances),
    path(_SERIES, views.series, name="dicomweb-series"),
    path(f"{_SERIES}/metadata", views.series_metadata),
    path(f"{_SERIES}/instances", views.series_instances),
    path(_INSTANCE, views.instance, name="dicomweb-instance"),
    path(f"{_INSTANCE}/metadata", views.instance_metadata),
    path(f"{_INSTANCE}/frames/<frames:frames>", views.instance_frames),
]
