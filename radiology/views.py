"""Pages: thin views that render templates; data comes from the JSON API."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from . import selectors


def healthz(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"ok": True})


def studies(request: HttpRequest) -> HttpResponse:
    return render(request, "radiology/studies.html")


def upload(request: HttpRequest) -> HttpResponse:
    return render(request, "radiology/upload.html")


def series_detail(request: HttpRequest, pk: int) -> HttpResponse:
    series = selectors.series_for(request.user, pk)
    return render(request, "radiology/series.html", {"series": series})
