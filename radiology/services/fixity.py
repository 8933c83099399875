"""Fixity: re-hash stored originals, volumes and outputs; record and audit changes."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from ..audit import audit_record
from ..models import AuditEvent, DenoiseJob, FixityIssue, Instance, Series
from ..storage import file_sha256, media_path


@dataclass
class FixityReport:
    checked: int = 0
    issues: list[FixityIssue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.issues


def _stored_files(series_qs):
    for series in series_qs:
        yield series, series.volume_file, series.volume_sha256, "volume"
    instances = Instance.objects.filter(series__in=series_qs).select_related("series")
    for inst in instances.iterator(chunk_size=2000):
        yield inst.series, inst.file, inst.sha256, "original"
    jobs = DenoiseJob.objects.filter(
        series__in=series_qs, status=DenoiseJob.Status.SUCCEEDED
    ).select_related("series")
    for job in jobs:
        yield (
            job.series,
            job.reconstruction_file,
            job.reconstruction_sha256,
            "reconstruction",
        )
        yield job.series, job.residual_file, job.residual_sha256, "residual"


def fixity_check(*, series: Series | None = None, actor=None) -> FixityReport:
    """Re-hash every stored file (of one series, or all); open an issue per mismatch.

    A file already reported and still wrong is not reported twice; a reported file
    that hashes right again (restored from backup) has its issue resolved.
    """
    series_qs = Series.objects.filter(pk=series.pk) if series else Series.objects.all()
    report = FixityReport()
    for owner_series, name, expected, role in _stored_files(series_qs):
        report.checked += 1
        path = media_path(name)
        actual = file_sha256(name) if path.exists() else ""
        open_issue = FixityIssue.objects.filter(
            series=owner_series, file=name, resolved_at__isnull=True
        ).first()
        if actual == expected:
            if open_issue:
                with transaction.atomic():
                    open_issue.resolved_at = timezone.now()
                    open_issue.save(update_fields=["resolved_at"])
                    audit_record(
                        action=AuditEvent.Action.FIXITY,
                        actor=actor,
                        target=owner_series,
                        study=owner_series.study,
                        extra_data={"file": name, "role": role, "resolved": True},
                    )
            continue
        if open_issue is None:
            with transaction.atomic():
                open_issue = FixityIssue.objects.create(
                    series=owner_series,
                    file=name,
                    role=role,
                    expected_sha256=expected,
                    actual_sha256=actual,
                )
                audit_record(
                    action=AuditEvent.Action.FIXITY,
                    actor=actor,
                    target=owner_series,
                    study=owner_series.study,
                    extra_data={
                        "file": name,
                        "role": role,
                        "expected_sha256": expected,
                        "actual_sha256": actual or None,
                    },
                )
        report.issues.append(open_issue)
    return report
