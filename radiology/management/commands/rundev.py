"""``manage.py rundev``: the web server and the local Celery workers, run together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from django.conf import settings
from django.core.management.base import BaseCommand

from radiology.celery import TRAINING_QUEUE, worker_argv


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = (
        "Start the development web server, one denoising Celery worker (with the "
        "reconciler) and one for site fine-tunes."
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
        # Fine-tunes take minutes to hours: their own worker, so denoising never
        # waits behind one.
        trainer = subprocess.Popen(
            worker_argv("training", "--loglevel", "INFO", queues=TRAINING_QUEUE),
            start_new_session=True,
        )
        self.stdout.write(
            f"worker pids {worker.pid} (denoise), {trainer.pid} (fine-tune); web on "
            f"http://{options['addr']}/ (Ctrl-C stops all)"
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
            for process in (worker, trainer):
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
            for process in (worker, trainer):
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(process.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
