"""Export service: a job's denoised (and residual) volume as derived DICOM series."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pydicom
from django.db import transaction
from django.utils import timezone

from dicomio.derived import (
    DENOISED,
    RESIDUAL,
    UID_ROOT,
    DerivedSeriesError,
    Provenance,
    build_derived_series,
    deidentify_series,
    to_bytes,
)
from dicomio.frames import ClassicConversionError, FrameSource, frame_sources

from ..audit import audit_record, canonical_json
from ..errors import ExportError
from ..models import AuditEvent, DenoiseJob
from ..storage import load_array, media_path

__all__ = ["ExportError", "ExportResult", "ExportedSeries", "series_export"]


@dataclass(frozen=True)
class ExportedSeries:
    kind: str
    series_instance_uid: str
    folder: Path
    files: list[Path]


@dataclass
class ExportResult:
    """What an export wrote.

    Args:
        job: the exported job.
        out_dir: the folder holding one sub-folder per series.
        series: the series written (denoised first, then the residual).
        deidentified: whether the PS3.15 basic profile was applied.
        manifest_sha256: SHA-256 over the files' names and SHA-256s, as audited.
    """

    job: DenoiseJob
    out_dir: Path
    series: list[ExportedSeries] = field(default_factory=list)
    deidentified: bool = False
    manifest_sha256: str = ""

    @property
    def files(self) -> list[Path]:
        return [path for s in self.series for path in s.files]


def _software_version() -> str:
    try:
        return metadata.version("radiology-denoise")
    except metadata.PackageNotFoundError:
        return "unknown"


def _provenance(job: DenoiseJob, kind: str) -> Provenance:
    created = job.finished_at or timezone.now()
    return Provenance(
        model_name=job.model_name,
        model_version=job.model_version,
        weights_sha256=job.weights_sha256,
        output_sha256=(
            job.reconstruction_sha256 if kind == DENOISED else job.residual_sha256
        ),
        created=timezone.localtime(created),
        software_version=_software_version(),
        parameters=dict(job.params),
        record=canonical_json(job.provenance),
    )


def _source_headers(job: DenoiseJob) -> list[FrameSource]:
    """Per volume slice, its source header: a classic instance, or the classic form
    of the enhanced instance's frame that fills it."""
    n_slices = int(job.series.shape[0])
    slots: list[FrameSource | None] = [None] * n_slices
    for instance in job.series.instances.order_by("slice_index"):
        with open(media_path(instance.file), "rb") as handle:
            header = pydicom.dcmread(handle, stop_before_pixels=True)
        try:
            frames = frame_sources(header)
        except ClassicConversionError as exc:
            raise ExportError(
                f"export: instance {instance.sop_instance_uid}: {exc}"
            ) from exc
        order = instance.frame_slices or _slices_by_position(
            frames, instance.slice_index
        )
        for frame, index in zip(frames, order, strict=False):
            if index is not None:
                slots[index] = frame
    missing = [k for k, slot in enumerate(slots) if slot is None]
    if missing:
        raise ExportError(
            f"export: series {job.series_id}: no stored instance fills slice "
            f"{missing[0]}; upload the series again, then export"
        )
    return [slot for slot in slots if slot is not None]


def _slices_by_position(frames: list[FrameSource], first: int) -> list[int]:
    """Where an instance's frames go when no frame order was recorded (a single
    frame, or a multi-frame instance stored before it was): consecutive slices from
    its ``first``, in order along the slice normal (the order ingest sorts them in)."""

    def depth(number: int) -> float:
        header = frames[number].header
        try:
            iop = [float(v) for v in header.ImageOrientationPatient]
            ipp = [float(v) for v in header.ImagePositionPatient]
        except (AttributeError, TypeError, ValueError):
            return float(number)
        normal = np.cross(iop[:3], iop[3:])
        return float(np.dot(normal, ipp))

    ranked = sorted(range(len(frames)), key=lambda n: (depth(n), n))
    order = [0] * len(frames)
    for rank, number in enumerate(ranked):
        order[number] = first + rank
    return order


def _check_job(job: DenoiseJob, include_residual: bool) -> None:
    if job.status != DenoiseJob.Status.SUCCEEDED or not job.reconstruction_file:
        raise ExportError(
            f"export: job {job.pk} is {job.status}; only a succeeded job can be "
            "exported"
        )
    if job.series.derived:
        raise ExportError(f"export: series {job.series_id} is itself derived")
    if not job.is_current:
        raise ExportError(
            f"export: series {job.series_id} gained instances after job {job.pk}; "
            "its output no longer matches the stored series: denoise it again"
        )
    if include_residual and not job.residual_file:
        raise ExportError(f"export: job {job.pk} has no residual output")


def _prepare_out_dir(out_dir: Path | None, kinds: list[str]) -> Path:
    if out_dir is None:
        return Path(tempfile.mkdtemp(prefix="export-"))
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"export: {out_dir} exists and is not a folder")
    for kind in kinds:
        if (out_dir / kind).exists():
            raise ExportError(
                f"export: {out_dir / kind} already exists; exports never overwrite, "
                "choose an empty folder"
            )
    return out_dir


def series_export(
    *,
    job: DenoiseJob,
    actor,
    out_dir: Path | None = None,
    include_residual: bool = False,
    deidentify: bool = False,
) -> ExportResult:
    """Write a succeeded job's outputs as derived DICOM series and audit the export.

    Files go to ``out_dir/denoised/IM00001.dcm``... (and ``out_dir/residual/`` with
    ``include_residual``). UIDs come from :data:`dicomio.derived.UID_ROOT`
    and are stable across re-exports of the same job unless de-identified.

    Args:
        job: a succeeded denoise job; the caller has checked the actor may see it.
        actor: the user exporting (recorded in the audit log).
        out_dir: destination folder; a new temporary folder when ``None`` (the
            caller removes it).
        include_residual: also write the residual (original - denoised) series.
        deidentify: apply the PS3.15 Annex E basic profile to both series with
            one UID mapping.

    Returns:
        The folders and files written, and the manifest checksum.

    Raises:
        ExportError: job not succeeded, output missing, a source lacking what its
            IOD requires, destination already holding an export.
    """
    _check_job(job, include_residual)
    kinds = [DENOISED, RESIDUAL] if include_residual else [DENOISED]
    sources = _source_headers(job)
    try:
        built = {
            DENOISED: build_derived_series(
                sources,
                load_array(job.reconstruction_file),
                provenance=_provenance(job, DENOISED),
            )
        }
        if include_residual:
            built[RESIDUAL] = build_derived_series(
                sources,
                load_array(job.residual_file),
                provenance=_provenance(job, RESIDUAL),
                kind=RESIDUAL,
                denoised=built[DENOISED],
            )
    except DerivedSeriesError as exc:
        raise ExportError(f"export: job {job.pk}: {exc}") from exc
    method = ""
    if deidentify:
        method = deidentify_series([ds for series in built.values() for ds in series])

    out = _prepare_out_dir(out_dir, kinds)
    result = ExportResult(job=job, out_dir=out, deidentified=deidentify)
    manifest = hashlib.sha256()
    for kind, datasets in built.items():
        folder = out / kind
        folder.mkdir(parents=True)
        files = []
        for index, ds in enumerate(datasets, start=1):
            data = to_bytes(ds)
            path = folder / f"IM{index:05d}.dcm"
            with open(path, "xb") as handle:
                handle.write(data)
            manifest.update(
                f"{kind}/{path.name} {hashlib.sha256(data).hexdigest()}\n".encode()
            )
            files.append(path)
        result.series.append(
            ExportedSeries(kind, str(datasets[0].SeriesInstanceUID), folder, files)
        )
    result.manifest_sha256 = manifest.hexdigest()

    with transaction.atomic():
        audit_record(
            action=AuditEvent.Action.EXPORT,
            actor=actor,
            target=job,
            study=job.series.study,
            extra_data={
                "series": job.series_id,
                "model": f"{job.model_name}:{job.model_version}",
                "weights_sha256": job.weights_sha256,
                "exported": {
                    s.kind: {
                        "series_instance_uid": s.series_instance_uid,
                        "instances": len(s.files),
                    }
                    for s in result.series
                },
                "uid_root": UID_ROOT,
                "deidentified": deidentify,
                "deidentification_method": method,
                "manifest_sha256": result.manifest_sha256,
            },
        )
    return result
