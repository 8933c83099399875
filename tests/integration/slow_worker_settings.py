"""Settings of a worker the fault tests slow down, so that a kill lands mid-job.

Every progress callback of a job sleeps ``TEST_WORKER_BATCH_DELAY_S`` first. The
delay is injected here, in the worker's pool process, by patching the job loop's
progress callback, so production code carries no fault-injection knob.
"""

from __future__ import annotations

import os
import time

from celery.signals import worker_process_init

from radiology.settings import *  # noqa: F403


def _slow_down_progress(**_kwargs) -> None:
    import django

    django.setup()
    from radiology.services import jobs

    delay_s = float(os.environ.get("TEST_WORKER_BATCH_DELAY_S", "0.3"))
    original = jobs._Heartbeat.__call__

    def slowed(self, fraction: float, message: str = "") -> None:
        time.sleep(delay_s)
        original(self, fraction, message)

    jobs._Heartbeat.__call__ = slowed


worker_process_init.connect(_slow_down_progress, weak=False)
