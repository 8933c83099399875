"""Denoise jobs: request, claim, run, fail, cancel, reconcile; each writes its audit."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone

import inference
from inference.bundle import parse_version
from inference.devices import PRECISIONS

from ..audit import audit_record, canonical_json
from ..errors import JobRequestError, JobSuperseded, TransientJobError
from ..models import AuditEvent, DenoiseJob, Series
from ..storage import ArrayFile, load_array

logger = logging.getLogger(__name__)

#: Parameters a requester may set, with their defaults; anything else is refused.
DEFAULT_PARAMS: dict[str, object] = {
    "precision": "auto",
    "batch_size": None,
    # Run a model on a series of another modality anyway (recorded in the job's
    # identity, its audit event and its provenance).
    "allow_modality_mismatch": False,
}


def normalise_params(params: dict | None) -> tuple[dict, str]:
    # A deployment may pin the precision (DENOISE_PRECISION) of jobs that ask for
    # none; the pinned value is part of the job's identity, like a requested one.
    merged = {**DEFAULT_PARAMS, "precision": settings.DENOISE_PRECISION}
    for key, value in (params or {}).items():
        if key not in DEFAULT_PARAMS:
            raise JobRequestError(
                f"denoise: unknown parameter {key!r}; allowed: {sorted(DEFAULT_PARAMS)}"
            )
        merged[key] = value
    if merged["precision"] not in PRECISIONS:
        choices = ", ".join(PRECISIONS[:-1]) + " or " + PRECISIONS[-1]
        raise JobRequestError(
            f"denoise: precision must be {choices}, got {merged['precision']!r}"
        )
    batch = merged["batch_size"]
    if batch is not None and (not isinstance(batch, int) or not 1 <= batch <= 512):
        raise JobRequestError(f"denoise: batch_size must be 1..512, got {batch!r}")
    if not isinstance(merged["allow_modality_mismatch"], bool):
        raise JobRequestError(
            "denoise: allow_modality_mismatch must be true or false, got "
            f"{merged['allow_modality_mismatch']!r}"
        )
    # Parameters left at their defaults stay out of the identity, so the jobs
    # of earlier versions keep theirs.
    identity = {
        k: v
        for k, v in merged.items()
        if k in ("precision", "batch_size") or v != DEFAULT_PARAMS[k]
    }
    return merged, hashlib.sha256(canonical_json(identity).encode()).hexdigest()


def resolve_model(
    spec: str | None, *, modality: str | None = None
) -> inference.ModelInfo:
    """Find a registered model from ``NAME[:VERSION]``; empty means the default
    (``DENOISE_DEFAULT_MODEL``, else ``models/DEFAULT``), or, for a ``modality``
    the default is not for, the registered model of that modality (highest
    version; the default itself when there is none, for the modality gate of
    :func:`denoise_job_request` to refuse or allow). A name without a version: the
    default's version when the default is that model (a fine-tuned candidate that
    was not promoted runs only when asked for by version), else the highest."""
    models = inference.list_models(settings.MODELS_ROOT)
    name, _, version = (spec or settings.DENOISE_DEFAULT_MODEL).partition(":")
    if name:
        candidates = [m for m in models if m.name == name]
    else:
        candidates = [m for m in models if m.default]
        if not candidates:
            raise JobRequestError("denoise: no default model is registered")
    wanted = (modality or "").upper()
    if not spec and wanted and candidates:
        # The default is for one modality: another's series gets the model of its
        # own modality when one is registered.
        if all(m.modality.upper() != wanted for m in candidates):
            candidates = [
                m for m in models if m.modality.upper() == wanted
            ] or candidates
    if version:
        candidates = [m for m in candidates if m.version == version]
    elif name:
        candidates = [m for m in candidates if m.default] or candidates
    if not candidates:
        known = ", ".join(sorted({f"{m.name}:{m.version}" for m in models})) or "none"
        raise JobRequestError(f"denoise: no model {spec!r}; registered: {known}")
    return max(candidates, key=lambda m: parse_version(m.version))


def not_denoised_reason(series: Series) -> str | None:
    """Why the default request would not denoise ``series``, in words for the
    viewer: a derived series, or no registered model of its modality; ``None``
    when it can be denoised."""
    if series.derived:
        return (
            "this app's own output (a denoised or residual series) is never denoised "
            "again"
        )
    try:
        info = resolve_model(None, modality=series.modality)
    except JobRequestError as exc:
        return str(exc)
    if (series.modality or "").upper() != info.modality.upper():
        return (
            f"no {series.modality or 'matching'} model is registered (the default, "
            f"{info.name}:{info.version}, is for {info.modality})"
        )
    return None


def worker_model(name: str | None = None, version: str | None = None):
    """The model as this worker runs it: ``DENOISE_DEVICE``, hash checked."""
    return inference.load_model(
        name,
        version,
        models_root=settings.MODELS_ROOT,
        device=None if settings.DENOISE_DEVICE == "auto" else settings.DENOISE_DEVICE,
    )


def warm_worker() -> float:
    """Load the default model where this worker runs it and push one batch through,
    so the first job after a worker starts waits for none of that; seconds taken."""
    start = time.perf_counter()
    info = resolve_model(None)
    inference.warm_up(
        worker_model(info.name, info.version), precision=settings.DENOISE_PRECISION
    )
    elapsed = time.perf_counter() - start
    logger.info(
        "worker warmed up with %s:%s in %.2f s", info.name, info.version, elapsed
    )
    return elapsed


def _enqueue(job: DenoiseJob) -> None:
    from ..tasks import run_denoise_job

    run_denoise_job.delay_on_commit(job.pk)


def denoise_job_request(
    *,
    series: Series,
    requested_by,
    model: str | None = None,
    params: dict | None = None,
) -> tuple[DenoiseJob, bool]:
    """Queue a denoise job, or return the one that already exists for the same input.

    Args:
        series: the series to denoise; derived series are refused.
        requested_by: the user asking.
        model: ``NAME[:VERSION]``, default the registry's default bundle.
        params: inference parameters (see ``DEFAULT_PARAMS``).

    Returns:
        ``(job, created)``. A failed or cancelled job for the same input is queued
        again rather than duplicated.
    """
    if series.derived:
        raise JobRequestError(
            f"denoise: series {series.pk} is this app's own derived output (a "
            "denoised or residual series); denoising it again is refused"
        )
    info = resolve_model(model, modality=series.modality)
    mismatch = (series.modality or "").upper() != info.modality.upper()
    if not mismatch and params and params.get("allow_modality_mismatch"):
        # Nothing to override: the same job as without the flag.
        params = {k: v for k, v in params.items() if k != "allow_modality_mismatch"}
    merged, params_sha = normalise_params(params)
    if mismatch and not merged["allow_modality_mismatch"]:
        others = sorted(
            {m.modality for m in inference.list_models(settings.MODELS_ROOT)}
        )
        raise JobRequestError(
            f"denoise: series {series.pk} is {series.modality or 'of unknown modality'}"
            f" and model {info.name}:{info.version} is for {info.modality} (models "
            f"registered for: {', '.join(others)}): it would alter these images, "
            f"whose intensities are not in its units. Choose a "
            f"{series.modality or 'matching'} model, or ask with "
            f"allow_modality_mismatch to run it anyway (recorded in the provenance)"
        )
    with transaction.atomic():
        job, created = DenoiseJob.objects.get_or_create(
            series=series,
            input_sha256=series.volume_sha256,
            weights_sha256=info.sha256,
            params_sha256=params_sha,
            defaults={
                "model_name": info.name,
                "model_version": info.version,
                "params": merged,
                "requested_by": requested_by,
                "input_volume_file": series.volume_file,
                "queued_at": timezone.now(),
            },
        )
        if created:
            audit_record(
                action=AuditEvent.Action.JOB_REQUESTED,
                actor=requested_by,
                target=job,
                study=series.study,
                extra_data={
                    "series": series.pk,
                    "model": f"{info.name}:{info.version}",
                    "weights_sha256": info.sha256,
                    "params": merged,
                    "input_sha256": series.volume_sha256,
                    "modality": series.modality,
                    "model_modality": info.modality,
                },
            )
            _enqueue(job)
        elif DenoiseJob.objects.filter(
            pk=job.pk,
            status__in=[DenoiseJob.Status.FAILED, DenoiseJob.Status.CANCELLED],
        ).update(
            status=DenoiseJob.Status.QUEUED,
            progress=0.0,
            error="",
            claim="",
            attempts=0,
            queued_at=timezone.now(),
        ):
            job.refresh_from_db()
            audit_record(
                action=AuditEvent.Action.JOB_REQUEUED,
                actor=requested_by,
                target=job,
                study=series.study,
                extra_data={"reason": "requested again after failure or cancel"},
            )
            _enqueue(job)
    return job, created


def worker_id(nodename: str) -> str:
    """``node#pid``: which worker node, and which of its processes, runs an attempt."""
    return f"{nodename}#{os.getpid()}"


def _attempt_is_dead(previous: str, current: str) -> bool:
    """True when ``previous`` ran in another process of this same worker node and that
    process is gone (a pool child killed, e.g. by the OOM killer)."""
    node, _, pid = previous.rpartition("#")
    our_node, _, our_pid = current.rpartition("#")
    if not node or node != our_node or not pid.isdigit() or pid == our_pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _claim(job_id: int, worker: str) -> str | None:
    """Claim a queued job for this attempt; ``None`` when another has it or it ended.

    A running job whose attempt died in another process of this worker node (Celery
    redelivers the message of a killed pool child) is taken over at once instead of
    waiting for the reconciler.
    """
    token = uuid.uuid4().hex
    now = timezone.now()
    with transaction.atomic():
        job = DenoiseJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            return None
        if job.status == DenoiseJob.Status.RUNNING and _attempt_is_dead(
            job.worker, worker
        ):
            audit_record(
                action=AuditEvent.Action.JOB_REQUEUED,
                target=job,
                study=job.series.study,
                extra_data={
                    "reason": "worker process died; message redelivered",
                    "worker": job.worker,
                    "attempt": job.attempts,
                },
            )
        elif job.status != DenoiseJob.Status.QUEUED:
            return None
        if job.attempts >= settings.DENOISE_MAX_ATTEMPTS:
            # A series that kills its worker every time must not loop forever.
            _fail_in_transaction(
                job,
                f"gave up after {job.attempts} attempts: the worker was lost each time",
            )
            return None
        job.status = DenoiseJob.Status.RUNNING
        job.claim = token
        job.worker = worker
        job.attempts += 1
        job.started_at = now
        job.heartbeat_at = now
        job.progress = 0.0
        job.save(
            update_fields=[
                "status",
                "claim",
                "worker",
                "attempts",
                "started_at",
                "heartbeat_at",
                "progress",
            ]
        )
        audit_record(
            action=AuditEvent.Action.JOB_STARTED,
            target=job,
            study=job.series.study,
            extra_data={"worker": worker, "attempt": job.attempts},
        )
    return token


class _Heartbeat:
    """Progress callback: writes progress and a heartbeat at most every ``every_s``."""

    def __init__(self, job_id: int, token: str, every_s: float = 0.5) -> None:
        self.job_id, self.token, self.every_s = job_id, token, every_s
        self._last = 0.0

    def __call__(self, fraction: float, message: str = "") -> None:
        now = time.monotonic()
        if now - self._last < self.every_s and fraction < 1.0:
            return
        self._last = now
        if not DenoiseJob.objects.filter(
            pk=self.job_id, claim=self.token, status=DenoiseJob.Status.RUNNING
        ).update(
            progress=min(max(fraction, 0.0), 1.0) * 0.95,
            progress_message=message[:200],
            heartbeat_at=timezone.now(),
        ):
            raise JobSuperseded(f"job {self.job_id}: this attempt no longer owns it")


def output_names(job: DenoiseJob) -> tuple[str, str]:
    """Output names of a job: one output per job, and so per (series, input volume,
    weights, params); every attempt of the job writes the same names."""
    key = f"{job.input_sha256[:32]}-{job.weights_sha256[:16]}-job{job.pk}"
    return (
        f"outputs/{job.input_sha256[:2]}/{key}/reconstruction.npy",
        f"outputs/{job.input_sha256[:2]}/{key}/residual.npy",
    )


def denoise_job_run(*, job_id: int, worker: str | None = None) -> DenoiseJob | None:
    """Run one attempt of a job (what the Celery task calls).

    Returns the finished job, or ``None`` when the job was not ours to run (already
    running elsewhere, finished or cancelled): a redelivered message is harmless.
    Raises ``TransientJobError`` for failures worth a retry; everything else marks the
    job failed with a readable reason.
    """
    worker = worker or worker_id(socket.gethostname())
    try:
        token = _claim(job_id, worker)
    except OperationalError as exc:
        raise TransientJobError(f"database unavailable while claiming: {exc}") from exc
    if token is None:
        logger.info("job %s is not queued: nothing to do", job_id)
        return None
    job = DenoiseJob.objects.select_related("series__study").get(pk=job_id)
    try:
        return _run_claimed(job, token)
    except JobSuperseded as exc:
        logger.warning("%s; stopping this attempt", exc)
        return None
    except (OperationalError, TransientJobError) as exc:
        _release_for_retry(job, token, str(exc))
        raise TransientJobError(str(exc)) from exc
    except OSError as exc:
        if exc.errno in {28, 122}:  # ENOSPC, EDQUOT: storage may free up
            _release_for_retry(job, token, str(exc))
            raise TransientJobError(f"storage full writing outputs: {exc}") from exc
        denoise_job_fail(job_id=job.pk, reason=f"I/O error: {exc}", token=token)
    except Exception as exc:  # bad input, integrity failure: retrying cannot help
        logger.exception("job %s failed", job.pk)
        denoise_job_fail(
            job_id=job.pk, reason=f"{type(exc).__name__}: {exc}", token=token
        )
    return DenoiseJob.objects.get(pk=job_id)


def _run_claimed(job: DenoiseJob, token: str) -> DenoiseJob:
    timings: dict[str, float] = {}
    started = time.perf_counter()
    model = worker_model(job.model_name, job.model_version)
    if model.sha256 != job.weights_sha256:
        raise JobRequestError(
            f"model {job.model_name}:{job.model_version} now hashes to "
            f"{model.sha256[:12]}, the job asked for {job.weights_sha256[:12]}"
        )
    timings["load_model"] = time.perf_counter() - started

    tick = time.perf_counter()
    # Memory-mapped in and out: the engine converts and denoises a chunk at a time,
    # so a volume larger than memory goes through without being loaded whole.
    if not job.input_volume_file and not job.is_current:
        raise JobRequestError(
            f"series {job.series_id} changed after job {job.pk} was requested; "
            "request denoising again"
        )
    volume = load_array(job.input_volume_file or job.series.volume_file, mmap=True)
    recon_name, residual_name = output_names(job)
    outputs = [ArrayFile(name, volume.shape) for name in (recon_name, residual_name)]
    timings["read_volume"] = time.perf_counter() - tick
    try:
        tick = time.perf_counter()
        result = inference.denoise_volume(
            volume,
            model,
            spacing=tuple(job.series.spacing_mm),
            progress=_Heartbeat(job.pk, token),
            batch_size=job.params.get("batch_size"),
            precision=job.params.get("precision", "auto"),
            modality=job.series.modality,
            reconstruction_out=outputs[0].array,
            residual_out=outputs[1].array,
            # Both files are hashed chunk by chunk as the engine finishes them.
            on_slices_done=lambda start, stop: [
                output.hash_slices(start, stop) for output in outputs
            ],
        )
        timings["denoise"] = time.perf_counter() - tick
        tick = time.perf_counter()
        # Both files are flushed and fsynced at once (each waits on the disk);
        # only when both are ready do their names appear, so a failure never
        # leaves one output behind.
        with ThreadPoolExecutor(max_workers=len(outputs)) as pool:
            list(pool.map(ArrayFile.prepare, outputs))
        recon_sha, residual_sha = (output.link() for output in outputs)
        timings["write_outputs"] = time.perf_counter() - tick
    except BaseException:
        for output in outputs:
            output.discard()
        raise
    timings["total"] = time.perf_counter() - started

    provenance = dict(result.provenance)
    provenance.update(
        {
            "job": job.pk,
            "requested_by": job.requested_by.get_username()
            if job.requested_by
            else None,
            "worker": job.worker,
            "attempt": job.attempts,
            "input_volume_sha256": job.input_sha256,
            "reconstruction_file_sha256": recon_sha,
            "residual_file_sha256": residual_sha,
            "series_instance_uid": job.series.series_instance_uid,
            "series_modality": job.series.modality,
            "modality_override": bool(job.params.get("allow_modality_mismatch")),
        }
    )
    with transaction.atomic():
        updated = DenoiseJob.objects.filter(
            pk=job.pk, claim=token, status=DenoiseJob.Status.RUNNING
        ).update(
            status=DenoiseJob.Status.SUCCEEDED,
            progress=1.0,
            progress_message="done",
            finished_at=timezone.now(),
            heartbeat_at=timezone.now(),
            reconstruction_file=recon_name,
            reconstruction_sha256=recon_sha,
            residual_file=residual_name,
            residual_sha256=residual_sha,
            timings_s={**result.timings_s, **timings},
            metrics=result.metrics,
            provenance=provenance,
            warnings=list(result.warnings),
            error="",
        )
        if updated:
            audit_record(
                action=AuditEvent.Action.JOB_SUCCEEDED,
                target=job,
                study=job.series.study,
                extra_data={
                    "model": f"{job.model_name}:{job.model_version}",
                    "weights_sha256": job.weights_sha256,
                    "input_sha256": job.input_sha256,
                    "reconstruction_sha256": recon_sha,
                    "residual_sha256": residual_sha,
                    "worker": job.worker,
                    "attempt": job.attempts,
                    "warnings": list(result.warnings),
                    "flagged_slices": result.metrics.get("flagged_slices", []),
                },
            )
    return DenoiseJob.objects.get(pk=job.pk)


def _release_for_retry(job: DenoiseJob, token: str, reason: str) -> None:
    # A connection the server dropped stays broken for the rest of the task; without a
    # fresh one the job stays "running" and the retry finds nothing to do.
    if (
        connection.connection is not None
        and not connection.in_atomic_block
        and not connection.is_usable()
    ):
        connection.close()
    try:
        with transaction.atomic():
            if DenoiseJob.objects.filter(pk=job.pk, claim=token).update(
                status=DenoiseJob.Status.QUEUED,
                claim="",
                error=f"retrying: {reason}"[:2000],
                queued_at=timezone.now(),
            ):
                audit_record(
                    action=AuditEvent.Action.JOB_REQUEUED,
                    target=job,
                    study=job.series.study,
                    extra_data={
                        "reason": f"transient error, retrying: {reason}"[:500],
                        "attempt": job.attempts,
                    },
                )
    except OperationalError:
        logger.warning(
            "job %s: could not release for retry; the reconciler will", job.pk
        )


def _fail_in_transaction(job: DenoiseJob, reason: str) -> None:
    DenoiseJob.objects.filter(pk=job.pk).update(
        status=DenoiseJob.Status.FAILED,
        error=reason[:2000],
        claim="",
        finished_at=timezone.now(),
    )
    audit_record(
        action=AuditEvent.Action.JOB_FAILED,
        target=job,
        study=job.series.study,
        extra_data={"reason": reason[:2000], "attempt": job.attempts},
    )


def denoise_job_fail(*, job_id: int, reason: str, token: str | None = None) -> None:
    """Mark a job failed with a readable reason (only the attempt's own claim may)."""
    with transaction.atomic():
        jobs = DenoiseJob.objects.filter(pk=job_id).exclude(
            status__in=[DenoiseJob.Status.SUCCEEDED, DenoiseJob.Status.CANCELLED]
        )
        if token is not None:
            jobs = jobs.filter(claim=token)
        if not jobs.update(
            status=DenoiseJob.Status.FAILED,
            error=reason[:2000],
            finished_at=timezone.now(),
        ):
            return
        job = DenoiseJob.objects.select_related("series__study").get(pk=job_id)
        audit_record(
            action=AuditEvent.Action.JOB_FAILED,
            target=job,
            study=job.series.study,
            extra_data={"reason": reason[:2000], "attempt": job.attempts},
        )


def denoise_job_cancel(*, job: DenoiseJob, actor) -> DenoiseJob:
    with transaction.atomic():
        if DenoiseJob.objects.filter(
            pk=job.pk, status__in=[DenoiseJob.Status.QUEUED, DenoiseJob.Status.RUNNING]
        ).update(
            status=DenoiseJob.Status.CANCELLED, claim="", finished_at=timezone.now()
        ):
            audit_record(
                action=AuditEvent.Action.JOB_CANCELLED,
                actor=actor,
                target=job,
                study=job.series.study,
            )
    job.refresh_from_db()
    return job


def reconcile_stale_jobs(*, restarted_worker: str | None = None) -> list[int]:
    """Queue again the running jobs whose worker died, and jobs lost from the broker.

    A running job is stale when its heartbeat is older than ``DENOISE_STALE_AFTER_S``,
    or when it was claimed by ``restarted_worker`` (a worker that has just started
    cannot still be running anything). Each is re-sent; the claim check makes a late
    redelivery of the old message a no-op, so the job completes exactly once.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.DENOISE_STALE_AFTER_S)
    running = DenoiseJob.objects.filter(status=DenoiseJob.Status.RUNNING)
    stale = running.filter(heartbeat_at__lt=cutoff)
    if restarted_worker:
        stale = stale | running.filter(worker__startswith=f"{restarted_worker}#")
    # Queued this long with no worker taking it: its message was probably lost (broker
    # restart without persistence, a send that failed after commit). Sending again is
    # safe: a duplicate message finds the job claimed and does nothing.
    lost_before = now - timedelta(seconds=settings.DENOISE_RESEND_QUEUED_AFTER_S)
    for job in DenoiseJob.objects.filter(
        status=DenoiseJob.Status.QUEUED, queued_at__lt=lost_before
    ):
        if DenoiseJob.objects.filter(
            pk=job.pk, status=DenoiseJob.Status.QUEUED, queued_at=job.queued_at
        ).update(queued_at=now):
            logger.warning("job %s queued since %s: sent again", job.pk, job.queued_at)
            _enqueue(job)
    requeued = []
    for job in stale.select_related("series__study"):
        with transaction.atomic():
            if not DenoiseJob.objects.filter(
                pk=job.pk, status=DenoiseJob.Status.RUNNING, claim=job.claim
            ).update(status=DenoiseJob.Status.QUEUED, claim="", queued_at=now):
                continue
            audit_record(
                action=AuditEvent.Action.JOB_REQUEUED,
                target=job,
                study=job.series.study,
                extra_data={
                    "reason": "worker lost",
                    "worker": job.worker,
                    "attempt": job.attempts,
                },
            )
            _enqueue(job)
        requeued.append(job.pk)
    return requeued
