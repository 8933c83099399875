"""``manage.py series_volumes SERIES_ID... [--json]``: where each series' volume is
stored, for tools outside the app (``python -m training finetune --series``)."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from radiology.models import Series
from radiology.storage import media_path


class Command(BaseCommand):
    help = "Print the stored volume (.npy, HU) and spacing of each series."

    def add_arguments(self, parser):
        parser.add_argument("series_ids", type=int, nargs="+")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        rows = []
        for series_id in options["series_ids"]:
            series = Series.objects.filter(pk=series_id).first()
            if series is None:
                raise CommandError(f"series_volumes: no series {series_id}")
            if series.derived:
                raise CommandError(
                    f"series_volumes: series {series_id} is a derived series "
                    "(ImageType DERIVED); it is not a scan to learn from"
                )
            rows.append(
                {
                    "id": series.pk,
                    "modality": series.modality,
                    "volume": str(media_path(series.volume_file)),
                    "spacing_mm": list(series.spacing_mm),
                    "shape": list(series.shape),
                }
            )
        if options["json"]:
            self.stdout.write(json.dumps(rows))
        else:
            for row in rows:
                self.stdout.write(
                    f"{row['id']} {row['modality']} {row['volume']} "
                    f"spacing {row['spacing_mm']}"
                )
