"""Reads that are more than a get: access-checked lookups and the audit log query."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Prefetch, Q, QuerySet
from django.http import Http404

from .audit import audit_record
from .models import AuditEvent, DenoiseJob, FixityIssue, Review, Series, Study


def _denied(user, kind: str, pk, *, exists: bool = True) -> Http404:
    """Record the attempt and answer 404. Missing and someone else's objects look
    the same to the user: the same answer, one audit event written either way
    (similar timing), and ``access.denied`` events are for staff only, so the
    user cannot read which it was."""
    audit_record(
        action=AuditEvent.Action.ACCESS_DENIED,
        actor=user,
        target_type=kind,
        target_id=str(pk),
        extra_data={
            "reason": "not owner or group member" if exists else "no such object",
            "exists": exists,
        },
    )
    return Http404(f"no {kind} {pk}")


def series_for(user, pk: int) -> Series:
    series = (
        Series.objects.visible_to(user).select_related("study").filter(pk=pk).first()
    )
    if series is None:
        raise _denied(user, "series", pk, exists=Series.objects.filter(pk=pk).exists())
    return series


def job_for(user, pk: int) -> DenoiseJob:
    job = (
        DenoiseJob.objects.filter(series__in=Series.objects.visible_to(user), pk=pk)
        .select_related("series__study", "requested_by")
        .first()
    )
    if job is None:
        exists = DenoiseJob.objects.filter(pk=pk).exists()
        raise _denied(user, "denoisejob", pk, exists=exists)
    return job


def series_list(
    user,
    *,
    search: str = "",
    modality: str = "",
    status: str = "",
) -> QuerySet[Series]:
    qs = Series.objects.visible_to(user).select_related("study")
    if search:
        qs = qs.filter(
            Q(description__icontains=search)
            | Q(study__description__icontains=search)
            | Q(study__patient_id__icontains=search)
            | Q(series_instance_uid__icontains=search)
        )
    if modality:
        qs = qs.filter(modality__iexact=modality)
    if status:
        qs = qs.filter(jobs__status=status).distinct()
    return _with_listing(qs.order_by("-created_at"))


def _with_listing(qs: QuerySet[Series]) -> QuerySet[Series]:
    """Everything a series listing shows (its jobs newest first, with requester and
    reviews, and its open fixity issues) in a fixed number of queries, instead of
    four per series."""
    jobs = (
        DenoiseJob.objects.select_related("requested_by")
        .prefetch_related(
            Prefetch(
                "reviews",
                queryset=Review.objects.select_related("reviewer"),
                to_attr="reviews_listed",
            )
        )
        .order_by("-created_at")
    )
    return qs.prefetch_related(
        Prefetch("jobs", queryset=jobs, to_attr="jobs_newest_first"),
        Prefetch(
            "fixity_issues",
            queryset=FixityIssue.objects.filter(resolved_at__isnull=True),
            to_attr="open_fixity_list",
        ),
    )


def latest_job(series: Series) -> DenoiseJob | None:
    newest_first = getattr(series, "jobs_newest_first", None)
    if newest_first is not None:  # fetched with the listing
        return newest_first[0] if newest_first else None
    return series.jobs.order_by("-created_at").first()


def open_fixity_issues(series: Series) -> list[FixityIssue]:
    listed = getattr(series, "open_fixity_list", None)
    return list(series.open_fixity_issues) if listed is None else listed


def job_reviews(job: DenoiseJob) -> list[Review]:
    """The job's reviews with their reviewers: fetched with the listing, else now."""
    listed = getattr(job, "reviews_listed", None)
    return list(job.reviews.select_related("reviewer")) if listed is None else listed


def audit_events_for(
    user,
    *,
    action: str = "",
    target_type: str = "",
    target_id: str = "",
    actor: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 200,
    offset: int = 0,
) -> list[AuditEvent]:
    """Audit events the user may read; reading them is itself recorded.

    Staff read everything; others read events about studies they can see and their
    own actions.
    """
    qs = AuditEvent.objects.all()
    if not user.is_staff:
        qs = qs.filter(
            Q(study__in=Study.objects.visible_to(user)) | Q(actor=user)
        ).exclude(action=AuditEvent.Action.ACCESS_DENIED)
    if action:
        qs = qs.filter(action=action)
    if target_type:
        qs = qs.filter(target_type=target_type)
    if target_id:
        qs = qs.filter(target_id=target_id)
    if actor:
        qs = qs.filter(actor_name=actor)
    if since:
        qs = qs.filter(created_at__gte=since)
    if until:
        qs = qs.filter(created_at__lt=until)
    events = list(qs.order_by("-id")[offset : offset + limit])
    audit_record(
        action=AuditEvent.Action.AUDIT_READ,
        actor=user,
        target_type="audit",
        extra_data={
            "filters": {
                "action": action,
                "target_type": target_type,
                "target_id": target_id,
                "actor": actor,
                "since": since.isoformat() if since else None,
                "until": until.isoformat() if until else None,
            },
            "returned": len(events),
        },
    )
    return events
