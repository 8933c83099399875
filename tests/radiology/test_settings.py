"""Configuration: environment settings, deploy checks, compose file, system checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "x9!k2#" + "a7Qm3pL0vZ" * 6,
    "ALLOWED_HOSTS": "review.example.org",
    "DATABASE_URL": "sqlite:////tmp/deploy-check.sqlite3",
}


def _manage(*args, env):
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env={k: v for k, v in {**os.environ, **env}.items() if v is not None},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_production_variables(tmp_path):
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env={**PRODUCTION, "VAR_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_refuses_to_start_without_secret_key_when_debug_is_off(tmp_path):
    env = {**PRODUCTION, "SECRET_KEY": "", "VAR_DIR": str(tmp_path)}
    result = _manage("check", env=env)
    assert result.returncode != 0
    assert "SECRET_KEY is not set and DEBUG is off" in result.stderr


def _without(*names):
    return {name: None for name in names}


def test_production_refuses_to_start_without_an_audit_key(tmp_path):
    env = {**PRODUCTION, "VAR_DIR": str(tmp_path), "AUDIT_KEY_FILE": None}
    result = _manage("check", env=env)
    assert result.returncode != 0
    assert "radiology.E004" in result.stderr
    assert str(tmp_path / "audit" / "audit.key") in result.stderr
    assert not (tmp_path / "audit" / "audit.key").exists()


def test_local_env_written_by_make_run_lets_printed_commands_run(tmp_path):
    """`make run` writes var/local.env; `manage.py` run by hand then needs no prefix."""
    env = {**_without("DEBUG", "SECRET_KEY"), "VAR_DIR": str(tmp_path)}
    refused = _manage("check", env=env)
    assert refused.returncode != 0
    assert "SECRET_KEY is not set and DEBUG is off" in refused.stderr
    assert str(tmp_path / "local.env") in refused.stderr

    made = subprocess.run(
        ["make", "-s", f"{tmp_path}/local.env", f"VAR_DIR={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    assert "DEBUG=1" in (tmp_path / "local.env").read_text().splitlines()
    result = _manage("check", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "dev-secret-key").exists()


def test_environment_wins_over_local_env(tmp_path):
    (tmp_path / "local.env").write_text("# dev\nDEBUG=1\n")
    env = {**PRODUCTION, "SECRET_KEY": "", "VAR_DIR": str(tmp_path)}
    result = _manage("check", env=env)
    assert result.returncode != 0
    assert "SECRET_KEY is not set and DEBUG is off" in result.stderr


def test_malformed_local_env_names_the_file_and_line(tmp_path):
    (tmp_path / "local.env").write_text("DEBUG=1\nnot a setting\n")
    env = {**_without("DEBUG", "SECRET_KEY"), "VAR_DIR": str(tmp_path)}
    result = _manage("check", env=env)
    assert result.returncode != 0
    assert f"{tmp_path / 'local.env'}:2: expected NAME=value" in result.stderr


def test_bad_boolean_is_a_clear_error(tmp_path):
    result = _manage("check", env={"DEBUG": "maybe", "VAR_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "DEBUG must be a boolean" in result.stderr


def test_fine_tunes_never_queue_in_front_of_denoise_jobs(settings):
    from radiology.celery import DENOISE_QUEUES, TRAINING_QUEUE

    routes = settings.CELERY_TASK_ROUTES
    assert routes["radiology.tasks.run_model_finetune"]["queue"] == TRAINING_QUEUE
    assert TRAINING_QUEUE not in DENOISE_QUEUES.split(",")
    assert routes["radiology.tasks.run_denoise_job"]["queue"] in DENOISE_QUEUES


def test_visibility_timeout_exceeds_hard_time_limit(settings):
    from radiology.checks import check_time_limits

    assert (
        settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
        > settings.CELERY_TASK_ANNOTATIONS["radiology.tasks.run_denoise_job"][
            "time_limit"
        ]
    )
    assert check_time_limits(None) == []
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 60}
    assert [e.id for e in check_time_limits(None)] == ["radiology.E001"]


def test_task_settings_are_safe_for_worker_death(settings):
    assert settings.CELERY_TASK_ACKS_LATE is True
    assert settings.CELERY_TASK_REJECT_ON_WORKER_LOST is True
    assert settings.CELERY_WORKER_PREFETCH_MULTIPLIER == 1
    assert (
        settings.CELERY_TASK_ROUTES["radiology.tasks.run_denoise_job"]["queue"] == "gpu"
    )


def test_docker_compose_runs_web_gpu_worker_redis_postgres():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"web", "worker", "redis", "postgres"} <= set(services)
    assert "--appendonly yes" in services["redis"]["command"]
    worker = services["worker"]
    assert "-Q gpu" in worker["command"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    # Fine-tunes have their own worker, and every service sees the same models.
    assert "-Q training" in services["trainer"]["command"]
    for name in ("web", "worker", "trainer"):
        assert "models:/app/models" in services[name]["volumes"], name
    assert "models" in compose["volumes"]
    assert compose["x-app-env"]["MODELS_ROOT"] == "/app/models"
    for name in ("web", "worker", "trainer"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["CELERY_BROKER_URL"].startswith("redis://redis:6379")
        assert env["DEBUG"] == "0"
    assert (REPO / services["web"].get("build", ".") / "Dockerfile").exists()
    # Every service that writes audit events signs with the same secret key and
    # anchors the chain in the same checkpoint log, both outside the database.
    assert "audit_key" in compose["secrets"]
    assert compose["x-app-env"]["AUDIT_KEY_FILE"] == "/run/secrets/audit_key"
    for name in ("web", "worker", "trainer"):
        assert services[name]["secrets"] == ["audit_key"], name
        assert "audit:/data/audit" in services[name]["volumes"], name
    assert compose["x-app-env"]["AUDIT_CHECKPOINT_FILE"].startswith("/data/audit/")


@pytest.mark.parametrize("path", ["inference", "training"])
def test_pure_packages_never_import_django(path):
    offenders = [
        str(p.relative_to(REPO))
        for p in (REPO / path).rglob("*.py")
        if any(
            line.lstrip().startswith(
                ("import django", "from django", "import radiology", "from radiology")
            )
            for line in p.read_text().splitlines()
        )
    ]
    assert offenders == []


def test_a_precision_pin_is_checked(settings):
    from radiology.checks import check_precision

    assert check_precision(None) == []
    settings.DENOISE_PRECISION = "fp64"
    assert [e.id for e in check_precision(None)] == ["radiology.E003"]


def test_postgresql_statements_have_a_time_limit(monkeypatch):
    """A search gone wrong cannot hold the database: every statement is capped."""
    import importlib

    import radiology.settings as settings_module

    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db:5432/x")
    monkeypatch.setenv("DATABASE_STATEMENT_TIMEOUT_MS", "1234")
    try:
        reloaded = importlib.reload(settings_module)
        options = reloaded.DATABASES["default"]["OPTIONS"]
        assert options["options"] == "-c statement_timeout=1234"
    finally:
        monkeypatch.undo()
        importlib.reload(settings_module)
