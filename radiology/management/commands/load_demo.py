"""``manage.py load_demo``: the demo reviewer and a sample CT scan (idempotent)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from dicomio.noise import CTNoiseModel
from dicomio.phantoms import ct_phantom
from dicomio.synthetic import write_series
from radiology.models import Series
from radiology.services.ingest import upload_ingest
from radiology.services.jobs import JobRequestError, denoise_job_request

DEMO_USER = "demo"
DEMO_PASSWORD = "demo-review-2026"
DEMO_SLICES = 24
DEMO_SIZE = 512
#: A held-out phantom seed (training refuses seeds from 900000 up): unseen anatomy.
DEMO_SEED = 900123
DEMO_DOSE = 0.25


def demo_volume(slices: int, size: int) -> tuple[np.ndarray, float]:
    """A quarter-dose abdomen: phantom anatomy with projection-domain CT noise."""
    phantom = ct_phantom((slices, size, size), seed=DEMO_SEED, region="abdomen")
    noise = CTNoiseModel()
    rng = np.random.default_rng(DEMO_SEED)
    noisy = np.stack(
        [
            noise.apply(image, DEMO_DOSE, pixel_mm=phantom.pixel_mm, rng=rng)
            for image in phantom.image
        ]
    )
    return np.round(noisy).astype(np.float32), float(phantom.pixel_mm)


class Command(BaseCommand):
    help = (
        "Create the demo reviewer (demo / demo-review-2026) and ingest a sample scan."
    )

    def add_arguments(self, parser):
        parser.add_argument("--slices", type=int, default=DEMO_SLICES)
        parser.add_argument("--size", type=int, default=DEMO_SIZE, help="pixels")

    def handle(self, *args, **options):
        user, created = get_user_model().objects.get_or_create(username=DEMO_USER)
        if created:
            user.set_password(DEMO_PASSWORD)
        # An ordinary reviewer: its password is in the README, so it must not read
        # other users' audit events or use the admin (earlier set-ups made it staff).
        if created or user.is_staff or user.is_superuser:
            user.is_staff = user.is_superuser = False
            user.save()
        user.groups.add(Group.objects.get_or_create(name="radiology")[0])
        if not Series.objects.filter(study__owner=user).exists():
            self.stdout.write("generating the sample scan (quarter-dose CT phantom)...")
            volume, pixel_mm = demo_volume(options["slices"], options["size"])
            with tempfile.TemporaryDirectory(prefix="demo-scan-") as tmp:
                write_series(
                    Path(tmp),
                    volume,
                    spacing_mm=(2.5, pixel_mm, pixel_mm),
                    modality="CT",
                    description="Demo abdomen phantom, quarter dose",
                    patient_id="DEMO-0001",
                )
                report = upload_ingest(sources=[(Path(tmp), "demo-scan")], owner=user)
            for series in report.series:
                try:
                    job, _ = denoise_job_request(series=series, requested_by=user)
                except JobRequestError as exc:
                    self.stderr.write(f"sample scan not queued for denoising: {exc}")
                    continue
                self.stdout.write(
                    f"sample scan: series {series.pk}, denoise job {job.pk}"
                )
        self.stdout.write(
            self.style.SUCCESS(
                f"demo reviewer: username {DEMO_USER!r}, password {DEMO_PASSWORD!r}"
            )
        )
