"""``manage.py export SERIES_ID --out DIR [--job ID] [--residual] [--deidentify]``."""

from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from radiology.models import DenoiseJob, Series
from radiology.services.export import ExportError, series_export


class Command(BaseCommand):
    help = (
        "Write the denoised series of a series' latest succeeded job (or --job) as "
        "derived DICOM under DIR/denoised/ (and DIR/residual/ with --residual)."
    )

    def add_arguments(self, parser):
        parser.add_argument("series_id", type=int)
        parser.add_argument("--out", required=True, help="destination folder")
        parser.add_argument("--job", type=int, help="job id, default: latest succeeded")
        parser.add_argument(
            "--residual", action="store_true", help="also write the residual series"
        )
        parser.add_argument(
            "--deidentify",
            action="store_true",
            help="apply the DICOM PS3.15 Annex E basic de-identification profile",
        )
        parser.add_argument("--user", help="who exports (audit), default: the owner")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        series = (
            Series.objects.select_related("study__owner")
            .filter(pk=options["series_id"])
            .first()
        )
        if series is None:
            raise CommandError(f"export: no series {options['series_id']}")
        jobs = series.jobs.filter(status=DenoiseJob.Status.SUCCEEDED)
        if options["job"] is not None:
            job = jobs.filter(pk=options["job"]).first()
            if job is None:
                raise CommandError(
                    f"export: job {options['job']} is not a succeeded job of series "
                    f"{series.pk}"
                )
        else:
            job = jobs.order_by("-finished_at", "-pk").first()
            if job is None:
                raise CommandError(
                    f"export: series {series.pk} has no succeeded denoise job; run "
                    f"`manage.py denoise {series.pk} --wait` first"
                )
        actor = series.study.owner
        if options["user"]:
            actor = get_user_model().objects.filter(username=options["user"]).first()
            if actor is None:
                raise CommandError(f"export: no user {options['user']!r}")
        try:
            result = series_export(
                job=job,
                actor=actor,
                out_dir=options["out"],
                include_residual=options["residual"],
                deidentify=options["deidentify"],
            )
        except (ExportError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        summary = {
            "job": job.pk,
            "out": str(result.out_dir),
            "deidentified": result.deidentified,
            "manifest_sha256": result.manifest_sha256,
            "series": [
                {
                    "kind": s.kind,
                    "series_instance_uid": s.series_instance_uid,
                    "folder": str(s.folder),
                    "instances": len(s.files),
                }
                for s in result.series
            ],
        }
        if options["json"]:
            self.stdout.write(json.dumps(summary, indent=2))
            return
        for s in summary["series"]:
            self.stdout.write(
                f"{s['kind']}: {s['instances']} instances in {s['folder']} "
                f"(SeriesInstanceUID {s['series_instance_uid']})"
            )
