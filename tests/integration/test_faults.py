"""Faults injected into real workers: each job finishes exactly once or fails clearly.

Worker processes get their faults from a ``sitecustomize`` module put on their
PYTHONPATH (disk full, a crash between write and rename); the others come from
outside (SIGKILL of the pool process, a Redis restart, PostgreSQL dropping the
worker's connections). Everything runs on 127.0.0.1 and is cleaned up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

import inference
from dicomio.synthetic import phantom_volume, write_series
from radiology.audit import audit_verify
from radiology.models import AuditEvent, DenoiseJob
from radiology.services.fixity import fixity_check
from radiology.services.ingest import upload_ingest
from radiology.services.jobs import (
    denoise_job_request,
    output_names,
)
from radiology.storage import TEMP_SUFFIX, file_sha256, media_path, sweep_orphans
from tests.conftest import install_tiny_models

from .conftest import REPO, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# A worker whose jobs run slowly (tests/integration/slow_worker_settings.py).
SLOW = {
    "DJANGO_SETTINGS_MODULE": "tests.integration.slow_worker_settings",
    "TEST_WORKER_BATCH_DELAY_S": "0.3",
}
PARAMS = {"batch_size": 1}

FAULTS = '''
"""Fault injection for the worker under test (tests/integration/test_faults.py)."""
import errno
import os
import signal

_real_fdopen = os.fdopen
_real_link = os.link


def _counter(name):
    path = os.environ[name]
    with open(path, "a+") as handle:
        handle.seek(0)
        used = len(handle.read())
        handle.write("x")
    return used


class _FullDisk:
    """Writes half of what it is given, then fails as a full disk does."""

    def __init__(self, handle):
        self._handle = handle

    def write(self, data):
        self._handle.write(bytes(data[: len(data) // 2]))
        self._handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device (injected)")

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()


def fdopen(fd, *args, **kwargs):
    handle = _real_fdopen(fd, *args, **kwargs)
    path = os.readlink(f"/proc/self/fd/{fd}")
    if "/outputs/" in path and path.endswith(".partial"):
        limit = int(os.environ["FAULT_ENOSPC_WRITES"])
        if limit < 0 or _counter("FAULT_ENOSPC_COUNTER") < limit:
            return _FullDisk(handle)
    return handle


_real_fallocate = os.posix_fallocate


def posix_fallocate(fd, offset, length):
    """Output files are memory-mapped; their space is reserved here, so a full disk
    shows up here."""
    path = os.readlink(f"/proc/self/fd/{fd}")
    if "/outputs/" in path and path.endswith(".partial"):
        limit = int(os.environ["FAULT_ENOSPC_WRITES"])
        if limit < 0 or _counter("FAULT_ENOSPC_COUNTER") < limit:
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
    return _real_fallocate(fd, offset, length)


def link(src, dst, *args, **kwargs):
    marker = os.environ.get("FAULT_CRASH_MARKER")
    if marker and "/outputs/" in str(dst) and not os.path.exists(marker):
        open(marker, "w").close()
        # The whole worker dies at once, as on a power cut: data written, not linked.
        os.killpg(os.getpgid(0), signal.SIGKILL)
    return _real_link(src, dst, *args, **kwargs)


if os.environ.get("FAULT_ENOSPC_WRITES"):
    os.fdopen = fdopen
    os.posix_fallocate = posix_fallocate
if os.environ.get("FAULT_CRASH_MARKER"):
    os.link = link
'''

QUEUE = """
import django, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "radiology.settings")
django.setup()
from django.contrib.auth import get_user_model
from radiology.models import Series
from radiology.services.jobs import denoise_job_request
user = get_user_model().objects.get(username=sys.argv[1])
for pk in sys.argv[2:]:
    job, _ = denoise_job_request(
        series=Series.objects.get(pk=pk), requested_by=user, params={"batch_size": 1}
    )
    print(job.pk)
"""


@pytest.fixture
def tiny_models(workers, settings, tmp_path):
    """A small identity bundle, so the faults, not inference, take the time."""
    root = install_tiny_models(settings, tmp_path / "models")
    workers.env["MODELS_ROOT"] = str(root)
    inference.clear_cache()
    return root


@pytest.fixture
def faults(tmp_path):
    """Environment that loads the fault-injection module into a worker."""
    folder = tmp_path / "faults"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(FAULTS)
    return {"PYTHONPATH": f"{folder}{os.pathsep}{REPO}"}


def _series(owner, tmp_path, seed, shape=(10, 32, 32)):
    folder = tmp_path / f"scan-{seed}"
    write_series(
        folder, phantom_volume(shape, seed=seed), spacing_mm=(2, 1, 1), patient_id="F1"
    )
    (series,) = upload_ingest(sources=[(folder, folder.name)], owner=owner).series
    return series


def _job(pk) -> DenoiseJob:
    return DenoiseJob.objects.get(pk=pk)


def _finished(pk, timeout, workers, name="w1") -> DenoiseJob:
    try:
        return wait_for(
            lambda: _job(pk) if _job(pk).is_finished else None, timeout, f"job {pk}"
        )
    except AssertionError as exc:
        log = workers.log(name) if (workers.log_dir / f"{name}.log").exists() else ""
        raise AssertionError(f"{exc}\n{log[-4000:]}") from None


def _running_part_way(pk, workers) -> None:
    try:
        wait_for(
            lambda: _job(pk).status == "running" and _job(pk).progress > 0.15,
            120,
            "the job to be part-way",
        )
    except AssertionError as exc:
        job = _job(pk)
        raise AssertionError(
            f"{exc}: {job.status} {job.progress} {job.error}\n"
            f"{workers.log('w1')[-4000:]}"
        ) from None


def _actions(job) -> list[str]:
    return list(
        AuditEvent.objects.filter(target_type="denoisejob", target_id=str(job.pk))
        .order_by("id")
        .values_list("action", flat=True)
    )


def _assert_succeeded_once(job: DenoiseJob, workers) -> None:
    assert job.status == DenoiseJob.Status.SUCCEEDED, (
        job.error,
        workers.log("w1")[-3000:],
    )
    assert _actions(job).count("job.succeeded") == 1
    recon, residual = output_names(job)
    assert (job.reconstruction_file, job.residual_file) == (recon, residual)
    assert file_sha256(recon) == job.reconstruction_sha256
    assert file_sha256(residual) == job.residual_sha256
    assert fixity_check(series=job.series).ok
    assert audit_verify().ok


def _temp_files() -> list[Path]:
    from django.conf import settings

    return sorted(Path(settings.MEDIA_ROOT).rglob(f"*{TEMP_SUFFIX}"))


def _pool_children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children]


def test_pool_process_killed_like_the_oom_killer_is_requeued_and_runs_once(
    alice, workers, tiny_models, tmp_path, settings
):
    series = _series(alice, tmp_path, seed=11)
    worker = workers.start("w1", **SLOW)
    job, _ = denoise_job_request(series=series, requested_by=alice, params=PARAMS)
    _running_part_way(job.pk, workers)
    (child,) = _pool_children(worker.pid)
    os.kill(child, signal.SIGKILL)
    # The main worker process lives on; the pool's message goes back to the queue
    # (reject_on_worker_lost) and its redelivery, in a new pool process of the same
    # worker, sees the old attempt's process is gone and takes the job over at once.
    wait_for(lambda: "exited with 'signal 9" in workers.log("w1"), 30, "worker-lost")
    assert worker.poll() is None
    done = _finished(job.pk, 120, workers)
    _assert_succeeded_once(done, workers)
    assert done.attempts == 2
    assert "job.requeued" in _actions(done)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Redis:
    """A private redis-server on a loopback port, with the append-only file on."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.folder),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=open(self.folder / "redis.log", "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(lambda: self._ping(), 20, "redis-server to start")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # SIGTERM: flush the AOF, exit
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def private_redis(tmp_path):
    folder = tmp_path / "redis"
    folder.mkdir()
    server = _Redis(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_redis_restart_with_jobs_queued_and_running_loses_none(
    alice, workers, tiny_models, private_redis, tmp_path
):
    series = [_series(alice, tmp_path, seed=s, shape=(6, 32, 32)) for s in (21, 22, 23)]
    workers.start("w1", CELERY_BROKER_URL=private_redis.url, **SLOW)
    script = tmp_path / "queue_jobs.py"
    script.write_text(QUEUE)
    queued = subprocess.run(
        [sys.executable, str(script), "alice", *(str(s.pk) for s in series)],
        cwd=REPO,
        env={**workers.env, "CELERY_BROKER_URL": private_redis.url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert queued.returncode == 0, queued.stderr[-2000:]
    job_ids = [int(line) for line in queued.stdout.split()]
    assert len(job_ids) == 3
    wait_for(
        lambda: DenoiseJob.objects.filter(pk__in=job_ids, status="running").exists(),
        60,
        "a job to start",
    )
    private_redis.stop()
    time.sleep(1.0)
    private_redis.start()
    done = [_finished(pk, 150, workers) for pk in job_ids]
    for job in done:
        _assert_succeeded_once(job, workers)
    assert DenoiseJob.objects.count() == 3


def test_database_connection_dropped_mid_job_is_retried_and_runs_once(
    alice, workers, tiny_models, tmp_path
):
    series = _series(alice, tmp_path, seed=31)
    workers.start("w1", **SLOW)
    job, _ = denoise_job_request(series=series, requested_by=alice, params=PARAMS)
    _running_part_way(job.pk, workers)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchall(), "the worker had no database connection to drop"
    done = _finished(job.pk, 120, workers)
    _assert_succeeded_once(done, workers)
    assert done.attempts == 2


def test_disk_full_while_writing_outputs_is_retried_without_partial_files(
    alice, workers, tiny_models, faults, tmp_path
):
    series = _series(alice, tmp_path, seed=41, shape=(4, 32, 32))
    workers.start(
        "w1",
        FAULT_ENOSPC_WRITES="2",
        FAULT_ENOSPC_COUNTER=str(tmp_path / "enospc-count"),
        **faults,
    )
    job, _ = denoise_job_request(series=series, requested_by=alice, params=PARAMS)
    done = _finished(job.pk, 120, workers)
    _assert_succeeded_once(done, workers)
    assert done.attempts == 3
    assert "No space left on device (injected)" in workers.log("w1")
    assert _temp_files() == []


def test_disk_that_stays_full_fails_the_job_clearly_after_bounded_retries(
    alice, workers, tiny_models, faults, tmp_path
):
    series = _series(alice, tmp_path, seed=42, shape=(4, 32, 32))
    workers.start(
        "w1",
        FAULT_ENOSPC_WRITES="-1",
        FAULT_ENOSPC_COUNTER=str(tmp_path / "enospc-count"),
        **faults,
    )
    job, _ = denoise_job_request(series=series, requested_by=alice, params=PARAMS)
    done = _finished(job.pk, 150, workers)
    assert done.status == DenoiseJob.Status.FAILED
    assert "gave up after 4 retries" in done.error and "storage full" in done.error
    assert done.attempts == 5
    assert done.reconstruction_file == "" and done.residual_file == ""
    recon, residual = output_names(done)
    assert not media_path(recon).exists() and not media_path(residual).exists()
    assert _temp_files() == []
    assert _actions(done).count("job.failed") == 1
    assert audit_verify().ok


def test_crash_between_write_and_rename_leaves_orphans_the_sweep_removes(
    alice, workers, tiny_models, faults, tmp_path
):
    series = _series(alice, tmp_path, seed=51, shape=(4, 32, 32))
    marker = tmp_path / "crashed"
    first = workers.start("w1", FAULT_CRASH_MARKER=str(marker), **faults)
    job, _ = denoise_job_request(series=series, requested_by=alice, params=PARAMS)
    first.wait(timeout=120)
    workers.procs.pop("w1")
    assert marker.exists()
    crashed = _job(job.pk)
    assert crashed.status == DenoiseJob.Status.RUNNING
    assert crashed.reconstruction_file == ""
    orphans = _temp_files()
    assert orphans, "the crash left no temp file: it did not happen between the two"
    recon, residual = output_names(crashed)
    assert not media_path(recon).exists()
    # A restarted worker of the same name requeues what its previous run held.
    workers.start("w1")
    done = _finished(job.pk, 120, workers)
    _assert_succeeded_once(done, workers)
    assert done.attempts == 2
    assert {p for p in _temp_files()} == set(orphans)
    assert sweep_orphans(max_age_s=0) == len(orphans)
    assert _temp_files() == []
    _assert_succeeded_once(_job(job.pk), workers)
