"""Pages: thin views that render templates; data comes from the JSON API."""

from __future__ import annotations

import html
import json
import logging
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from . import selectors
from .models import AuditEvent

logger = logging.getLogger(__name__)


@login_not_required
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


def compare(request: HttpRequest, pk: int) -> HttpResponse:
    """The compare viewer of one job: original | denoised | residual."""
    job = selectors.job_for(request.user, pk)
    return render(request, "radiology/compare.html", {"job": job, "series": job.series})


def series_view(request: HttpRequest, pk: int) -> HttpResponse:
    """The viewer on the original alone, for any series (denoised or not), with
    the reason when it cannot be denoised."""
    from .services.jobs import not_denoised_reason

    series = selectors.series_for(request.user, pk)
    return render(
        request,
        "radiology/compare.html",
        {"job": None, "series": series, "not_denoised": not_denoised_reason(series)},
    )


def audit_log(request: HttpRequest) -> HttpResponse:
    return render(
        request, "radiology/audit.html", {"actions": AuditEvent.Action.values}
    )


def model_registry(request: HttpRequest) -> HttpResponse:
    """Registered bundles with their metadata and model cards (docs/README.md)."""
    import inference

    cards, error = [], ""
    try:
        infos = inference.list_models(settings.MODELS_ROOT)
    except Exception as exc:  # a broken registry is shown, not a server error
        logger.exception("model registry unreadable")
        infos, error = [], f"{type(exc).__name__}: {exc}"
    for info in infos:
        metadata = _read_json(info.path / "configs" / "metadata.json")
        cards.append(
            {
                "info": info,
                "metadata": metadata,
                "metrics": _metrics_table(metadata.get("metrics")),
                "readme_html": render_markdown(
                    _read_text(info.path / "docs" / "README.md")
                ),
            }
        )
    return render(request, "radiology/models.html", {"cards": cards, "error": error})


def render_markdown(text: str) -> str:
    """A model card as HTML: Markdown with tables, its own text escaped first, so a
    bundle's README can format but never inject markup or scripts."""
    import markdown

    if not text:
        return ""
    return markdown.markdown(html.escape(text, quote=False), extensions=["tables"])


def _metrics_table(metrics: Any) -> dict[str, Any] | None:
    """``{level: {name: value}}`` as a header and rows, the levels down the side."""
    if not isinstance(metrics, dict) or not metrics:
        return None
    levels = [k for k, v in metrics.items() if isinstance(v, dict)]
    names = sorted({name for level in levels for name in metrics[level]})
    rows = [
        (level, [_short(metrics[level].get(name)) for name in names])
        for level in levels
    ]
    return {"names": [name.replace("_", " ") for name in names], "rows": rows}


def _short(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _read_json(path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _read_text(path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""
