"""Load on loopback: concurrent uploads and denoise requests through the HTTP API.

``python -m bench load [--seconds 120] [--clients 4] [--workers 2]`` needs
``DATABASE_URL`` (PostgreSQL) and ``CELERY_BROKER_URL`` (Redis) pointing at servers
on this machine. It creates a throw-away database, starts the web server and the
Celery workers on 127.0.0.1, lets ``--clients`` threads upload small CT series and
ask for each to be denoised (twice, as an impatient user does) until the time is up,
waits for the jobs, and prints one JSON object: uploads/min, jobs/min, p95 API
latency, and the checks (no lost or duplicated job, the audit chain intact). Every
process it starts is stopped and the database dropped at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import requests

from radiology.celery import worker_argv

__all__ = ["WebServer", "run_load", "series_zip"]

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WebServer:
    """``manage.py runserver`` (threaded) on a free loopback port, in its own group."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env, self._log = env, log
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> WebServer:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "runserver",
                f"127.0.0.1:{self.port}",
                "--noreload",
                "--nostatic",
            ],
            cwd=REPO,
            env=self._env,
            stdout=open(self._log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(f"{self.url}/healthz", timeout=2)
                return self
            except requests.ConnectionError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.3)
        self.__exit__(None, None, None)
        raise RuntimeError(f"web server did not start; see {self._log}")

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            _stop_group(self.proc)
            self.proc = None


def _stop_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def series_zip(index: int, slices: int = 6, size: int = 32) -> bytes:
    """A zipped synthetic CT series of its own patient, study and series."""
    from dicomio.synthetic import phantom_volume, write_series

    with tempfile.TemporaryDirectory(prefix="load-") as tmp:
        paths = write_series(
            Path(tmp),
            phantom_volume((slices, size, size), seed=index),
            spacing_mm=(2, 1, 1),
            patient_id=f"LOAD{index:05d}",
        )
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in paths:
                archive.write(path, path.name)
    return buffer.getvalue()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_load(
    base_url: str,
    token: str,
    *,
    clients: int,
    seconds: float,
    max_uploads: int,
    job_timeout_s: float = 300.0,
) -> dict:
    """Upload and ask for denoising from ``clients`` threads; wait for every job.

    Args:
        base_url: the web server, ``http://127.0.0.1:PORT``.
        token: an API token (``Authorization: Bearer``).
        clients: concurrent client threads.
        seconds: stop starting uploads after this long.
        max_uploads: stop after this many uploads in all.
        job_timeout_s: how long to wait for the queued jobs after the last upload.

    Returns:
        Counts, rates, latencies and the job ids seen, as JSON-safe values.
    """
    headers = {"Authorization": f"Bearer {token}"}
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    series_ids: list[int] = []
    job_ids: list[int] = []
    duplicate_answers: list[bool] = []
    next_index = iter(range(max_uploads))
    started = time.monotonic()

    def call(method: str, path: str, **kwargs) -> requests.Response:
        tick = time.perf_counter()
        response = requests.request(
            method, base_url + path, headers=headers, timeout=120, **kwargs
        )
        with lock:
            latencies.append(time.perf_counter() - tick)
            key = f"{method} {path.split('/')[2]} {response.status_code}"
            statuses[key] = statuses.get(key, 0) + 1
        return response

    def client() -> None:
        session_series: list[int] = []
        while time.monotonic() - started < seconds:
            with lock:
                index = next(next_index, None)
            if index is None:
                break
            archive = series_zip(index)
            response = call(
                "POST", "/api/uploads", files=[("files", (f"s{index}.zip", archive))]
            )
            if response.status_code != 201:
                continue
            for series in response.json()["series"]:
                first = call("POST", f"/api/series/{series['id']}/denoise")
                again = call("POST", f"/api/series/{series['id']}/denoise")
                if first.status_code in (200, 201) and again.status_code in (200, 201):
                    with lock:
                        job_ids.append(first.json()["id"])
                        duplicate_answers.append(
                            first.json()["id"] == again.json()["id"]
                        )
                session_series.append(series["id"])
        with lock:
            series_ids.extend(session_series)

    with ThreadPoolExecutor(max_workers=clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    uploads_done = time.monotonic()

    final: dict[int, dict] = {}
    deadline = time.monotonic() + job_timeout_s
    while time.monotonic() < deadline and len(final) < len(set(job_ids)):
        for job_id in set(job_ids) - set(final):
            body = call("GET", f"/api/jobs/{job_id}").json()
            if body["status"] in ("succeeded", "failed", "cancelled"):
                final[job_id] = body
        time.sleep(0.5)
    finished = time.monotonic()
    succeeded = [j for j in final.values() if j["status"] == "succeeded"]
    minutes = (finished - started) / 60
    return {
        "clients": clients,
        "uploads": len(series_ids),
        "jobs_requested": len(job_ids),
        "jobs_distinct": len(set(job_ids)),
        "jobs_succeeded": len(succeeded),
        "jobs_unfinished": len(set(job_ids)) - len(final),
        "second_request_returned_same_job": all(duplicate_answers),
        "uploads_per_min": round(len(series_ids) / max(minutes, 1e-9), 1),
        "jobs_per_min": round(len(succeeded) / max(minutes, 1e-9), 1),
        "api_requests": len(latencies),
        "api_latency_p50_s": round(_percentile(latencies, 0.50), 4),
        "api_latency_p95_s": round(_percentile(latencies, 0.95), 4),
        "api_latency_max_s": round(max(latencies, default=0.0), 4),
        "statuses": statuses,
        "upload_phase_s": round(uploads_done - started, 1),
        "total_s": round(finished - started, 1),
        "series_ids": sorted(series_ids),
        "job_ids": sorted(set(job_ids)),
    }


def _prepare_database(admin_url: str, name: str, env: dict[str, str]) -> str:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parsed = urlparse(admin_url)
    url = parsed._replace(path=f"/{name}").geturl()
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=REPO,
        env={**env, "DATABASE_URL": url},
        check=True,
    )
    return url


def _drop_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


SETUP_USER = """
import django, hashlib, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "radiology.settings")
django.setup()
from django.contrib.auth import get_user_model
from radiology.models import ApiToken
user = get_user_model().objects.create_user("load", password="load-pass-123")
digest = hashlib.sha256(sys.argv[1].encode()).hexdigest()
ApiToken.objects.create(user=user, key_sha256=digest)
"""

CHECK = """
import django, json, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "radiology.settings")
django.setup()
from django.db.models import Count
from radiology.audit import audit_verify
from radiology.models import AuditEvent, DenoiseJob
ok = AuditEvent.objects.filter(action="job.succeeded").values("target_id")
twice = ok.annotate(n=Count("id")).filter(n__gt=1).count()
per_series = DenoiseJob.objects.values("series").annotate(n=Count("id")).filter(n__gt=1)
print(json.dumps({"audit_chain_ok": audit_verify().ok,
                  "jobs_succeeded_twice": twice,
                  "series_with_two_jobs": per_series.count()}))
"""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench load", description=__doc__)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-uploads", type=int, default=10_000)
    args = parser.parse_args(argv)
    admin_url = os.environ.get("DATABASE_URL", "")
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not admin_url.startswith("postgres") or not broker.startswith("redis"):
        print(
            "bench load: set DATABASE_URL=postgres://... and CELERY_BROKER_URL=redis://..."
        )
        return 2
    for url in (admin_url, broker):
        if urlparse(url).hostname not in ("127.0.0.1", "localhost", "::1"):
            print(f"bench load: {url} is not on loopback; this benchmark stays local")
            return 2
    name = f"bench_load_{os.getpid()}"
    token = secrets.token_urlsafe(24)
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        root = Path(tmp)
        env = {
            **os.environ,
            "DEBUG": "1",
            "VAR_DIR": str(root / "var"),
            "MEDIA_ROOT": str(root / "media"),
            "LOG_LEVEL": "WARNING",
        }
        try:
            env["DATABASE_URL"] = _prepare_database(admin_url, name, env)
            subprocess.run(
                [sys.executable, "-c", SETUP_USER, token], cwd=REPO, env=env, check=True
            )
            for n in range(args.workers):
                procs.append(
                    subprocess.Popen(
                        worker_argv(f"load{n}", "--without-gossip", "--without-mingle"),
                        cwd=REPO,
                        env=env,
                        stdout=open(root / f"worker{n}.log", "ab"),
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            with WebServer(env, root / "web.log") as web:
                report = run_load(
                    web.url,
                    token,
                    clients=args.clients,
                    seconds=args.seconds,
                    max_uploads=args.max_uploads,
                )
            checks = subprocess.run(
                [sys.executable, "-c", CHECK],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            report.update(json.loads(checks.stdout.strip().splitlines()[-1]))
            logs = "".join(p.read_text(errors="replace") for p in root.glob("*.log"))
            report["database_is_locked"] = logs.count("database is locked")
        finally:
            for proc in procs:
                _stop_group(proc)
            _drop_database(admin_url, name)
    report.pop("series_ids")
    report.pop("job_ids")
    print(
        json.dumps({"benchmark": "load", "workers": args.workers, **report}, indent=2)
    )
    ok = (
        report["audit_chain_ok"]
        and report["jobs_unfinished"] == 0
        and report["jobs_succeeded_twice"] == 0
        and report["series_with_two_jobs"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
