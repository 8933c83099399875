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
from ninja import File, NinjaAPI, Schema, Status
from ninja.errors import HttpError
from ninja.files import UploadedFile

from . import selectors
from .auth import API_AUTH
from .models import ApiToken, AuditEvent, DenoiseJob, Review
from .services import jobs as job_services
from .services.ingest import series_summary, upload_ingest
from .services.reviews import review_concerns, review_submit

api = NinjaAPI(
    title="Radiology denoising review API",
    version="1",
    auth=API_AUTH,
    urls_namespace="api",
    # The schema lists every endpoint and parameter: for signed-in users only
    # (reviewers and integrators have accounts); anyone else is sent to sign in.
    docs_decorator=login_required,
)


def job_json(job: DenoiseJob) -> dict:
    return {
        "id": job.pk,
        "series": job.series_id,
        "status": job.status,
        "progress": round(job.progress, 4),
        "progress_message": job.progress_message,
        "model": {
            "name": job.model_name,
            "version": job.model_version,
            "weights_sha256": job.weights_sha256,
        },
        "params": job.params,
        "attempts": job.attempts,
        "error": job.error,
        "worker": job.worker,
        "requested_by": job.requested_by.get_username() if job.requested_by else None,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "timings_s": job.timings_s,
        "metrics": job.metrics,
        "provenance": job.provenance,
        "warnings": job.warnings,
        # Why an Accept needs a comment (flagged slices, OOD or modality warnings).
        "review_concerns": review_concerns(job),
        "outputs": {
            "reconstruction_sha256": job.reconstruction_sha256,
            "residual_sha256": job.residual_sha256,
        },
        "reviews": [
            {
                "verdict": r.verdict,
                "reviewer": r.reviewer.get_username(),
                "comment": r.comment,
                "strength": r.strength,
                "measurements": r.measurements,
                "created_at": r.created_at,
            }
            for r in selectors.job_reviews(job)
        ],
    }


def series_json(series) -> dict:
    latest = selectors.latest_job(series)
    open_issues = selectors.open_fixity_issues(series)
    data = series_summary(series)
    data.update(
        {
            "study": {
                "id": series.study_id,
                "study_instance_uid": series.study.study_instance_uid,
                "description": series.study.description,
                "patient_id": series.study.patient_id,
                "patient_name": series.study.patient_name,
                # As people write it ("FAMILY, GIVEN"), else the ID: one rule for
                # every page (Study.patient_display).
                "patient_display": series.study.patient_display,
                "study_date": series.study.study_date,
                "study_date_iso": series.study.study_date_iso,
            },
            "created_at": series.created_at,
            "latest_job": job_json(latest) if latest else None,
            "fixity": {
                "ok": not open_issues,
                "issues": [
                    {
                        "role": i.role,
                        "file": i.file,
                        "detected_at": i.detected_at,
                        "missing": not i.actual_sha256,
                    }
                    for i in open_issues
                ],
            },
        }
    )
    return data


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


@api.post("/uploads", response={201: dict, 400: dict})
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
    return Status(201, report.as_json())


@api.get("/series", response=list[dict])
def list_series(request, search: str = "", modality: str = "", status: str = ""):
    return [
        series_json(s)
        for s in selectors.series_list(
            request.user, search=search, modality=modality, status=status
        )[:500]
    ]


@api.get("/series/{series_id}", response=dict)
def get_series(request, series_id: int):
    series = selectors.series_for(request.user, series_id)
    data = series_json(series)
    data["jobs"] = [job_json(j) for j in series.jobs.order_by("-created_at")]
    # The study's other series this user may see, for the viewer's study strip.
    data["study_series"] = [
        {
            "id": other.pk,
            "modality": other.modality,
            "description": other.description or other.series_instance_uid,
            "shape": other.shape,
            "compare_job": next(
                (
                    j.pk
                    for j in other.jobs.order_by("-created_at")
                    if j.status == DenoiseJob.Status.SUCCEEDED and j.is_current
                ),
                None,
            ),
        }
        for other in selectors.series_in_study_for(request.user, series.study_id)
    ]
    return data


class DenoiseIn(Schema):
    model: str | None = None
    params: dict | None = None


@api.post(
    "/series/{series_id}/denoise",
    response={200: dict, 201: dict, 400: dict},
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
    return Status(201 if created else 200, job_json(job))


@api.get("/jobs/{job_id}", response=dict)
def get_job(request, job_id: int):
    return job_json(selectors.job_for(request.user, job_id))


@api.post("/jobs/{job_id}/cancel", response=dict)
def cancel_job(request, job_id: int):
    job = selectors.job_for(request.user, job_id)
    return job_json(job_services.denoise_job_cancel(job=job, actor=request.user))


class ReviewIn(Schema):
    verdict: Review.Verdict
    comment: str = ""
    strength: float = 1.0
    # ROI statistics and lengths from the viewer, kept with the verdict.
    measurements: list[dict] = []


@api.post("/jobs/{job_id}/review", response={201: dict, 400: dict})
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
    return Status(
        201,
        {
            "id": created.pk,
            "job": job.pk,
            "verdict": created.verdict,
            "comment": created.comment,
            "strength": created.strength,
            "measurements": created.measurements,
            "reviewer": request.user.get_username(),
            "created_at": created.created_at,
        },
    )


def audit_json(event: AuditEvent) -> dict:
    return {
        "id": event.pk,
        "created_at": event.created_at,
        "actor": event.actor_name,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "study": event.study_id,
        "extra_data": event.extra_data,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


@api.get("/audit", response=list[dict])
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
    events = selectors.audit_events_for(
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
    return [audit_json(e) for e in events]


@api.get("/models", response=list[dict])
def models(request):
    import inference

    return [
        {
            "name": m.name,
            "version": m.version,
            "sha256": m.sha256,
            "default": m.default,
            "modality": m.modality,
            "description": m.description,
        }
        for m in inference.list_models(settings.MODELS_ROOT)
    ]


class FinetuneIn(Schema):
    series: list[int]
    minutes: float = 10.0


@api.post("/models/finetune", response={202: dict, 400: dict, 403: dict})
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
        {
            "queued": True,
            "series": payload.series,
            "minutes": payload.minutes,
            "result": "audit log, action model.finetuned",
        },
    )


api.add_router("", "radiology.api_viewer.router")
api.add_router("", "radiology.api_export.router")


def token_json(token: ApiToken) -> dict:
    return {
        "id": token.pk,
        "name": token.name,
        "owner": token.user.get_username(),
        "created_at": token.created_at,
        "expires_at": token.expires_at,
        "revoked_at": token.revoked_at,
        "last_used_at": token.last_used_at,
    }


class TokenIn(Schema):
    name: str = "default"
    days: int | None = None


@api.get("/tokens", response=list[dict])
def list_tokens(request):
    """Your API tokens (staff: everyone's), newest first; keys are never shown."""
    from .services.tokens import tokens_visible_to

    return [token_json(t) for t in tokens_visible_to(request.user)[:500]]


@api.post("/tokens", response={201: dict, 400: dict})
def create_token(request, payload: TokenIn):
    """A new token for you; the key is in this answer only."""
    from .services.tokens import token_create

    token, key = token_create(user=request.user, name=payload.name, days=payload.days)
    return Status(201, {**token_json(token), "key": key})


@api.delete("/tokens/{token_id}", response={200: dict, 400: dict})
def revoke_token(request, token_id: int):
    """Revoke one of your tokens (staff: anyone's); audited."""
    from .services.tokens import token_revoke

    return token_json(token_revoke(token_id=token_id, actor=request.user))
