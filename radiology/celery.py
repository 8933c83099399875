"""The Celery application: ``celery -A radiology worker -Q gpu,default``."""

from __future__ import annotations

import os
import sys

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "radiology.settings")

app = Celery("radiology")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["radiology"])


#: Queues of the denoising workers; site fine-tunes (hours) run on "training".
DENOISE_QUEUES = "gpu,default"
TRAINING_QUEUE = "training"


def worker_argv(name: str, *extra: str, queues: str = DENOISE_QUEUES) -> list[str]:
    """The command line of one local worker on ``queues``, one job at a time
    (``make run``, the integration tests and the load benchmark start it)."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "radiology",
        "worker",
        "-Q",
        queues,
        "--concurrency",
        "1",
        "-n",
        f"{name}@%h",
        *extra,
    ]
