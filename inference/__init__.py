"""Denoising inference: model bundles, registry, engine, quality metrics and OOD checks.

Pure Python: no Django. The worker calls :func:`load_model` then
:func:`denoise_volume`; training calls :func:`write_bundle` and
:func:`reference_statistics` at export.
"""

from __future__ import annotations

from inference.bundle import read_metadata, sha256_file, write_bundle
from inference.engine import DenoiseResult, denoise_volume, warm_up
from inference.errors import (
    BundleError,
    BundleExistsError,
    InferenceError,
    ModelIntegrityError,
    ModelNotFoundError,
)
from inference.metrics import compute_metrics
from inference.networks import build_network
from inference.ood import check_ood, reference_statistics
from inference.registry import (
    LoadedModel,
    ModelInfo,
    clear_cache,
    default_models_root,
    list_models,
    load_model,
    next_version,
    write_default,
)

__all__ = [
    "BundleError",
    "BundleExistsError",
    "DenoiseResult",
    "InferenceError",
    "LoadedModel",
    "ModelInfo",
    "ModelIntegrityError",
    "ModelNotFoundError",
    "build_network",
    "check_ood",
    "clear_cache",
    "compute_metrics",
    "default_models_root",
    "denoise_volume",
    "list_models",
    "load_model",
    "read_metadata",
    "reference_statistics",
    "sha256_file",
    "next_version",
    "warm_up",
    "write_bundle",
    "write_default",
]
