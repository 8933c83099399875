"""Database models: studies, series, instances, denoise jobs, reviews, audit log."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.db.models import Q
from django.urls import reverse

from .errors import AuditImmutableError


class StudyQuerySet(models.QuerySet):
    def visible_to(self, user) -> StudyQuerySet:
        """Studies the user owns or that are shared with one of the user's groups."""
        if not user.is_authenticated:
            return self.none()
        return self.filter(Q(owner=user) | Q(group__in=user.groups.all())).distinct()


class Study(models.Model):
    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    study_instance_uid = models.CharField(max_length=64)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="studies"
    )
    group = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.SET_NULL, related_name="studies"
    )
    patient_id = models.CharField(max_length=64, blank=True)
    # DICOM Patient's Name as written (parts separated by "^").
    patient_name = models.CharField(max_length=324, blank=True)
    description = models.CharField(max_length=256, blank=True)
    study_date = models.CharField(max_length=8, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = StudyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "studies"
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "study_instance_uid"], name="unique_study_per_owner"
            )
        ]

    def __str__(self) -> str:
        return self.description or self.study_instance_uid

    @property
    def study_date_iso(self) -> str:
        """The DICOM date ``YYYYMMDD`` as ``YYYY-MM-DD`` (other text as it is)."""
        d = self.study_date
        return f"{d[:4]}-{d[4:6]}-{d[6:]}" if len(d) == 8 and d.isdigit() else d

    @property
    def patient_display(self) -> str:
        """Patient's Name as people write it ("DOE, JANE"), else the Patient ID."""
        parts = [part.strip() for part in self.patient_name.split("=")[0].split("^")]
        family, rest = parts[0], " ".join(p for p in parts[1:] if p)
        name = f"{family}, {rest}" if family and rest else family or rest
        return name or self.patient_id


class SeriesQuerySet(models.QuerySet):
    def visible_to(self, user) -> SeriesQuerySet:
        return self.filter(study__in=Study.objects.visible_to(user))


class Series(models.Model):
    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="series")
    series_instance_uid = models.CharField(max_length=64)
    modality = models.CharField(max_length=16)
    description = models.CharField(max_length=256, blank=True)
    shape = models.JSONField(help_text="[z, y, x] voxels")
    spacing_mm = models.JSONField(help_text="[z, y, x] millimetres")
    origin_mm = models.JSONField(default=list)
    orientation = models.JSONField(default=list)
    instance_count = models.PositiveIntegerField()
    volume_file = models.CharField(max_length=255, help_text="storage name of the .npy")
    volume_sha256 = models.CharField(max_length=64)
    warnings = models.JSONField(default=list)
    derived = models.BooleanField(
        default=False,
        help_text="this app's own denoised or residual output: never denoised again",
    )
    scanner_derived = models.BooleanField(
        default=False,
        help_text="ImageType DERIVED from elsewhere (a scanner's MPR, another tool): "
        "may be denoised, and the pages say it is processed already",
    )
    # The scan's own display windows: [{"center", "width", "explanation"}] (HU on CT).
    windows = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = SeriesQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "series"
        constraints = [
            models.UniqueConstraint(
                fields=["study", "series_instance_uid"], name="unique_series_per_study"
            )
        ]

    def __str__(self) -> str:
        return f"{self.modality} {self.description or self.series_instance_uid}"

    def get_absolute_url(self) -> str:
        return reverse("series-detail", args=[self.pk])

    @property
    def open_fixity_issues(self):
        """Files of this series that failed the last fixity check and are not fixed."""
        return self.fixity_issues.filter(resolved_at__isnull=True)


class Instance(models.Model):
    series = models.ForeignKey(
        Series, on_delete=models.PROTECT, related_name="instances"
    )
    sop_instance_uid = models.CharField(max_length=64)
    sop_class_uid = models.CharField(max_length=64, blank=True)
    original_name = models.CharField(max_length=255)
    file = models.CharField(
        max_length=255, help_text="storage name of the original bytes"
    )
    sha256 = models.CharField(max_length=64)
    size_bytes = models.PositiveBigIntegerField()
    slice_index = models.PositiveIntegerField(
        help_text="first slice of the volume it fills"
    )
    frame_count = models.PositiveIntegerField(default=1)
    frame_slices = models.JSONField(
        null=True,
        blank=True,
        help_text="multi-frame only: per frame (0-based), the volume slice it "
        "fills, or null for a frame the volume left out",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["series", "slice_index"]
        constraints = [
            models.UniqueConstraint(
                fields=["series", "sop_instance_uid"], name="unique_instance_per_series"
            )
        ]

    def __str__(self) -> str:
        return self.sop_instance_uid


class Upload(models.Model):
    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="uploads"
    )
    file_count = models.PositiveIntegerField(default=0)
    accepted_count = models.PositiveIntegerField(default=0)
    rejections = models.JSONField(default=list, help_text='[{"name", "reason"}]')
    series = models.ManyToManyField(Series, blank=True, related_name="uploads")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"upload {self.uid}"


class DenoiseJob(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    series = models.ForeignKey(Series, on_delete=models.PROTECT, related_name="jobs")
    model_name = models.CharField(max_length=64)
    model_version = models.CharField(max_length=32)
    weights_sha256 = models.CharField(max_length=64)
    params = models.JSONField(default=dict)
    params_sha256 = models.CharField(max_length=64)
    input_sha256 = models.CharField(max_length=64)
    input_volume_file = models.CharField(
        max_length=255, blank=True, help_text="the exact volume .npy this job reads"
    )
    status = models.CharField(max_length=16, choices=Status, default=Status.QUEUED)
    progress = models.FloatField(default=0.0)
    progress_message = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    claim = models.CharField(
        max_length=64, blank=True, help_text="token of the attempt"
    )
    worker = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    reconstruction_file = models.CharField(max_length=255, blank=True)
    reconstruction_sha256 = models.CharField(max_length=64, blank=True)
    residual_file = models.CharField(max_length=255, blank=True)
    residual_sha256 = models.CharField(max_length=64, blank=True)
    timings_s = models.JSONField(default=dict)
    metrics = models.JSONField(default=dict)
    provenance = models.JSONField(default=dict)
    warnings = models.JSONField(default=list)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One job, so one output, per input volume, model weights and parameters.
            models.UniqueConstraint(
                fields=["series", "input_sha256", "weights_sha256", "params_sha256"],
                name="one_job_per_input_model_params",
            ),
            models.CheckConstraint(
                condition=Q(progress__gte=0.0) & Q(progress__lte=1.0),
                name="progress_between_0_and_1",
            ),
        ]

    def __str__(self) -> str:
        return f"job {self.pk} {self.model_name}:{self.model_version} {self.status}"

    @property
    def is_current(self) -> bool:
        """False when the series' volume changed (new slices) after this job."""
        return self.series.volume_sha256 == self.input_sha256

    @property
    def is_finished(self) -> bool:
        return self.status in {
            self.Status.SUCCEEDED,
            self.Status.FAILED,
            self.Status.CANCELLED,
        }


class FixityIssue(models.Model):
    """A stored file that no longer hashes to what was recorded (or is missing)."""

    series = models.ForeignKey(
        Series, on_delete=models.PROTECT, related_name="fixity_issues"
    )
    file = models.CharField(max_length=255)
    role = models.CharField(
        max_length=32, help_text="original, volume, reconstruction, residual"
    )
    expected_sha256 = models.CharField(max_length=64)
    actual_sha256 = models.CharField(
        max_length=64, blank=True, help_text="blank: missing"
    )
    detected_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-detected_at"]

    def __str__(self) -> str:
        return f"{self.role} {self.file}: fixity failure"


class Review(models.Model):
    class Verdict(models.TextChoices):
        ACCEPT = "accept"
        REJECT = "reject"
        NEEDS_REVIEW = "needs_review"

    job = models.ForeignKey(
        DenoiseJob, on_delete=models.PROTECT, related_name="reviews"
    )
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews"
    )
    verdict = models.CharField(max_length=16, choices=Verdict)
    comment = models.TextField(blank=True)
    strength = models.FloatField(default=1.0, help_text="alpha of the denoised blend")
    measurements = models.JSONField(
        default=list,
        blank=True,
        help_text="ROI statistics and lengths the reviewer attached "
        "(services.reviews.clean_measurements)",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(strength__gte=0.0) & Q(strength__lte=1.0),
                name="strength_between_0_and_1",
            )
        ]

    def __str__(self) -> str:
        return f"{self.verdict} by {self.reviewer} on job {self.job_id}"


class ApiToken(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, default="default")
    key_sha256 = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="refused from then on (API_TOKEN_LIFETIME_DAYS)",
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"token {self.name} of {self.user}"

    def usable(self, now) -> bool:
        """Not revoked, not expired, and its user active."""
        return (
            self.revoked_at is None
            and (self.expires_at is None or now < self.expires_at)
            and self.user.is_active
        )


class AuthFailure(models.Model):
    """One failed sign-in or bad API token (services/throttle.py counts them)."""

    class Scope(models.TextChoices):
        ACCOUNT = "account"
        ADDRESS = "address"

    scope = models.CharField(max_length=16, choices=Scope)
    key = models.CharField(max_length=150, help_text="user name or client address")
    at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [models.Index(fields=["scope", "key", "at"])]

    def __str__(self) -> str:
        return f"failed sign-in for {self.scope} {self.key} at {self.at}"


class AuditQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AuditImmutableError("audit events are append-only: update refused")

    def delete(self):
        raise AuditImmutableError("audit events are append-only: delete refused")


class AuditRecord(models.Model):
    """What an audit event says (who, what, on what), as appended or queued."""

    class Action(models.TextChoices):
        UPLOAD = "upload"
        INGEST = "ingest"
        SERIES_UPDATED = "series.updated"
        REJECTION = "rejection"
        JOB_REQUESTED = "job.requested"
        JOB_STARTED = "job.started"
        JOB_SUCCEEDED = "job.succeeded"
        JOB_FAILED = "job.failed"
        JOB_REQUEUED = "job.requeued"
        JOB_CANCELLED = "job.cancelled"
        REVIEW = "review"
        EXPORT = "export"
        AUDIT_READ = "audit.read"
        ACCESS_DENIED = "access.denied"
        FIXITY = "fixity"
        MODEL_FINETUNE = "model.finetune"
        MODEL_FINETUNED = "model.finetuned"
        AUTH_LOCKOUT = "auth.lockout"
        TOKEN_CREATED = "token.created"
        TOKEN_REVOKED = "token.revoked"
        TOKEN_USED = "token.used"

    created_at = models.DateTimeField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
    )
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=32, choices=Action)
    target_type = models.CharField(max_length=32, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    study = models.ForeignKey(
        Study,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_constraint=False,
        help_text="for access filtering of the log",
    )
    extra_data = models.JSONField(default=dict)

    class Meta:
        abstract = True


class AuditEvent(AuditRecord):
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)
    key_id = models.CharField(
        max_length=16,
        blank=True,
        help_text="the audit key whose HMAC ``hash`` is; empty: a plain SHA-256 "
        "from before keyed hashing",
    )
    queued_as = models.CharField(
        max_length=32,
        blank=True,
        help_text="the nonce of the queued access event this was folded from "
        "(AuditQueuedEvent); empty: appended directly",
    )

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["queued_as"],
                condition=~Q(queued_as=""),
                name="radiology_audit_folded_once",
            )
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.action} {self.target_type}:{self.target_id}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AuditImmutableError(f"audit event {self.pk} is append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AuditImmutableError(f"audit event {self.pk} is append-only")


class AuditQueuedEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AuditImmutableError("queued audit events are signed: update refused")


class AuditQueuedEvent(AuditRecord):
    """An access event written while the chain head was locked by a write.

    Signed under the audit key (``mac`` covers every field, the nonce and the chain
    id), it waits here until it is folded into the chain in id order and deleted in
    the same transaction (radiology/audit/queue.py).
    """

    nonce = models.CharField(max_length=32, unique=True)
    chain_id = models.CharField(max_length=32)
    key_id = models.CharField(max_length=16)
    mac = models.CharField(max_length=64)

    objects = AuditQueuedEventQuerySet.as_manager()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"queued {self.nonce} {self.action} {self.target_type}:{self.target_id}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AuditImmutableError(f"queued audit event {self.pk} is signed")
        super().save(*args, **kwargs)


class AuditChainHead(models.Model):
    """One row, locked while an event is appended, so writers never fork the chain."""

    last_hash = models.CharField(max_length=64)
    count = models.PositiveBigIntegerField(default=0)
    chain_id = models.CharField(
        max_length=32,
        blank=True,
        help_text="random id, signed into every keyed event and checkpoint",
    )
    unkeyed_count = models.PositiveBigIntegerField(
        default=0, help_text="events at the chain's start that predate keyed hashing"
    )

    def __str__(self) -> str:
        return f"audit head {self.count}"
