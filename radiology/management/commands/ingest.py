"""``manage.py ingest PATH... [--owner USER] [--json]``: files, folders or zips."""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from radiology.schemas import UploadOut, dumps
from radiology.services.ingest import upload_ingest


class Command(BaseCommand):
    help = "Ingest DICOM files, folders or .zip archives; exit 1 when nothing went in."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", type=Path)
        parser.add_argument("--owner", help="username (default: the first superuser)")
        parser.add_argument("--json", action="store_true", help="print the JSON report")

    def handle(self, *args, **options):
        owner = self._owner(options["owner"])
        for path in options["paths"]:
            if not path.exists():
                raise CommandError(f"ingest: {path}: no such file or folder")
        sources = [(path, path.name or str(path)) for path in options["paths"]]
        report = upload_ingest(sources=sources, owner=owner)
        data = UploadOut.from_orm(report)
        if options["json"]:
            self.stdout.write(dumps(data))
        else:
            for series in data.series:
                self.stdout.write(
                    f"series {series.id}: {series.modality} "
                    f"{'x'.join(map(str, series.shape))} "
                    f"({series.instances} instances)"
                )
            for rejection in data.rejected:
                self.stderr.write(f"rejected {rejection.name}: {rejection.reason}")
        if not data.series:
            raise CommandError(
                f"ingest: nothing ingested ({len(data.rejected)} file(s) rejected)"
            )

    def _owner(self, username):
        users = get_user_model().objects
        if username:
            user = users.filter(username=username).first()
            if user is None:
                raise CommandError(f"ingest: no user {username!r}")
            return user
        user = (
            users.filter(is_superuser=True).order_by("pk").first()
            or users.order_by("pk").first()
        )
        if user is None:
            raise CommandError("ingest: no users exist; create one or pass --owner")
        return user
