"""JSON API under /api/ (session with CSRF, or ``Authorization: Bearer <token>``)."""

from __future__ import annotations

import shutil
import tempfile
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import TooManyFilesSent
from django.http import Http404
from ninja import File, NinjaAPI, Status
from ninja.errors import HttpError
from ninja.files import UploadedFile

from . import selectors
from .auth import API_AUTH
from .schemas import (
    AuditEventOut,
    DenoiseIn,
    ErrorOut,
    FinetuneIn,
    FinetuneQueuedOut,
    JobOut,
    ModelOut,
    ReviewCreatedOut,
    ReviewIn,
    SeriesDetailOut,
    SeriesOut,
    TokenCreatedOut,
    TokenIn,
    TokenOut,
    UploadOut,
)
from .services import jobs as job_services
from .services.ingest import upload_ingest
from .services.reviews import review_submit

api = NinjaAPI(
    title="Radiology denoising review API",
    version="1",
    auth=API_AUTH,
    urls_namespace="api",
    # The schema lists every endpoint and parameter: for signed-in users only
    # (reviewers and integrators have accounts); anyone else is sent to sign in.
    docs_decorator=login_required,
)


@api.exception_handler(job_services.JobRequestError)
def job_request_error(request, exc):
    return api.create_response(request, {"detail": str(exc)}, status=400)


@api.exception_handler(TooManyFilesSent)
def too_many_files(request, exc):
    return api.create_response(
        request,
        {
            "detail": "too many files in one request "
            f"(limit {settings.UPLOAD_MAX_FILES}, "
            "UPLOAD_MAX_FILES): send them in several uploads or as a zip"
        },
        status=413,
    )


@api.exception_handler(Http404)
def not_found(request, exc):
    return api.create_response(request, {"detail": "Not found"}, status=404)


@api.post("/uploads", response={201: UploadOut, 400: ErrorOut, 413: ErrorOut})
def upload(request, files: File[list[UploadedFile]]):
    """Upload DICOM files, folders' files or zips; returns series and rejections."""
    if not files:
        raise HttpError(400, "no files in the request (multipart field 'files')")
    workdir = Path(tempfile.mkdtemp(prefix="upload-"))
    try:
        sources = []
        for index, uploaded in enumerate(files):
            display = uploaded.name or f"file-{index}"
            if hasattr(uploaded, "temporary_file_path"):
                sources.append((Path(uploaded.temporary_file_path()), display))
                continue
            path = workdir / f"{index:06d}"
            with open(path, "wb") as handle:
                for chunk in uploaded.chunks():
                    handle.write(chunk)
            sources.append((path, display))
        report = upload_ingest(sources=sources, owner=request.user)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return Status(201, report)


@api.get("/series", response=list[SeriesOut])
def list_series(request, search: str = "", modality: str = "", status: str = ""):
    return selectors.series_list(
        request.user, search=search, modality=modality, status=status
    )[:500]


@api.get("/series/{series_id}", response={200: SeriesDetailOut, 404: ErrorOut})
def get_series(request, series_id: int):
    series = selectors.series_for(request.user, series_id)
    # The study's other series this user may see, for the viewer's study strip.
    study_series = selectors.series_in_study_for(request.user, series.study_id)
    return SeriesDetailOut.from_orm(series, context={"study_series": study_series})


@api.post(
    "/series/{series_id}/denoise",
    response={200: JobOut, 201: JobOut, 400: ErrorOut, 404: ErrorOut},
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": DenoiseIn.json_schema()}},
        }
    },
)
def denoise(request, series_id: int):
    """Queue a denoise job (optional JSON body ``{"model": "NAME[:VERSION]", "params":
    {...}}``); asking again for the same input returns the same job."""
    series = selectors.series_for(request.user, series_id)
    try:
        payload = DenoiseIn.model_validate_json(request.body or b"{}")
    except ValueError as exc:
        raise HttpError(400, f"denoise: invalid request body: {exc}") from exc
    job, created = job_services.denoise_job_request(
        series=series,
        requested_by=request.user,
        model=payload.model,
        params=payload.params,
    )
    return Status(201 if created else 200, job)


@api.get("/jobs/{job_id}", response={200: JobOut, 404: ErrorOut})
def get_job(request, job_id: int):
    return selectors.job_for(request.user, job_id)


@api.post("/jobs/{job_id}/cancel", response={200: JobOut, 404: ErrorOut})
def cancel_job(request, job_id: int):
    job = selectors.job_for(request.user, job_id)
    return job_services.denoise_job_cancel(job=job, actor=request.user)


@api.post(
    "/jobs/{job_id}/review",
    response={201: ReviewCreatedOut, 400: ErrorOut, 404: ErrorOut},
)
def review(request, job_id: int, payload: ReviewIn):
    job = selectors.job_for(request.user, job_id)
    created = review_submit(
        job=job,
        reviewer=request.user,
        verdict=payload.verdict,
        comment=payload.comment,
        strength=payload.strength,
        measurements=payload.measurements,
    )
    return Status(201, created)


@api.get("/audit", response=list[AuditEventOut])
def audit(
    request,
    action: str = "",
    target_type: str = "",
    target_id: str = "",
    actor: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 200,
    offset: int = 0,
):
    """Audit events visible to the caller, newest first; the read itself is audited."""
    return selectors.audit_events_for(
        request.user,
        action=action,
        target_type=target_type,
        target_id=target_id,
        actor=actor,
        since=since,
        until=until,
        limit=max(1, min(limit, 1000)),
        offset=max(0, offset),
    )


@api.get("/models", response=list[ModelOut])
def models(request):
    import inference

    return inference.list_models(settings.MODELS_ROOT)


@api.post(
    "/models/finetune",
    response={202: FinetuneQueuedOut, 400: ErrorOut, 403: ErrorOut, 404: ErrorOut},
)
def finetune(request, payload: FinetuneIn):
    """Staff: fine-tune the default CT model on these series in a worker; the
    held-out slices decide whether the new version becomes the default, and the
    outcome is in the audit log (``model.finetuned``)."""
    from .services.finetune import model_finetune_request

    if not request.user.is_staff:
        raise HttpError(403, "finetune: only staff may fine-tune models")
    series = [selectors.series_for(request.user, pk) for pk in payload.series]
    model_finetune_request(
        series=series, requested_by=request.user, minutes=payload.minutes
    )
    return Status(
        202,
        FinetuneQueuedOut(
            queued=True,
            series=payload.series,
            minutes=payload.minutes,
            result="audit log, action model.finetuned",
        ),
    )


api.add_router("", "radiology.api_viewer.router")
api.add_router("", "radiology.api_export.router")


@api.get("/tokens", response=list[TokenOut])
def list_tokens(request):
    """Your API tokens (staff: everyone's), newest first; keys are never shown."""
    from .services.tokens import tokens_visible_to

    return tokens_visible_to(request.user)[:500]


@api.post("/tokens", response={201: TokenCreatedOut, 400: ErrorOut})
def create_token(request, payload: TokenIn):
    """A new token for you; the key is in this answer only."""
    from .services.tokens import token_create

    token, key = token_create(user=request.user, name=payload.name, days=payload.days)
    return Status(201, TokenCreatedOut.from_orm(token, context={"key": key}))


@api.delete("/tokens/{token_id}", response={200: TokenOut, 400: ErrorOut})
def revoke_token(request, token_id: int):
    """Revoke one of your tokens (staff: anyone's); audited."""
    from .services.tokens import token_revoke

    return token_revoke(token_id=token_id, actor=request.user)
