"""Model registry: find bundles, verify their weights, load and cache networks."""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from inference.bundle import (
    WEIGHTS_PATH,
    bundle_folders,
    parse_version,
    read_metadata,
    sha256_bytes,
    validate_input_spec,
)
from inference.devices import select_device
from inference.errors import BundleError, ModelIntegrityError, ModelNotFoundError
from inference.networks import build_network

__all__ = [
    "ModelInfo",
    "LoadedModel",
    "default_models_root",
    "list_models",
    "load_model",
    "clear_cache",
    "next_version",
    "write_default",
]

logger = logging.getLogger(__name__)

_cache: dict[tuple[str, str, str, str, str], nn.Module] = {}
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class ModelInfo:
    """One registered bundle, as listed by :func:`list_models`.

    Attributes:
        name, version: the bundle's key, from its metadata.
        sha256: ``weights_sha256`` from the metadata (not re-hashed when listing).
        default: whether ``models/DEFAULT`` selects this bundle.
        path: the bundle folder.
        modality: ``input_spec["modality"]`` ("CT" or "MR").
        description: the metadata's ``description``, else this version's changelog.
    """

    name: str
    version: str
    sha256: str
    default: bool
    path: Path
    modality: str
    description: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "default": self.default,
            "path": str(self.path),
            "modality": self.modality,
            "description": self.description,
        }


@dataclass(frozen=True)
class LoadedModel:
    """A verified bundle with its network built, in eval mode, on ``device``.

    Attributes:
        name, version: the bundle's key.
        sha256: the weights' SHA-256, verified at load.
        path: the bundle folder.
        metadata: the full ``configs/metadata.json``.
        network: the denoiser; shared between loads of the same bundle and device,
            so callers must not modify it.
        device: where ``network`` lives.
        load_s: seconds this load took (hashing included).
    """

    name: str
    version: str
    sha256: str
    path: Path
    metadata: dict[str, Any] = field(repr=False)
    network: nn.Module = field(repr=False)
    device: torch.device
    load_s: float = 0.0

    @property
    def input_spec(self) -> dict[str, Any]:
        return self.metadata["input_spec"]

    @property
    def modality(self) -> str:
        return str(self.input_spec["modality"])

    @property
    def ref(self) -> str:
        """``name:version``, as accepted by ``--model``."""
        return f"{self.name}:{self.version}"


def default_models_root() -> Path:
    """``$MODELS_ROOT`` when set, else the repository's ``models/`` folder."""
    env = os.environ.get("MODELS_ROOT")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "models"


def list_models(models_root: Path | str | None = None) -> list[ModelInfo]:
    """Every valid bundle under ``models_root``, sorted by name then version.

    Bundles live in ``<models_root>/<name>/<version>/``; legacy flat folders
    (``<models_root>/<folder>/``) are read too. Either way a bundle is keyed by the
    ``(name, version)`` of its metadata, never by its folder.

    Folders whose metadata cannot be read are skipped with a logged warning.

    Raises:
        BundleError: when two folders hold the same ``(name, version)``.
    """
    root = Path(models_root) if models_root is not None else default_models_root()
    bundles = _scan(root)
    default = _read_default(root, required=False)
    default_key = None
    if default is not None:
        name, version = default
        versions = [v for (n, v) in bundles if n == name]
        if version is None and versions:
            version = max(versions, key=parse_version)
        default_key = (name, version)
    infos = []
    for (name, version), (path, meta) in bundles.items():
        description = meta.get("description") or meta.get("changelog", {}).get(
            version, ""
        )
        infos.append(
            ModelInfo(
                name=name,
                version=version,
                sha256=str(meta.get("weights_sha256", "")),
                default=(name, version) == default_key,
                path=path,
                modality=str(meta.get("input_spec", {}).get("modality", "")),
                description=str(description),
            )
        )
    return sorted(infos, key=lambda info: (info.name, parse_version(info.version)))


def load_model(
    name: str | None = None,
    version: str | None = None,
    *,
    models_root: Path | str | None = None,
    device: torch.device | str | None = None,
) -> LoadedModel:
    """Load a bundle, verifying its weights' SHA-256 on every call.

    The built network is cached per (bundle folder, name, version, SHA-256, device),
    so a repeated load costs one read and hash of ``model.pt``, no rebuild.

    Args:
        name: bundle name, or ``"name:version"``; default: ``models/DEFAULT``.
        version: ``MAJOR.MINOR.PATCH``; default: the highest version of ``name``
            (or the version ``models/DEFAULT`` names).
        models_root: folder of bundles, default :func:`default_models_root`.
        device: default CUDA when available, else CPU.

    Raises:
        ModelNotFoundError: no such bundle, or no usable ``models/DEFAULT``.
        ModelIntegrityError: ``model.pt`` does not hash to ``weights_sha256``.
        BundleError: the bundle's metadata is malformed.
    """
    started = time.perf_counter()
    root = Path(models_root) if models_root is not None else default_models_root()
    torch_device = select_device(device)
    if name is not None and ":" in name:
        if version is not None:
            raise ValueError(f"load_model: got version twice: {name!r} and {version!r}")
        name, version = name.split(":", 1)
    if version is not None:
        try:
            parse_version(version)
        except ValueError as exc:
            raise ModelNotFoundError(f"load_model: {exc}") from None
    bundles = _scan(root)
    if name is None:
        default = _read_default(root, required=True)
        assert default is not None
        name, default_version = default
        version = version or default_version
    if version is None:
        versions = [v for (n, v) in bundles if n == name]
        if not versions:
            raise ModelNotFoundError(_not_found(name, None, root, bundles))
        version = max(versions, key=parse_version)
    if (name, version) not in bundles:
        raise ModelNotFoundError(_not_found(name, version, root, bundles))
    path, meta = bundles[(name, version)]
    spec = validate_input_spec(meta.get("input_spec"))
    weights_path = path / WEIGHTS_PATH
    try:
        payload = weights_path.read_bytes()
    except OSError as exc:
        raise BundleError(f"load_model: {weights_path}: {exc.strerror}") from None
    actual = sha256_bytes(payload)
    expected = str(meta.get("weights_sha256", ""))
    if actual != expected:
        raise ModelIntegrityError(weights_path, expected, actual)
    key = (str(path.resolve()), name, version, actual, str(torch_device))
    with _cache_lock:
        network = _cache.get(key)
        if network is None:
            network = _build(meta, payload, weights_path).to(torch_device)
            _cache[key] = network
            logger.info("load_model: built %s:%s on %s", name, version, torch_device)
    meta = dict(meta, input_spec=spec)
    elapsed = time.perf_counter() - started
    logger.info("load_model: %s:%s verified in %.3f s", name, version, elapsed)
    return LoadedModel(
        name=name,
        version=version,
        sha256=actual,
        path=path,
        metadata=meta,
        network=network,
        device=torch_device,
        load_s=elapsed,
    )


def clear_cache() -> None:
    """Forget every cached network (e.g. to free GPU memory)."""
    with _cache_lock:
        _cache.clear()


def _build(meta: dict[str, Any], payload: bytes, weights_path: Path) -> nn.Module:
    try:
        network = build_network(meta["network_def"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(
            f"load_model: {weights_path}: bad network_def ({exc})"
        ) from None
    if getattr(network, "noise_conditioned", False):
        # The runner writes the level map with the spec's unit, the network reads
        # it with its own: they must agree.
        unit = float(meta["input_spec"].get("noise_unit", 0.005))
        if abs(unit - float(getattr(network, "noise_unit", unit))) > 1e-12:
            raise BundleError(
                f"load_model: {weights_path}: input_spec noise_unit {unit} differs "
                f"from the network's {getattr(network, 'noise_unit', None)}"
            )
        if int(meta["input_spec"]["spatial_dims"]) != 2:
            raise BundleError(
                f"load_model: {weights_path}: noise-conditioned networks are 2D"
            )
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        network.load_state_dict(state, strict=True)
    except Exception as exc:  # torch raises several types for unreadable weights
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BundleError(
            f"load_model: {weights_path}: cannot load weights ({first})"
        ) from None
    network.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network


def _scan(root: Path) -> dict[tuple[str, str], tuple[Path, dict[str, Any]]]:
    if not root.is_dir():
        raise ModelNotFoundError(
            f"models root {root} is not a folder; set MODELS_ROOT or create it"
        )
    bundles: dict[tuple[str, str], tuple[Path, dict[str, Any]]] = {}
    for folder in bundle_folders(root):
        try:
            meta = read_metadata(folder)
            key = (str(meta["name"]), str(meta["version"]))
            parse_version(key[1])
        except (BundleError, KeyError, ValueError) as exc:
            logger.warning("registry: skipping %s: %s", folder, exc)
            continue
        if key in bundles:
            raise BundleError(
                f"registry: {key[0]} {key[1]} is in both {bundles[key][0]} and {folder}"
            )
        bundles[key] = (folder, meta)
    return bundles


def write_default(root: Path | str, name: str, version: str) -> None:
    """Point ``root/DEFAULT`` at ``name:version``, pinned (a later version of the
    name never becomes the default by being written), atomically (a reader sees
    the old or the new line, never an empty file)."""
    path = Path(root) / "DEFAULT"
    tmp = path.with_name(f".DEFAULT.{os.getpid()}.tmp")
    tmp.write_text(f"{name}:{version}\n", encoding="utf-8")
    os.replace(tmp, path)


def next_version(root: Path | str, name: str, after: str) -> str:
    """The next minor version of ``name`` above ``after`` that no bundle under
    ``root`` has (``MAJOR.MINOR+1.0``, then on)."""
    taken = {version for (n, version) in _scan(Path(root)) if n == name}
    major, minor, _ = parse_version(after)
    while f"{major}.{minor + 1}.0" in taken:
        minor += 1
    return f"{major}.{minor + 1}.0"


def _read_default(root: Path, *, required: bool) -> tuple[str, str | None] | None:
    path = root / "DEFAULT"
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        if required:
            raise ModelNotFoundError(
                f"load_model: no model named and {path} does not exist; write "
                "'name' or 'name:version' into it"
            ) from None
        return None
    if not text:
        if required:
            raise ModelNotFoundError(f"load_model: {path} is empty")
        return None
    name, _, version = text.partition(":")
    return name.strip(), (version.strip() or None)


def _not_found(
    name: str,
    version: str | None,
    root: Path,
    bundles: dict[tuple[str, str], tuple[Path, dict[str, Any]]],
) -> str:
    wanted = f"{name}:{version}" if version else name
    known = ", ".join(f"{n}:{v}" for n, v in sorted(bundles)) or "none"
    return f"load_model: no bundle {wanted} in {root} (registered: {known})"
