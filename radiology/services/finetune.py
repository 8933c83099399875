"""Site fine-tuning from the app: staff ask, a worker trains, held-out slices decide."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from ..audit import audit_record
from ..errors import JobRequestError
from ..models import AuditEvent, Series
from ..storage import media_path
from .jobs import resolve_model

logger = logging.getLogger(__name__)

#: Training minutes of a fine-tune asked for from the app.
DEFAULT_MINUTES = 10.0


class FinetuneBusy(JobRequestError):
    """Another fine-tune holds the lock."""


def _lock_path() -> Path:
    # Beside the stored scans: shared by the web and every worker host (README).
    return Path(settings.MEDIA_ROOT) / "finetune.lock"


@contextlib.contextmanager
def _finetune_lock(*, probe: bool = False) -> Iterator[None]:
    """Hold the one fine-tune lock (an OS lock: a killed worker releases it).

    ``probe`` only checks that it is free. Raises :class:`FinetuneBusy` when held.
    """
    path = _lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FinetuneBusy(
                "finetune: a fine-tune is running; ask again when its result is in "
                "the audit log (model.finetuned)"
            ) from None
        if not probe:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def model_finetune_request(
    *, series: list[Series], requested_by: Any, minutes: float = DEFAULT_MINUTES
) -> None:
    """Queue a fine-tune of the default CT model on ``series`` (staff only; the
    caller checks the user may see each series).

    Raises:
        JobRequestError: for a user who is not staff, no series, a series that is
            not CT, is derived or too short to hold slices out, a bad time, or a
            fine-tune already running.
    """
    if not getattr(requested_by, "is_staff", False):
        raise JobRequestError("finetune: only staff may fine-tune models")
    if not series:
        raise JobRequestError("finetune: name at least one series")
    if not 1 <= minutes <= 240:
        raise JobRequestError(f"finetune: minutes must be 1..240, got {minutes}")
    for item in series:
        if (item.modality or "").upper() != "CT":
            raise JobRequestError(
                f"finetune: series {item.pk} is {item.modality}; only CT series train "
                "the CT model"
            )
        if item.derived or item.scanner_derived:
            raise JobRequestError(
                f"finetune: series {item.pk} is a derived series (processed images, "
                "not an original acquisition)"
            )
        if item.shape[0] < 8:
            raise JobRequestError(
                f"finetune: series {item.pk} has {item.shape[0]} slices; at least 8 "
                "are needed to hold some out for the decision"
            )
    with _finetune_lock(probe=True):
        pass
    from ..tasks import run_model_finetune

    ids = sorted({s.pk for s in series})
    parent = resolve_model(None, modality="CT")
    with transaction.atomic():
        audit_record(
            action=AuditEvent.Action.MODEL_FINETUNE,
            actor=requested_by,
            target_type="model",
            target_id=f"{parent.name}:{parent.version}",
            extra_data={
                "series": ids,
                "studies": sorted({s.study_id for s in series}),
                "volume_sha256": {str(s.pk): s.volume_sha256 for s in series},
                "minutes": minutes,
            },
        )
        run_model_finetune.delay_on_commit(ids, requested_by.pk, minutes)


def model_finetune_run(
    *, series_ids: list[int], requested_by_id: int | None, minutes: float
) -> dict[str, Any]:
    """Fine-tune the default CT bundle on the series, export the next version beside
    it, decide on the held-out slices, and make it the default only if the decision
    allows. The outcome, a failure included, is audited (``model.finetuned``).

    Returns:
        The decision of :func:`training.finetune.decide`.
    """
    requester = get_user_model().objects.filter(pk=requested_by_id).first()
    try:
        with _finetune_lock():
            return _finetune(series_ids, requester, minutes)
    except Exception as exc:
        with transaction.atomic():
            audit_record(
                action=AuditEvent.Action.MODEL_FINETUNED,
                actor=requester,
                target_type="model",
                target_id="failed",
                extra_data={
                    "series": series_ids,
                    "error": f"{type(exc).__name__}: {exc}",
                },
            )
        raise


def _finetune(series_ids: list[int], requester: Any, minutes: float) -> dict[str, Any]:
    import inference
    from training.cli import export_run
    from training.config import complete_config
    from training.finetune import SiteVolume, decide, describe, pin_default, site_config
    from training.trainer import train

    series = list(Series.objects.filter(pk__in=series_ids).order_by("pk"))
    missing = sorted(set(series_ids) - {s.pk for s in series})
    if missing:
        raise JobRequestError(
            f"finetune: series {', '.join(map(str, missing))} no longer stored; "
            "nothing was trained"
        )
    volumes = [
        SiteVolume(media_path(s.volume_file), float(s.spacing_mm[1]), f"series {s.pk}")
        for s in series
    ]
    root = Path(settings.MODELS_ROOT)
    info = resolve_model(None, modality="CT")
    parent = inference.load_model(
        info.name, info.version, models_root=root, device="cpu"
    )
    runs = Path(settings.VAR_DIR) / "runs"
    config = complete_config(
        site_config(
            parent.path,
            volumes,
            seconds=minutes * 60,
            output_dir=runs / f"finetune-{'-'.join(map(str, series_ids))}",
        )
    )
    config["data"]["cache_dir"] = str(runs / "cache")
    train(config, progress=False)
    pin_default(root)
    path, meta = export_run(config, models_root=str(root))
    inference.clear_cache()
    candidate = inference.load_model(
        meta["name"], meta["version"], models_root=root, device="cpu"
    )
    decision = decide(parent, candidate, volumes)
    pinned = settings.DENOISE_DEFAULT_MODEL
    promoted = bool(decision["promote"]) and not pinned
    if promoted:
        inference.write_default(root, meta["name"], meta["version"])
    with transaction.atomic():
        audit_record(
            action=AuditEvent.Action.MODEL_FINETUNED,
            actor=requester,
            target_type="model",
            target_id=f"{meta['name']}:{meta['version']}",
            extra_data={
                "series": series_ids,
                "parent": parent.ref,
                "weights_sha256": meta["weights_sha256"],
                "bundle": str(path),
                "default": promoted,
                # DENOISE_DEFAULT_MODEL overrides models/DEFAULT: a promotion
                # there would not take effect, so none is written.
                "default_pinned_by_env": pinned or None,
                "decision": describe(decision),
                "summary": decision.get("summary"),
            },
        )
    logger.info(
        "fine-tuned %s:%s: %s", meta["name"], meta["version"], describe(decision)
    )
    return decision
