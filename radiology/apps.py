"""App configuration: registers the system checks."""

from django.apps import AppConfig


class RadiologyConfig(AppConfig):
    name = "radiology"
    verbose_name = "Radiology denoising review"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the checks)
