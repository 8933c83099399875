"""``manage.py models [--json]``: the registered model bundles."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

import inference
from radiology.schemas import ModelOut, dumps


class Command(BaseCommand):
    help = "List registered denoising models: name, version, sha256, default."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        rows = [
            ModelOut.from_orm(m) for m in inference.list_models(settings.MODELS_ROOT)
        ]
        if options["json"]:
            self.stdout.write(dumps(rows))
            return
        for row in rows:
            mark = "*" if row.default else " "
            self.stdout.write(
                f"{mark} {row.name}:{row.version} {row.modality} {row.sha256[:16]}"
            )
