"""Provenance of an inference run: model, code and library versions, hardware."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import monai
import numpy as np
import torch

from inference.devices import device_name

if TYPE_CHECKING:
    from inference.registry import LoadedModel

__all__ = [
    "PROVENANCE_SCHEMA",
    "utc_now",
    "software_versions",
    "git_commit",
    "build_provenance",
]

PROVENANCE_SCHEMA = "radiology-denoise-provenance/1"
_REPO_ROOT = Path(__file__).resolve().parent.parent


def utc_now() -> str:
    """The current time as an ISO-8601 UTC string."""
    return datetime.now(UTC).isoformat()


@functools.cache
def git_commit() -> str | None:
    """``$GIT_COMMIT``, else ``git rev-parse HEAD`` of the repository, else ``None``."""
    env = os.environ.get("GIT_COMMIT")
    if env:
        return env
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=_REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = completed.stdout.strip()
    return commit if completed.returncode == 0 and commit else None


@functools.cache
def software_versions() -> dict[str, str | None]:
    """Versions of the project and the libraries that shape an output."""
    try:
        project: str | None = importlib.metadata.version("radiology-denoise")
    except importlib.metadata.PackageNotFoundError:
        project = None
    try:
        import pydicom

        pydicom_version: str | None = pydicom.__version__
    except ImportError:
        pydicom_version = None
    return {
        "radiology_denoise": project,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": np.__version__,
        "pydicom": pydicom_version,
        "cuda": torch.version.cuda,
        "cudnn": str(torch.backends.cudnn.version())
        if torch.cuda.is_available()
        else None,
    }


def build_provenance(
    model: LoadedModel,
    *,
    device: torch.device,
    precision: str,
    parameters: dict[str, Any],
    input_sha256: str,
    output_sha256: str,
    started_at: str,
    finished_at: str,
) -> dict[str, Any]:
    """The JSON-safe provenance record of one :func:`inference.denoise_volume` call."""
    meta = model.metadata
    training = meta.get("training") or {}
    return {
        "schema": PROVENANCE_SCHEMA,
        "model": {
            "name": model.name,
            "version": model.version,
            "weights_sha256": model.sha256,
            "network_def": meta.get("network_def"),
            "input_spec": meta.get("input_spec"),
            "training_parent": training.get("parent"),
            "training_mode": training.get("mode"),
            "intended_use": meta.get("intended_use"),
            "exported_with": {
                "monai": meta.get("monai_version"),
                "torch": meta.get("pytorch_version"),
                "numpy": meta.get("numpy_version"),
            },
        },
        "code": {"git_commit": git_commit(), **software_versions()},
        "hardware": {
            "device": str(device),
            "device_name": device_name(device),
            "host": socket.gethostname(),
        },
        "precision": precision,
        "parameters": parameters,
        "input_sha256": input_sha256,
        "output_sha256": output_sha256,
        "started_at": started_at,
        "finished_at": finished_at,
    }
