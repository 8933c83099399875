"""System checks that catch configuration mistakes before the first job fails."""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from inference.bundle import bundle_folders
from inference.devices import PRECISIONS

from .audit.keys import load_keys
from .errors import AuditKeyError


@register(Tags.compatibility)
def check_time_limits(app_configs, **kwargs):
    errors = []
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get(
        "visibility_timeout", 3600
    )
    if visibility <= settings.DENOISE_HARD_TIME_LIMIT_S:
        errors.append(
            Error(
                f"broker visibility_timeout ({visibility} s) must exceed the denoise "
                f"hard time limit ({settings.DENOISE_HARD_TIME_LIMIT_S} s), or running "
                "jobs are delivered twice.",
                hint="Raise CELERY_VISIBILITY_TIMEOUT_S or lower "
                "DENOISE_HARD_TIME_LIMIT_S.",
                id="radiology.E001",
            )
        )
    if settings.DENOISE_SOFT_TIME_LIMIT_S >= settings.DENOISE_HARD_TIME_LIMIT_S:
        errors.append(
            Error(
                "DENOISE_SOFT_TIME_LIMIT_S must be below DENOISE_HARD_TIME_LIMIT_S.",
                id="radiology.E002",
            )
        )
    return errors


@register(Tags.compatibility)
def check_precision(app_configs, **kwargs):
    if settings.DENOISE_PRECISION not in PRECISIONS:
        return [
            Error(
                f"DENOISE_PRECISION={settings.DENOISE_PRECISION!r} is not one of "
                f"{', '.join(PRECISIONS)}: every denoise request would be refused.",
                hint="Unset it (auto) or pick one; fp16 needs CUDA workers.",
                id="radiology.E003",
            )
        ]
    return []


@register(Tags.compatibility)
def check_model_bundle(app_configs, **kwargs):
    root = settings.MODELS_ROOT
    if not bundle_folders(root):
        return [
            Warning(
                f"no model bundle under MODELS_ROOT={root}: denoise jobs will fail.",
                hint="Point MODELS_ROOT at a folder of bundles (the repo's models/).",
                id="radiology.W001",
            )
        ]
    return []


@register(Tags.security)
def check_audit_key(app_configs, **kwargs):
    """Production needs the audit key made beforehand, and a writable checkpoint log."""
    errors = []
    key_file = Path(settings.AUDIT_KEY_FILE)
    if not settings.DEBUG or key_file.exists():
        try:
            load_keys(key_file)
        except AuditKeyError as exc:
            errors.append(
                Error(
                    str(exc),
                    hint="Run `manage.py audit_key --new` with AUDIT_KEY_FILE set, "
                    "and keep the file off the database host.",
                    id="radiology.E004",
                )
            )
    log_dir = Path(settings.AUDIT_CHECKPOINT_FILE).parent
    probe = log_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        errors.append(
            Error(
                f"the audit checkpoint log {settings.AUDIT_CHECKPOINT_FILE} cannot be "
                f"written ({probe} is not writable).",
                hint="Point AUDIT_CHECKPOINT_FILE at a writable, persistent path.",
                id="radiology.E005",
            )
        )
    return errors
