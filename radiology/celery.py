"""The Celery application: ``celery -A radiology worker -Q gpu,default``."""

from __future__ import annotations

import os
import sys

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "radiology.settings")

app = Celery("radiology")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["radiology"])


def worker_argv(name: str, *extra: str) -> list[str]:
    """The command line of one local worker on both queues, one job at a time
    (``make run``, the integration tests and the load benchmark start it)."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "radiology",
        "worker",
        "-Q",
        "gpu,default",
        "--concurrency",
        "1",
        "-n",
        f"{name}@%h",
        *extra,
    ]
