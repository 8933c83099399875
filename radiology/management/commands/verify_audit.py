"""``manage.py verify_audit``: exit 0 and ``ok N events`` when the hash chain holds."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand

from radiology.audit import audit_verify


class Command(BaseCommand):
    help = "Verify the audit log's hash chain; exit 1 naming the first broken event."

    def handle(self, *args, **options):
        result = audit_verify()
        if result.ok:
            self.stdout.write(f"ok {result.count} events")
            return
        where = f"event {result.broken_event_id}" if result.broken_event_id else "chain"
        self.stderr.write(f"broken at {where}: {result.reason}")
        sys.exit(1)
