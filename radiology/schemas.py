"""The JSON shapes of the API, which the management commands print as well.

Each ``...Out`` schema reads a model row (or a service's result) through its
attributes and resolvers, so ``/api/openapi.json`` documents exactly what an
endpoint returns, and ``manage.py denoise --json`` prints a job as ``GET
/api/jobs/{id}`` does. Records that the app stores as written (a job's
parameters, timings, metrics and provenance) are answered as stored, byte for
byte, and documented by a schema of their known keys (:class:`ProvenanceOut`,
:class:`MetricsOut`, ...) that allows more: validating them would reject or
reshape older rows. Other free-form records (an audit event's ``extra_data``, a
series' display geometry) stay ``dict``. The request bodies (``...In``) are here
too.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from ninja import Schema
from ninja.renderers import NinjaJSONEncoder
from pydantic import ConfigDict, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from dicomio.orientation import display_geometry

from . import selectors
from .models import DenoiseJob, Review
from .services.reviews import review_concerns

__all__ = [
    "AuditEventOut",
    "DenoiseIn",
    "ErrorOut",
    "FinetuneIn",
    "FinetuneQueuedOut",
    "FixityIssueOut",
    "FixityOut",
    "JobModelOut",
    "JobOut",
    "JobOutputsOut",
    "JobParamsOut",
    "JobTimingsOut",
    "MetricsOut",
    "ModelOut",
    "ProvenanceCodeOut",
    "ProvenanceHardwareOut",
    "ProvenanceModelOut",
    "ProvenanceOut",
    "ProvenanceParametersOut",
    "RejectionOut",
    "ReviewCreatedOut",
    "ReviewIn",
    "ReviewOut",
    "SeriesDetailOut",
    "SeriesOut",
    "SeriesSummaryOut",
    "StudyOut",
    "StudySeriesOut",
    "TokenCreatedOut",
    "TokenIn",
    "TokenOut",
    "UploadOut",
    "WindowOut",
    "binary_response",
    "dumps",
]


def dumps(value: Schema | list[Schema]) -> str:
    """``value`` (one schema or a list) as the API renders it (same dates and
    numbers), indented for a terminal: what the management commands print with
    ``--json``."""
    data = (
        [item.model_dump() for item in value]
        if isinstance(value, list)
        else value.model_dump()
    )
    return json.dumps(data, cls=NinjaJSONEncoder, indent=2)


class _Out(Schema):
    # The docstring under a field is its description in /api/openapi.json.
    model_config = ConfigDict(use_attribute_docstrings=True)


def binary_response(media_type: str, description: str) -> dict[str, Any]:
    """``openapi_extra`` for an endpoint whose 200 answer is bytes, not JSON
    (volumes, thumbnails, zips), so the schema still says what comes back."""
    return {
        "responses": {
            200: {
                "description": description,
                "content": {
                    media_type: {"schema": {"type": "string", "format": "binary"}}
                },
            }
        }
    }


class ErrorOut(_Out):
    """A refused request: ``detail`` says which operation and why."""

    detail: str


class ReviewOut(_Out):
    """A reviewer's verdict on a job, as listed with the job."""

    verdict: Review.Verdict
    reviewer: str
    comment: str
    strength: float
    measurements: list[dict[str, Any]]
    """ROI statistics and lengths from the viewer, kept with the verdict."""
    created_at: datetime

    @staticmethod
    def resolve_reviewer(obj: Review) -> str:
        return obj.reviewer.get_username()


class ReviewCreatedOut(ReviewOut):
    """The verdict just recorded, with its own id and its job's."""

    id: int
    job: int

    @staticmethod
    def resolve_job(obj: Review) -> int:
        return obj.job_id


class JobModelOut(_Out):
    """The model bundle a job runs: name, version and the hash of its weights."""

    name: str
    version: str
    weights_sha256: str


class JobOutputsOut(_Out):
    """SHA-256 of the stored reconstruction and residual volumes; empty until done."""

    reconstruction_sha256: str
    residual_sha256: str


class _Record(_Out):
    """A record the app stores as written: the keys it writes today, each
    optional (older rows may lack it), and whatever else a row holds."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="allow")


class _DocumentedBy:
    """``Annotated`` marker: the field's value is answered as stored, and
    /api/openapi.json documents it with ``schema``."""

    def __init__(self, schema: type[Schema]) -> None:
        self.schema = schema

    def __get_pydantic_json_schema__(
        self, field_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # Through a reference, so the schema is one named component.
        schema = self.schema.__pydantic_core_schema__
        return handler(
            core_schema.definitions_schema(
                core_schema.definition_reference_schema(schema["ref"]), [schema]
            )
        )


class ProvenanceModelOut(_Record):
    """The model bundle that ran, from its metadata."""

    name: str | None = None
    version: str | None = None
    weights_sha256: str | None = None
    """SHA-256 of the weights file, checked when the bundle was loaded."""
    network_def: dict[str, Any] | None = None
    """The network's class and arguments."""
    input_spec: dict[str, Any] | None = None
    """Spatial dims, normalisation, ROI and other input rules of the bundle."""
    training_parent: str | None = None
    """The version it was fine-tuned from; null for a base model."""
    training_mode: str | None = None
    intended_use: str | None = None
    exported_with: dict[str, str | None] | None = None
    """monai, torch and numpy versions the bundle was written with."""


class ProvenanceCodeOut(_Record):
    """The code that ran: commit and library versions (null where unknown)."""

    git_commit: str | None = None
    radiology_denoise: str | None = None
    torch: str | None = None
    monai: str | None = None
    numpy: str | None = None
    pydicom: str | None = None
    cuda: str | None = None
    cudnn: str | None = None


class ProvenanceHardwareOut(_Record):
    """Where it ran."""

    device: str | None = None
    """The torch device, e.g. ``cuda:0`` or ``cpu``."""
    device_name: str | None = None
    host: str | None = None


class ProvenanceParametersOut(_Record):
    """Everything else that shaped the output (``inference.denoise_volume``)."""

    shape: list[int] | None = None
    """The input's [z, y, x] (or [y, x]) voxels."""
    input_dtype: str | None = None
    spacing_mm: list[float] | None = None
    modality: str | None = None
    batch_size: int | None = None
    """Slices per forward pass."""
    precision_requested: str | None = None
    """``auto``, ``fp32``, ``bf16`` or ``fp16``, as asked."""
    precision_ms_per_slice: dict[str, float] | None = None
    """``auto`` on a CPU: milliseconds per slice of each precision, measured."""
    normalisation: dict[str, Any] | None = None
    """Its kind, offset and scale, resolved for this series."""
    roi_size: list[int] | None = None
    """The sliding window's size; null when the whole input ran at once."""
    window_overlap: float | None = None
    size_multiple: int | None = None
    padding: str | None = None
    noise_conditioned: bool | None = None
    """Whether the network was given the input's noise estimate."""
    residual_limit: dict[str, Any] | None = None
    """How far the output may depart from the input, in local noise SDs."""
    keep_low_frequencies: dict[str, Any] | None = None
    """Content coarser than ``sigma_mm`` is kept from the input."""
    noise_sd_estimate: dict[str, Any] | None = None
    """The input's noise SD over slices: method, median, min and max."""
    fp32_below_noise: float | None = None
    """Noise SD below which slices ran in fp32 instead of the reduced precision."""
    fp32_slices: int | None = None
    """How many slices that was."""


def _with_schema_key(schema: dict[str, Any]) -> None:
    schema["properties"] = {
        "schema": {
            "anyOf": [{"type": "string"}, {"type": "null"}],
            "default": None,
            "description": "The record's format, ``radiology-denoise-provenance/1``.",
            "title": "Schema",
        },
        **schema["properties"],
    }


class ProvenanceOut(_Record):
    """How a succeeded job's outputs were made (``inference.build_provenance``,
    completed by the job service); empty until the job has succeeded."""

    # A field named "schema" would shadow pydantic's BaseModel.schema().
    model_config = ConfigDict(json_schema_extra=_with_schema_key)

    model: ProvenanceModelOut | None = None
    code: ProvenanceCodeOut | None = None
    hardware: ProvenanceHardwareOut | None = None
    precision: str | None = None
    """The precision that ran: ``fp32``, ``bf16`` or ``fp16``."""
    parameters: ProvenanceParametersOut | None = None
    input_sha256: str | None = None
    """SHA-256 of the input volume's array."""
    output_sha256: str | None = None
    """SHA-256 of the reconstruction's array."""
    started_at: str | None = None
    """ISO-8601 UTC, as the engine wrote it."""
    finished_at: str | None = None
    timings_s: dict[str, float] | None = None
    """Seconds per engine stage (load, preprocess, infer, postprocess, total)."""
    job: int | None = None
    requested_by: str | None = None
    worker: str | None = None
    attempt: int | None = None
    input_volume_sha256: str | None = None
    """SHA-256 of the stored input volume file."""
    reconstruction_file_sha256: str | None = None
    residual_file_sha256: str | None = None
    series_instance_uid: str | None = None
    series_modality: str | None = None
    modality_override: bool | None = None
    """Whether the job ran a model on another modality than its own."""


class MetricsOut(_Record):
    """What the denoising did to the series (``inference.metrics.summarise``);
    empty until the job has succeeded. Noise and residual values are in the
    series' units."""

    noise_sd_before: float | None = None
    """Median over slices of the input's noise SD."""
    noise_sd_after: float | None = None
    noise_reduction_ratio: float | None = None
    """before / after: 3.0 is a three-fold drop; null when no noise is left."""
    residual_mean: float | None = None
    residual_sd: float | None = None
    structure_score_max: float | None = None
    """The largest edge energy ratio of the residual over slices."""
    structure_threshold: float | None = None
    anatomy_correlation_max: float | None = None
    anatomy_threshold: float | None = None
    flagged_slices: list[int] | None = None
    """Slices whose residual shows structure or anatomy (above a threshold)."""
    n_slices: int | None = None
    per_slice: dict[str, list[float | None]] | None = None
    """The per-slice values behind the summary."""
    ood: dict[str, float | None] | None = None
    """Median input statistics compared with the model's training data."""


class JobParamsOut(_Record):
    """The parameters a job was requested with, defaults filled in."""

    precision: str | None = None
    """``auto``, ``fp32``, ``bf16`` or ``fp16``."""
    batch_size: int | None = None
    """Slices per forward pass; null lets the engine choose."""
    allow_modality_mismatch: bool | None = None
    """Run a model on a series of another modality anyway."""


class JobTimingsOut(_Record):
    """Seconds per stage: the job's own stages and the engine's inside
    ``denoise``; empty until the job has succeeded."""

    load_model: float | None = None
    read_volume: float | None = None
    denoise: float | None = None
    """The engine's call, which ``load``, ``preprocess``, ``infer`` and
    ``postprocess`` divide."""
    write_outputs: float | None = None
    """Flushing and linking the reconstruction and residual files."""
    load: float | None = None
    preprocess: float | None = None
    infer: float | None = None
    postprocess: float | None = None
    total: float | None = None
    """The whole job, from loading the model to linking the outputs."""


class JobOut(_Out):
    """A denoise job: its state, model, parameters, results and reviews."""

    id: int
    series: int
    status: DenoiseJob.Status
    progress: float
    """0..1, rounded to 4 places."""
    progress_message: str
    model: JobModelOut
    params: Annotated[dict[str, Any], _DocumentedBy(JobParamsOut)]
    attempts: int
    error: str
    worker: str
    requested_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    timings_s: Annotated[dict[str, Any], _DocumentedBy(JobTimingsOut)]
    """Seconds per stage of the run; empty until the job has succeeded."""
    metrics: Annotated[dict[str, Any], _DocumentedBy(MetricsOut)]
    """Noise before and after, residual statistics, flagged slices; empty until
    the job has succeeded."""
    provenance: Annotated[dict[str, Any], _DocumentedBy(ProvenanceOut)]
    """Model, weights hash, parameters, code and library versions, input and
    output hashes; empty until the job has succeeded."""
    warnings: list[str]
    review_concerns: list[str]
    """Why an Accept needs a comment (flagged slices, OOD or modality warnings)."""
    outputs: JobOutputsOut
    reviews: list[ReviewOut]

    @staticmethod
    def resolve_series(obj: DenoiseJob) -> int:
        return obj.series_id

    @staticmethod
    def resolve_progress(obj: DenoiseJob) -> float:
        return round(obj.progress, 4)

    @staticmethod
    def resolve_model(obj: DenoiseJob) -> dict[str, str]:
        return {
            "name": obj.model_name,
            "version": obj.model_version,
            "weights_sha256": obj.weights_sha256,
        }

    @staticmethod
    def resolve_requested_by(obj: DenoiseJob) -> str | None:
        return obj.requested_by.get_username() if obj.requested_by else None

    @staticmethod
    def resolve_review_concerns(obj: DenoiseJob) -> list[str]:
        return review_concerns(obj)

    @staticmethod
    def resolve_outputs(obj: DenoiseJob) -> dict[str, str]:
        return {
            "reconstruction_sha256": obj.reconstruction_sha256,
            "residual_sha256": obj.residual_sha256,
        }

    @staticmethod
    def resolve_reviews(obj: DenoiseJob) -> list[Review]:
        return selectors.job_reviews(obj)


class WindowOut(_Out):
    """A display window the scan carries (DICOM Window Center/Width)."""

    center: float
    width: float
    explanation: str


class SeriesSummaryOut(_Out):
    """A stored series as ingest reports it: geometry, flags and how to show it."""

    id: int
    modality: str
    shape: list[int]
    """[z, y, x] voxels."""
    spacing: list[float]
    """[z, y, x] millimetres."""
    instances: int
    series_instance_uid: str
    description: str
    derived: bool
    scanner_derived: bool
    warnings: list[str]
    windows: list[WindowOut]
    """The scan's own display windows."""
    display: dict[str, Any]
    """How the viewer shows it: planes in the radiological convention, their
    labels and edge letters, whether reformats hold (dicomio/orientation.py)."""

    @staticmethod
    def resolve_spacing(obj) -> list[float]:
        return obj.spacing_mm

    @staticmethod
    def resolve_instances(obj) -> int:
        return obj.instance_count

    @staticmethod
    def resolve_display(obj) -> dict[str, Any]:
        return display_geometry(
            obj.orientation, obj.shape, obj.warnings, obj.origin_mm, obj.spacing_mm
        )


class StudyOut(_Out):
    """The study a series belongs to."""

    id: int
    study_instance_uid: str
    description: str
    patient_id: str
    patient_name: str
    patient_display: str
    """As people write it ("FAMILY, GIVEN"), else the ID: one rule for every page."""
    study_date: str
    """DICOM DA (YYYYMMDD) as stored."""
    study_date_iso: str
    """The study date as YYYY-MM-DD (other text as it is)."""


class FixityIssueOut(_Out):
    """A stored file whose bytes no longer hash as recorded (or that is gone)."""

    role: str
    file: str
    detected_at: datetime
    missing: bool

    @staticmethod
    def resolve_missing(obj) -> bool:
        return not obj.actual_sha256


class FixityOut(_Out):
    """Whether every stored file of the series still hashes as recorded."""

    ok: bool
    issues: list[FixityIssueOut]


class SeriesOut(SeriesSummaryOut):
    """A series as listed: its study, latest job and fixity state."""

    study: StudyOut
    created_at: datetime
    latest_job: JobOut | None
    fixity: FixityOut

    @staticmethod
    def resolve_latest_job(obj) -> DenoiseJob | None:
        return selectors.latest_job(obj)

    @staticmethod
    def resolve_fixity(obj) -> dict[str, Any]:
        issues = selectors.open_fixity_issues(obj)
        return {"ok": not issues, "issues": issues}


class StudySeriesOut(_Out):
    """Another series of the same study, for the viewer's study strip."""

    id: int
    modality: str
    description: str
    shape: list[int]
    compare_job: int | None
    """The newest current succeeded job, to compare with; none without one."""

    @staticmethod
    def resolve_description(obj) -> str:
        return obj.description or obj.series_instance_uid

    @staticmethod
    def resolve_compare_job(obj) -> int | None:
        return next(
            (
                j.pk
                for j in obj.jobs.order_by("-created_at")
                if j.status == DenoiseJob.Status.SUCCEEDED and j.is_current
            ),
            None,
        )


class SeriesDetailOut(SeriesOut):
    """One series with all its jobs, newest first, and the other series of its
    study that the caller may see (``context["study_series"]``)."""

    jobs: list[JobOut]
    study_series: list[StudySeriesOut]

    @staticmethod
    def resolve_jobs(obj):
        return obj.jobs.order_by("-created_at")

    @staticmethod
    def resolve_study_series(obj, context):
        return context["study_series"]


class RejectionOut(_Out):
    """A file that was not stored, and why; ``duplicate`` when it is the same
    image as one stored (kept once, not an error)."""

    name: str
    reason: str
    duplicate: bool = False


class UploadOut(_Out):
    """What an upload (or ``manage.py ingest``) stored and what it refused."""

    upload: str
    """The upload's UID, as in its audit events."""
    series: list[SeriesSummaryOut]
    rejected: list[RejectionOut]

    @staticmethod
    def resolve_upload(obj) -> str:
        return str(obj.upload.uid)

    @staticmethod
    def resolve_rejected(obj) -> list[dict[str, Any]]:
        return obj.rejections


class AuditEventOut(_Out):
    """One link of the audit chain."""

    id: int
    created_at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    study: int | None
    extra_data: dict[str, Any]
    prev_hash: str
    hash: str

    @staticmethod
    def resolve_actor(obj) -> str:
        return obj.actor_name

    @staticmethod
    def resolve_study(obj) -> int | None:
        return obj.study_id


class ModelOut(_Out):
    """A registered model bundle (``inference.list_models``)."""

    name: str
    version: str
    sha256: str
    """SHA-256 of the weights, from the bundle's metadata."""
    default: bool
    modality: str
    description: str


class FinetuneQueuedOut(_Out):
    """A fine-tuning run handed to a worker; its outcome goes to the audit log."""

    queued: bool
    series: list[int]
    minutes: float
    result: str


class TokenOut(_Out):
    """An API token; its key is never shown again after creation."""

    id: int
    name: str
    owner: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @staticmethod
    def resolve_owner(obj) -> str:
        return obj.user.get_username()


class TokenCreatedOut(TokenOut):
    """A new token with its key (``context["key"]``), shown in this answer only:
    the row keeps only the key's hash."""

    key: str

    @staticmethod
    def resolve_key(obj, context) -> str:
        return context["key"]


class DenoiseIn(Schema):
    """The optional body of a denoise request."""

    model: str | None = None
    params: dict | None = None


class ReviewIn(Schema):
    """A reviewer's verdict on a job."""

    verdict: Review.Verdict
    comment: str = ""
    strength: float = 1.0
    # ROI statistics and lengths from the viewer, kept with the verdict.
    measurements: list[dict] = []


class FinetuneIn(Schema):
    """The series to fine-tune the default CT model on, and for how long."""

    series: list[int]
    minutes: float = 10.0


class TokenIn(Schema):
    """A new API token: its name and, optionally, its lifetime in days."""

    name: str = "default"
    days: int | None = None
