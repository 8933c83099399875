"""``manage.py fixity [--series ID] [--json]``: re-hash stored files; 1 on a change."""

from __future__ import annotations

import json
import sys

from django.core.management.base import BaseCommand, CommandError

from radiology.models import Series
from radiology.services.fixity import fixity_check


class Command(BaseCommand):
    help = "Re-hash stored originals, volumes and outputs; report files that changed."

    def add_arguments(self, parser):
        parser.add_argument("--series", type=int)
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        series = None
        if options["series"] is not None:
            series = Series.objects.filter(pk=options["series"]).first()
            if series is None:
                raise CommandError(f"fixity: no series {options['series']}")
        report = fixity_check(series=series)
        issues = [
            {
                "series": i.series_id,
                "role": i.role,
                "file": i.file,
                "expected_sha256": i.expected_sha256,
                "actual_sha256": i.actual_sha256 or None,
            }
            for i in report.issues
        ]
        if options["json"]:
            self.stdout.write(json.dumps({"checked": report.checked, "issues": issues}))
        else:
            self.stdout.write(f"checked {report.checked} files, {len(issues)} changed")
            for issue in issues:
                self.stderr.write(
                    f"series {issue['series']} {issue['role']} {issue['file']}: "
                    f"{'missing' if not issue['actual_sha256'] else 'hash changed'}"
                )
        if issues:
            sys.exit(1)
