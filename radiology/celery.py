"""The Celery application: ``celery -A radiology worker -Q gpu,default``."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "radiology.settings")

app = Celery("radiology")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["radiology"])
