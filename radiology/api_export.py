"""API: a job's derived DICOM series as a zip (``GET /api/jobs/{id}/export.zip``)."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

from django.http import FileResponse
from ninja import Router
from ninja.errors import HttpError

from . import selectors
from .schemas import ErrorOut, binary_response
from .services.export import ExportError, series_export

router = Router(tags=["export"])


class _DeletingFile:
    """A read-only file whose folder is removed once the response has been sent."""

    def __init__(self, path: Path, folder: Path) -> None:
        self._handle = open(path, "rb")  # noqa: SIM115 - closed by the response
        self._folder = folder
        self.name = str(path)  # lets FileResponse send Content-Length

    def read(self, size: int = -1) -> bytes:
        return self._handle.read(size)

    def close(self) -> None:
        self._handle.close()
        shutil.rmtree(self._folder, ignore_errors=True)


@router.get(
    "/jobs/{job_id}/export.zip",
    response={200: None, 404: ErrorOut, 409: ErrorOut},
    openapi_extra=binary_response("application/zip", "The DICOM files, zipped"),
    summary="Derived DICOM series of a job, zipped",
)
def export_zip(request, job_id: int, residual: bool = False, deidentify: bool = False):
    """Zip of ``denoised/IM*.dcm`` (and ``residual/`` with ``residual=true``); with
    ``deidentify=true`` the DICOM PS3.15 basic profile is applied. Audited."""
    job = selectors.job_for(request.user, job_id)
    workdir = Path(tempfile.mkdtemp(prefix="export-zip-"))
    try:
        try:
            result = series_export(
                job=job,
                actor=request.user,
                out_dir=workdir / "series",
                include_residual=residual,
                deidentify=deidentify,
            )
        except ExportError as exc:
            raise HttpError(409, str(exc)) from exc
        archive = workdir / "export.zip"
        # DICOM pixels barely compress; storing keeps the download CPU-cheap.
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
            for path in result.files:
                zf.write(path, path.relative_to(result.out_dir).as_posix())
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return FileResponse(
        _DeletingFile(archive, workdir),
        as_attachment=True,
        filename=f"job-{job.pk}-dicom.zip",
        content_type="application/zip",
    )
