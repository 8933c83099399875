"""``manage.py load_demo``: the demo reviewer and a sample CT scan (idempotent)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from radiology.dicomio.synthetic import phantom_volume, write_series
from radiology.models import Series
from radiology.services.ingest import upload_ingest

DEMO_USER = "demo"
DEMO_PASSWORD = "demo-review-2026"
DEMO_SHAPE = (48, 256, 256)


class Command(BaseCommand):
    help = (
        "Create the demo reviewer (demo / demo-review-2026) and ingest a sample scan."
    )

    def handle(self, *args, **options):
        user, created = get_user_model().objects.get_or_create(username=DEMO_USER)
        if created:
            user.set_password(DEMO_PASSWORD)
            user.is_staff = True
            user.save()
        user.groups.add(Group.objects.get_or_create(name="radiology")[0])
        if not Series.objects.filter(study__owner=user).exists():
            with tempfile.TemporaryDirectory(prefix="demo-scan-") as tmp:
                volume = phantom_volume(DEMO_SHAPE, seed=7)
                write_series(
                    Path(tmp),
                    volume,
                    spacing_mm=(2.5, 0.8, 0.8),
                    modality="CT",
                    description="Demo abdomen phantom (low dose)",
                    patient_id="DEMO-0001",
                )
                report = upload_ingest(sources=[(Path(tmp), "demo-scan")], owner=user)
            self.stdout.write(
                f"ingested sample scan: series {[s.pk for s in report.series]}"
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"demo reviewer: username {DEMO_USER!r}, password {DEMO_PASSWORD!r}"
            )
        )
