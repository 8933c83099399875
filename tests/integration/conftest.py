"""Real PostgreSQL, Redis and Celery worker processes for the integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from django.conf import settings
from django.db import connection

from inference.bundle import bundle_folders
from radiology.celery import worker_argv
from tests.conftest import require

REPO = Path(__file__).resolve().parents[2]


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session", autouse=True)
def real_services():
    db = settings.DATABASES["default"]
    require(
        db["ENGINE"] == "django.db.backends.postgresql",
        "integration tests need DATABASE_URL=postgres://... (make test sets it)",
    )
    require(
        _reachable(db.get("HOST") or "127.0.0.1", int(db.get("PORT") or 5432)),
        "PostgreSQL is not reachable",
    )
    broker = urlparse(settings.CELERY_BROKER_URL)
    require(
        broker.scheme == "redis", "integration tests need CELERY_BROKER_URL=redis://..."
    )
    require(_reachable(broker.hostname, broker.port or 6379), "Redis is not reachable")
    require(
        bool(bundle_folders(settings.MODELS_ROOT)),
        f"no model bundle under {settings.MODELS_ROOT}",
    )


@pytest.fixture
def redis_flushed():
    import redis

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    yield client
    client.flushdb()


class Workers:
    """Start and kill real ``celery -A radiology worker`` processes."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str = "w1", **extra_env: str) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(
            worker_argv(
                name, "--loglevel", "INFO", "--without-gossip", "--without-mingle"
            ),
            cwd=REPO,
            env={**self.env, **extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.kill(name, signal.SIGTERM)


@pytest.fixture
def workers(transactional_db, settings, tmp_path, redis_flushed):
    db = connection.settings_dict
    url = (
        f"postgres://{db['USER']}:{db.get('PASSWORD') or ''}@"
        f"{db['HOST'] or '127.0.0.1'}:"
        f"{db['PORT'] or 5432}/{db['NAME']}"
    )
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "MODELS_ROOT": str(settings.MODELS_ROOT),
        "AUDIT_KEY_FILE": str(settings.AUDIT_KEY_FILE),
        "AUDIT_CHECKPOINT_FILE": str(settings.AUDIT_CHECKPOINT_FILE),
        "DEBUG": "1",
        "DENOISE_STALE_AFTER_S": "600",
    }
    pool = Workers(env, tmp_path)
    yield pool
    pool.stop_all()


def wait_for(predicate, timeout: float, what: str, poll: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
