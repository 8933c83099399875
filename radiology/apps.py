"""App configuration: registers the system checks and loads the Celery app."""

from django.apps import AppConfig


class RadiologyConfig(AppConfig):
    name = "radiology"
    verbose_name = "Radiology denoising review"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the checks)
        from .celery import app  # noqa: F401  (tasks sent from web bind to it)
