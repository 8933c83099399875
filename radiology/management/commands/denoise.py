"""``manage.py denoise SERIES_ID [--model NAME[:VERSION]] [--wait] [--json]``."""

from __future__ import annotations

import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from radiology.models import DenoiseJob, Series
from radiology.schemas import JobOut, dumps
from radiology.services.jobs import JobRequestError, denoise_job_request


class Command(BaseCommand):
    help = "Queue a denoise job for a series; --wait blocks until it ends."

    def add_arguments(self, parser):
        parser.add_argument("series_id", type=int)
        parser.add_argument(
            "--model", help="NAME[:VERSION], default: the default model"
        )
        parser.add_argument(
            "--user", help="who asks (audited); default: none, recorded as system"
        )
        parser.add_argument(
            "--allow-modality-mismatch",
            action="store_true",
            help="run a model of another modality anyway (recorded in the provenance)",
        )
        parser.add_argument("--wait", action="store_true")
        parser.add_argument("--timeout", type=float, default=3600.0, help="seconds")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        series = (
            Series.objects.select_related("study__owner")
            .filter(pk=options["series_id"])
            .first()
        )
        if series is None:
            raise CommandError(f"denoise: no series {options['series_id']}")
        user = None
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"denoise: no user {options['user']!r}")
            if not Series.objects.visible_to(user).filter(pk=series.pk).exists():
                raise CommandError(
                    f"denoise: user {user.username!r} cannot see series {series.pk}"
                )
        try:
            job, created = denoise_job_request(
                series=series,
                requested_by=user,
                model=options["model"],
                params=(
                    {"allow_modality_mismatch": True}
                    if options["allow_modality_mismatch"]
                    else None
                ),
            )
        except JobRequestError as exc:
            raise CommandError(str(exc)) from exc
        if not options["json"]:
            self.stdout.write(f"job {job.pk} {'queued' if created else job.status}")
        if options["wait"]:
            job = self._wait(job, options["timeout"], verbose=not options["json"])
        if options["json"]:
            self.stdout.write(dumps(JobOut.from_orm(job)))
        if job.status in {DenoiseJob.Status.FAILED, DenoiseJob.Status.CANCELLED}:
            raise CommandError(f"denoise: job {job.pk} {job.status}: {job.error}")

    def _wait(self, job, timeout, verbose):
        deadline = time.monotonic() + timeout
        shown = -1.0
        while not job.is_finished:
            if time.monotonic() > deadline:
                raise CommandError(
                    f"denoise: job {job.pk} still {job.status} after {timeout} s"
                )
            time.sleep(0.5)
            job.refresh_from_db()
            if verbose and job.progress - shown >= 0.1:
                shown = job.progress
                self.stdout.write(
                    f"  {job.status} {job.progress:.0%} {job.progress_message}"
                )
        return job
