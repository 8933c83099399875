"""``manage.py audit_key``: make, rotate and list the audit chain's signing keys."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count

from radiology.audit.keys import add_key, load_keys
from radiology.errors import AuditKeyError
from radiology.models import AuditEvent


class Command(BaseCommand):
    help = (
        "List the audit keys (ids and how many events each signed, never secrets), "
        "or with --new append a new key that signs from now on. Older keys stay in "
        "the file: the events they signed are verified with them."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--new", action="store_true", help="append a new current key"
        )
        parser.add_argument(
            "--file",
            type=Path,
            default=None,
            help="key file (default: AUDIT_KEY_FILE)",
        )

    def handle(self, *args, **options):
        path = options["file"] or Path(settings.AUDIT_KEY_FILE)
        try:
            if options["new"]:
                key_id = add_key(path)
                self.stdout.write(f"ok key {key_id} signs new events ({path})")
                return
            keys = load_keys(path)
        except AuditKeyError as exc:
            raise CommandError(str(exc)) from None
        signed = dict(
            AuditEvent.objects.order_by().values_list("key_id").annotate(n=Count("id"))
        )
        for key_id in keys.secrets:
            mark = " (current)" if key_id == keys.current else ""
            self.stdout.write(f"{key_id}{mark}: {signed.get(key_id, 0)} events")
        if signed.get(""):
            self.stdout.write(f"unkeyed (before keys): {signed['']} events")
