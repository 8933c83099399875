"""``manage.py verify_audit``: exit 0 and ``ok N events, ...`` when the chain holds."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand

from radiology.audit import audit_verify


class Command(BaseCommand):
    help = (
        "Verify the audit log's keyed hash chain, and the signed access events "
        "queued to join it, against its checkpoint log; exit 1 naming the first "
        "broken event, or how many events are missing."
    )

    def handle(self, *args, **options):
        result = audit_verify()
        if result.ok:
            self.stdout.write(result.summary())
            return
        self.stderr.write(result.summary())
        sys.exit(1)
