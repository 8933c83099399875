"""Django project and app for denoising review; the Celery app is ``radiology``."""

from .celery import app as celery_app

__all__ = ["celery_app"]
