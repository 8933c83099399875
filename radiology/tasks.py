"""Celery tasks: thin wrappers that call one service each."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.contrib.django.task import DjangoTask
from celery.signals import worker_process_init, worker_ready

from .audit import audit_fold_queue
from .services import jobs

logger = logging.getLogger(__name__)


class DenoiseTask(DjangoTask):
    """Marks the job failed with a readable reason when the task gives up."""

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        job_id = args[0] if args else kwargs.get("job_id")
        if job_id is not None:
            jobs.denoise_job_fail(
                job_id=job_id,
                reason=f"gave up after {self.request.retries} retries: {exc}",
            )


@shared_task(
    bind=True,
    base=DenoiseTask,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(jobs.TransientJobError,),
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=4,
)
def run_denoise_job(self, job_id: int) -> None:
    jobs.denoise_job_run(job_id=job_id, worker=jobs.worker_id(self.request.hostname))


@shared_task(acks_late=False, reject_on_worker_lost=False)
def run_model_finetune(series_ids: list[int], user_id: int, minutes: float) -> bool:
    """Staff-requested site fine-tune (training takes minutes: never retried; the
    service audits a failure)."""
    from .services.finetune import model_finetune_run

    decision = model_finetune_run(
        series_ids=series_ids, requested_by_id=user_id, minutes=minutes
    )
    return bool(decision["promote"])


@shared_task
def reconcile_stale_jobs() -> list[int]:
    return jobs.reconcile_stale_jobs()


@worker_ready.connect
def requeue_jobs_of_this_worker(sender, **kwargs) -> None:
    """A worker that just started runs nothing: its name's running jobs were lost."""
    requeued = jobs.reconcile_stale_jobs(restarted_worker=sender.hostname)
    if requeued:
        logger.warning(
            "requeued jobs lost by a previous run of %s: %s", sender.hostname, requeued
        )


@worker_process_init.connect
def warm_up_default_model(**kwargs) -> None:
    """Each pool process loads the default model and runs it once before its first
    job. A failure here is logged, never fatal: the job then loads the model itself
    and reports any error against the job."""
    try:
        jobs.warm_worker()
    except Exception:
        logger.exception("worker warm-up failed; the first job will load the model")


@shared_task(soft_time_limit=60, time_limit=90)
def fold_audit_queue() -> int:
    """Access events queued while writes held the chain head join the chain.

    A backstop: the next event that takes the head and the fold after each queued
    read's commit do the same sooner, so a run that waits behind a denoise job on
    a busy worker expires rather than piling up (``CELERY_BEAT_SCHEDULE``).
    """
    return audit_fold_queue()


@shared_task
def sweep_orphan_files() -> int:
    from .storage import sweep_orphans

    return sweep_orphans()


@shared_task
def check_fixity() -> int:
    from .services.fixity import fixity_check

    return len(fixity_check().issues)
