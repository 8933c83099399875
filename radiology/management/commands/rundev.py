"""``manage.py rundev``: the web server and one local Celery worker, run together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from django.conf import settings
from django.core.management.base import BaseCommand

from radiology.celery import worker_argv


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = (
        "Start the development web server and one Celery worker (with the reconciler)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--addr", default=os.environ.get("RUN_ADDR", "127.0.0.1:8000")
        )

    def handle(self, *args, **options):
        # SIGTERM (from a supervisor, `timeout`, `kill`) stops both, as Ctrl-C does.
        signal.signal(signal.SIGTERM, _raise_interrupt)
        var = settings.VAR_DIR
        var.mkdir(parents=True, exist_ok=True)
        worker = subprocess.Popen(
            worker_argv(
                "local",
                "--beat",
                "--schedule",
                str(var / "celerybeat-schedule"),
                "--loglevel",
                "INFO",
            ),
            start_new_session=True,
        )
        self.stdout.write(
            f"worker pid {worker.pid}; web on http://{options['addr']}/ "
            "(Ctrl-C stops both)"
        )
        try:
            subprocess.call(
                [
                    sys.executable,
                    "manage.py",
                    "runserver",
                    "--noreload",
                    options["addr"],
                ]
            )
        except KeyboardInterrupt:
            pass
        finally:
            try:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(worker.pid, signal.SIGKILL)
