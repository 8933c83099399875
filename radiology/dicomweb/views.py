"""DICOMweb endpoints (PS3.18): STOW-RS, QIDO-RS and WADO-RS over the stored originals.

Instances are served exactly as uploaded (byte-identical, in their stored transfer
syntax); frames are served uncompressed (Explicit VR Little Endian octets). Access
follows the app's rules: a user sees the studies they own or that are shared with
their group; anything else answers 404. Authentication is the session (with CSRF
on POST) or ``Authorization: Bearer <API token>`` (:mod:`radiology.auth`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps

from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from .. import auth, selectors
from ..errors import DicomwebError
from . import qido, stow, wado

__all__ = [
    "all_instances",
    "all_series",
    "dicomweb_view",
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


def _problem(status: int, detail: str) -> HttpResponse:
    response = HttpResponse(
        json.dumps({"detail": detail}), status=status, content_type="application/json"
    )
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="dicomweb"'
    return response


def dicomweb_view(*methods: str) -> Callable:
    """Method check, authentication, CSRF for session writes, errors as JSON.

    The views answer 401 themselves, so ``radiology.urls`` exempts them from the
    login redirect (``SELF_AUTHENTICATING``); CSRF is checked here
    (:func:`radiology.auth.csrf_failed`), not by the middleware, because Bearer
    requests need none.
    """

    def decorate(view: Callable) -> Callable:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method not in methods:
                response = _problem(405, f"method {request.method} not allowed")
                response["Allow"] = ", ".join(methods)
                return response
            user, by_token = auth.authenticate(request)
            if user is None:
                return _problem(
                    401, "authentication required (session or Bearer token)"
                )
            request.user = user
            if auth.csrf_failed(request, by_token=by_token):
                return _problem(403, "CSRF check failed for a session request")
            try:
                return view(request, *args, **kwargs)
            except Http404 as exc:
                return _problem(404, str(exc) or "not found")
            except DicomwebError as exc:
                return _problem(exc.status, exc.detail)

        return wrapper

    return decorate


@dicomweb_view("GET", "POST")
def studies(request):
    if request.method == "POST":
        return stow.store(request)
    return qido.search_studies(request)


@dicomweb_view("GET", "POST")
def study(request, study):
    if request.method == "POST":
        return stow.store(request, study)
    found = selectors.series_of_study_uid(request.user, study)
    return wado.retrieve(request, selectors.unique_instances(found))


@dicomweb_view("GET")
def study_metadata(request, study):
    found = selectors.series_of_study_uid(request.user, study)
    return wado.metadata(request, selectors.unique_instances(found))


@dicomweb_view("GET")
def study_series(request, study):
    return qido.search_series(request, study)


@dicomweb_view("GET")
def study_instances(request, study):
    return qido.search_instances(request, study)


@dicomweb_view("GET")
def series(request, study, series):
    found = selectors.series_of_uid(request.user, study, series)
    return wado.retrieve(request, selectors.unique_instances(found))


@dicomweb_view("GET")
def series_metadata(request, study, series):
    found = selectors.series_of_uid(request.user, study, series)
    return wado.metadata(request, selectors.unique_instances(found))


@dicomweb_view("GET")
def series_instances(request, study, series):
    return qido.search_instances(request, study, series)


@dicomweb_view("GET")
def instance(request, study, series, sop):
    found = selectors.instance_of_uid(request.user, study, series, sop)
    return wado.retrieve(request, [found])


@dicomweb_view("GET")
def instance_metadata(request, study, series, sop):
    found = selectors.instance_of_uid(request.user, study, series, sop)
    return wado.metadata(request, [found])


@dicomweb_view("GET")
def instance_frames(request, study, series, sop, frames):
    found = selectors.instance_of_uid(request.user, study, series, sop)
    return wado.frames(request, found, frames)


@dicomweb_view("GET")
def all_series(request):
    return qido.search_series(request)


@dicomweb_view("GET")
def all_instances(request):
    return qido.search_instances(request)
