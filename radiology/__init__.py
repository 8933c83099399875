"""Django project and app for denoising review; exposes the Celery app as ``radiology``."""

from .celery import app as celery_app

__all__ = ["celery_app"]
