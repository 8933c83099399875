"""``manage.py models [--json]``: the registered model bundles."""

from __future__ import annotations

import json

from django.conf import settings
from django.core.management.base import BaseCommand

import inference


class Command(BaseCommand):
    help = "List registered denoising models: name, version, sha256, default."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        models = inference.list_models(settings.MODELS_ROOT)
        rows = [
            {
                "name": m.name,
                "version": m.version,
                "sha256": m.sha256,
                "default": m.default,
                "modality": m.modality,
            }
            for m in models
        ]
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        for row in rows:
            mark = "*" if row["default"] else " "
            self.stdout.write(
                f"{mark} {row['name']}:{row['version']} {row['modality']} "
                f"{row['sha256'][:16]}"
            )
