"""Reads that are more than a get: access-checked lookups and the audit log query."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db.models import Prefetch, Q, QuerySet
from django.http import Http404

from .audit import audit_record
from .models import (
    AuditEvent,
    DenoiseJob,
    FixityIssue,
    Instance,
    Review,
    Series,
    Study,
)


def _denied(user, kind: str, pk, *, exists: bool = True, via: str = "") -> Http404:
    """Record the attempt and answer 404. Missing and someone else's objects look
    the same to the user: the same answer, one audit event written either way
    (similar timing), and ``access.denied`` events are for staff only, so the
    user cannot read which it was. ``via`` names the interface when it is not the
    app's own (``"dicomweb"``)."""
    extra_data: dict = {
        "reason": "not owner or group member" if exists else "no such object",
        "exists": exists,
    }
    if via:
        extra_data["via"] = via
    audit_record(
        action=AuditEvent.Action.ACCESS_DENIED,
        actor=user,
        target_type=kind,
        target_id=str(pk)[:64],
        extra_data=extra_data,
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


def series_in_study_for(user, study_id: int) -> QuerySet[Series]:
    """The series of a study that the user may see, oldest first."""
    return (
        Series.objects.visible_to(user)
        .filter(study_id=study_id)
        .order_by("created_at", "pk")
    )


# DICOMweb names studies, series and instances by their DICOM UIDs. One UID may be
# stored more than once (several owners, re-uploads), so lookups answer every
# visible row and the instances are de-duplicated by SOP Instance UID.


def visible_series(user) -> QuerySet[Series]:
    return Series.objects.visible_to(user).select_related("study")


def series_of_study_uid(user, study_uid: str) -> QuerySet[Series]:
    """The visible series of the study ``study_uid``; 404 (audited) if none."""
    qs = visible_series(user).filter(study__study_instance_uid=study_uid)
    if not qs.exists():
        exists = Study.objects.filter(study_instance_uid=study_uid).exists()
        raise _denied(user, "study", study_uid, exists=exists, via="dicomweb")
    return qs


def series_of_uid(user, study_uid: str, series_uid: str) -> list[Series]:
    """The visible series ``series_uid`` of study ``study_uid``; 404 if none."""
    found = list(
        series_of_study_uid(user, study_uid).filter(series_instance_uid=series_uid)
    )
    if not found:
        exists = Series.objects.filter(series_instance_uid=series_uid).exists()
        raise _denied(user, "series", series_uid, exists=exists, via="dicomweb")
    return found


def unique_instances(series_rows: Iterable[Series]) -> list[Instance]:
    """Instances of the series, one per SOP Instance UID, in slice order."""
    seen: dict[str, Instance] = {}
    rows = Instance.objects.filter(series__in=list(series_rows)).select_related(
        "series__study"
    )
    for instance in rows.order_by("series_id", "slice_index"):
        seen.setdefault(instance.sop_instance_uid, instance)
    return list(seen.values())


def instance_of_uid(user, study_uid: str, series_uid: str, sop_uid: str) -> Instance:
    """The visible instance ``sop_uid`` of that study and series; 404 if none."""
    found = [
        i
        for i in unique_instances(series_of_uid(user, study_uid, series_uid))
        if i.sop_instance_uid == sop_uid
    ]
    if not found:
        exists = Instance.objects.filter(sop_instance_uid=sop_uid).exists()
        raise _denied(user, "instance", sop_uid, exists=exists, via="dicomweb")
    return found[0]


def stored_sop_instance_uids(user, sop_uids: Iterable[str]) -> set[str]:
    """Which of ``sop_uids`` are stored in a series the user may see."""
    return set(
        Instance.objects.filter(
            series__in=Series.objects.visible_to(user),
            sop_instance_uid__in=list(sop_uids),
        ).values_list("sop_instance_uid", flat=True)
    )


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
