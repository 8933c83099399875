"""Write and read model bundles (``models/README.md``): metadata, weights, hashes."""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import io
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeGuard

import torch
from torch import nn

from inference.errors import BundleError, BundleExistsError
from inference.monai_bundle import INFERENCE_CONFIG_PATH, inference_config_text
from inference.networks import build_network

__all__ = [
    "SCHEMA",
    "REQUIRED_METADATA_KEYS",
    "METADATA_PATH",
    "WEIGHTS_PATH",
    "CARD_PATH",
    "INFERENCE_CONFIG_PATH",
    "write_bundle",
    "read_metadata",
    "sha256_file",
    "sha256_bytes",
    "validate_metadata",
    "validate_input_spec",
    "parse_version",
    "bundle_folders",
    "bundle_path",
    "models_root_of",
]

SCHEMA = "radiology-denoise-bundle/1"
METADATA_PATH = Path("configs") / "metadata.json"
WEIGHTS_PATH = Path("models") / "model.pt"
CARD_PATH = Path("docs") / "README.md"

#: Keys the caller of :func:`write_bundle` must provide. ``schema``, ``task``,
#: ``intended_use`` and the library versions are filled in when absent;
#: ``weights_sha256`` is always computed.
REQUIRED_METADATA_KEYS: tuple[str, ...] = (
    "name",
    "version",
    "changelog",
    "network_def",
    "network_data_format",
    "input_spec",
    "training",
)

_NAME_RE = re.compile(r"^[a-z0-9_-]+$")
_VERSION_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def sha256_bytes(data: bytes | bytearray | memoryview) -> str:
    """Hex SHA-256 of ``data`` (a memoryview hashes an array without copying it)."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse_version(version: str) -> tuple[int, int, int]:
    """Parse ``MAJOR.MINOR.PATCH`` into a sortable tuple.

    Raises:
        ValueError: when ``version`` is not a semantic version without suffixes.
    """
    match = _VERSION_RE.match(version) if isinstance(version, str) else None
    if match is None:
        raise ValueError(f"version must be MAJOR.MINOR.PATCH, got {version!r}")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def validate_input_spec(spec: Any) -> dict[str, Any]:
    """Check an ``input_spec`` (``models/README.md``) and return it as a plain dict.

    Raises:
        BundleError: naming the first bad field and what was expected.
    """

    def fail(message: str) -> BundleError:
        return BundleError(f"input_spec: {message}")

    if not isinstance(spec, Mapping):
        raise fail(f"expected a JSON object, got {type(spec).__name__}")
    spec = dict(spec)
    if spec.get("modality") not in ("CT", "MR"):
        raise fail(f"modality must be 'CT' or 'MR', got {spec.get('modality')!r}")
    if not isinstance(spec.get("units"), str) or not spec["units"]:
        raise fail(f"units must be a non-empty string, got {spec.get('units')!r}")
    dims = spec.get("spatial_dims")
    if dims not in (2, 3) or isinstance(dims, bool):
        raise fail(f"spatial_dims must be 2 or 3, got {dims!r}")
    norm = spec.get("normalisation")
    if not isinstance(norm, Mapping):
        raise fail(f"normalisation must be an object, got {norm!r}")
    if norm.get("kind") == "linear":
        offset, scale = norm.get("offset"), norm.get("scale")
        if not _is_number(offset) or not math.isfinite(offset):
            raise fail(f"normalisation.offset must be a finite number, got {offset!r}")
        if not _is_number(scale) or not math.isfinite(scale) or scale <= 0:
            raise fail(f"normalisation.scale must be a number > 0, got {scale!r}")
    elif norm.get("kind") == "percentile":
        upper = norm.get("upper")
        if not _is_number(upper) or not 0 < upper <= 100:
            raise fail(f"normalisation.upper must be in (0, 100], got {upper!r}")
    else:
        raise fail(
            f"normalisation.kind must be 'linear' or 'percentile', got "
            f"{norm.get('kind')!r}"
        )
    roi = spec.get("roi_size")
    if roi is not None and (
        not isinstance(roi, list | tuple)
        or len(roi) != dims
        or not all(_is_positive_int(v) for v in roi)
    ):
        raise fail(f"roi_size must be null or {dims} positive integers, got {roi!r}")
    for key in ("batch_size", "size_multiple"):
        if not _is_positive_int(spec.get(key)):
            raise fail(f"{key} must be a positive integer, got {spec.get(key)!r}")
    unit = spec.get("noise_unit", 0.005)
    if not _is_number(unit) or not math.isfinite(unit) or unit <= 0:
        raise fail(f"noise_unit must be a number > 0, got {unit!r}")
    limit = spec.get("residual_limit")
    if limit is not None:
        if not isinstance(limit, Mapping):
            raise fail(f"residual_limit must be null or an object, got {limit!r}")
        multiple, window = limit.get("sd_multiple"), limit.get("window", 0)
        if not _is_number(multiple) or not math.isfinite(multiple) or multiple <= 0:
            raise fail(
                f"residual_limit.sd_multiple must be a number > 0, got {multiple!r}"
            )
        if not _is_positive_int(window) or window < 3 or window % 2 == 0:
            raise fail(f"residual_limit.window must be odd and >= 3, got {window!r}")
        if dims != 2:
            raise fail("residual_limit needs spatial_dims 2")
    keep = spec.get("keep_low_frequencies")
    if keep is not None:
        if not isinstance(keep, Mapping):
            raise fail(f"keep_low_frequencies must be null or an object, got {keep!r}")
        sigma = keep.get("sigma_mm")
        if not _is_number(sigma) or not math.isfinite(sigma) or sigma <= 0:
            raise fail(
                f"keep_low_frequencies.sigma_mm must be a number > 0, got {sigma!r}"
            )
        if dims != 2:
            raise fail("keep_low_frequencies needs spatial_dims 2")
    return spec


def validate_metadata(metadata: Any) -> dict[str, Any]:
    """Check bundle metadata (``models/README.md``), returning a plain dict copy.

    ``weights_sha256`` is not required here (``write_bundle`` computes it).

    Raises:
        BundleError: naming the missing key or bad value.
    """
    if not isinstance(metadata, Mapping):
        raise BundleError(f"metadata must be a dict, got {type(metadata).__name__}")
    meta = copy.deepcopy(dict(metadata))
    missing = [key for key in REQUIRED_METADATA_KEYS if key not in meta]
    if missing:
        raise BundleError(f"metadata: missing required keys {missing}")
    if meta.get("schema", SCHEMA) != SCHEMA:
        raise BundleError(
            f"metadata: schema must be {SCHEMA!r}, got {meta['schema']!r}"
        )
    name = meta["name"]
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise BundleError(f"metadata: name must match [a-z0-9_-]+, got {name!r}")
    try:
        parse_version(meta["version"])
    except ValueError as exc:
        raise BundleError(f"metadata: {exc}") from None
    changelog = meta["changelog"]
    if not isinstance(changelog, Mapping) or meta["version"] not in changelog:
        raise BundleError(
            f"metadata: changelog must be {{version: text}} with an entry for "
            f"{meta['version']}, got {changelog!r}"
        )
    network_def = meta["network_def"]
    if not isinstance(network_def, Mapping) or "kind" not in network_def:
        raise BundleError(
            f"metadata: network_def must be {{'kind': ..., 'args': {{...}}}}, got "
            f"{network_def!r}"
        )
    data_format = meta["network_data_format"]
    if (
        not isinstance(data_format, Mapping)
        or "image" not in data_format.get("inputs", {})
        or "pred" not in data_format.get("outputs", {})
    ):
        raise BundleError(
            "metadata: network_data_format must have inputs.image and outputs.pred"
        )
    spec = validate_input_spec(meta["input_spec"])
    dims = network_def.get("args", {}).get("spatial_dims", 2)
    if dims != spec["spatial_dims"]:
        raise BundleError(
            f"metadata: input_spec.spatial_dims is {spec['spatial_dims']} but "
            f"network_def builds a {dims}D network"
        )
    training = meta["training"]
    if not isinstance(training, Mapping):
        raise BundleError(f"metadata: training must be an object, got {training!r}")
    parent = training.get("parent")
    if parent is not None and (
        not isinstance(parent, Mapping)
        or not {"name", "version", "weights_sha256"} <= set(parent)
    ):
        raise BundleError(
            "metadata: training.parent must be null or "
            f"{{name, version, weights_sha256}}, got {parent!r}"
        )
    sha = meta.get("weights_sha256")
    if sha is not None and (not isinstance(sha, str) or not _SHA_RE.match(sha)):
        raise BundleError(
            f"metadata: weights_sha256 must be 64 hex digits, got {sha!r}"
        )
    return meta


def read_metadata(directory: Path | str) -> dict[str, Any]:
    """Read ``configs/metadata.json`` of the bundle in ``directory``.

    Raises:
        BundleError: when the file is missing, not JSON, or not a JSON object.
    """
    path = Path(directory) / METADATA_PATH
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(f"read_metadata: {path}: no such file") from None
    except OSError as exc:
        raise BundleError(f"read_metadata: {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"read_metadata: {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BundleError(f"read_metadata: {path}: expected a JSON object")
    return data


def bundle_path(models_root: Path | str, name: str, version: str) -> Path:
    """Where ``name`` ``version`` lives: ``<models_root>/<name>/<version>``."""
    return Path(models_root) / name / version


def bundle_folders(models_root: Path | str) -> list[Path]:
    """Every bundle folder under a models root, sorted: ``<name>/<version>/`` and
    legacy flat ``<folder>/`` ones alike (a folder holding
    ``configs/metadata.json``); hidden folders (exports in progress) are skipped.

    The flat layout is still read because site fine-tunes exported before the
    nested one live in deployed ``MODELS_ROOT`` volumes; nothing writes it by default.
    """
    root = Path(models_root)
    folders = set()
    for pattern in (f"*/*/{METADATA_PATH.as_posix()}", f"*/{METADATA_PATH.as_posix()}"):
        for meta_path in root.glob(pattern):
            folder = meta_path.parent.parent
            if not any(part.startswith(".") for part in folder.relative_to(root).parts):
                folders.add(folder)
    return sorted(folders)


def models_root_of(folder: Path | str, metadata: Mapping[str, Any]) -> Path:
    """The models root a bundle folder is in: two levels up for
    ``<root>/<name>/<version>``, one for a legacy flat ``<root>/<folder>``."""
    folder = Path(folder)
    if _is_nested(folder, metadata):
        return folder.parent.parent
    return folder.parent


def _is_nested(folder: Path, metadata: Mapping[str, Any]) -> bool:
    return folder.name == metadata.get("version") and (
        folder.parent.name == metadata.get("name")
    )


def write_bundle(
    directory: Path | str,
    *,
    metadata: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor] | nn.Module,
    model_card: str | None = None,
) -> Path:
    """Export a new bundle, atomically, without ever overwriting one.

    The bundle is assembled in a hidden temporary folder next to ``directory`` and
    renamed into place, so readers never see half a bundle. The weights must load
    into ``build_network(metadata["network_def"])`` with ``strict=True``.

    Args:
        directory: the bundle folder to create, ``<models root>/<name>/<version>``
            (:func:`bundle_path`), or a legacy flat ``<models root>/<folder>``;
            the models root is searched for an existing ``(name, version)``.
        metadata: keys of ``models/README.md``; :data:`REQUIRED_METADATA_KEYS` are
            required. ``schema``, ``task``, ``intended_use``, ``monai_version``,
            ``pytorch_version`` and ``numpy_version`` default to the current ones;
            ``weights_sha256`` is computed and replaces any given value.
        state_dict: the weights, or a module whose ``state_dict()`` is saved.
        model_card: text of ``docs/README.md``; not written when ``None``.

    The bundle also gets ``configs/inference.json``, the MONAI bundle config
    (:func:`inference.monai_bundle.inference_config`) that runs it with
    ``monai.bundle`` as the worker does.

    Returns:
        The path of the new bundle folder.

    Raises:
        BundleError: when the metadata is invalid, the weights do not fit, or
            ``directory`` is inside another bundle.
        BundleExistsError: when ``directory`` exists or the models root already
            holds the same ``(name, version)``.
    """
    directory = Path(directory)
    meta = _complete_metadata(validate_metadata(metadata))
    if isinstance(state_dict, nn.Module):
        state_dict = state_dict.state_dict()
    weights = {
        key: value.detach().to("cpu").clone() for key, value in state_dict.items()
    }
    _check_weights_fit(meta["network_def"], weights)
    buffer = io.BytesIO()
    torch.save(weights, buffer)
    payload = buffer.getvalue()
    meta["weights_sha256"] = sha256_bytes(payload)

    config = inference_config_text(meta).encode("utf-8")

    root = models_root_of(directory, meta)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root):
        if directory.exists():
            raise BundleExistsError(f"write_bundle: {directory}: already exists")
        if (directory.parent / METADATA_PATH).exists():
            raise BundleError(
                f"write_bundle: {directory}: inside the bundle {directory.parent}"
            )
        clash = _find_bundle(root, meta["name"], meta["version"])
        if clash is not None:
            raise BundleExistsError(
                f"write_bundle: {meta['name']} {meta['version']} already exists in "
                f"{clash}; bump the version"
            )
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(
            tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent)
        )
        try:
            _write_file(tmp / WEIGHTS_PATH, payload)
            _write_file(tmp / METADATA_PATH, _to_json(meta))
            _write_file(tmp / INFERENCE_CONFIG_PATH, config)
            if model_card is not None:
                _write_file(tmp / CARD_PATH, model_card.encode("utf-8"))
            os.chmod(tmp, 0o755)
            os.rename(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(directory.parent)
    return directory


def _to_json(data: Mapping[str, Any]) -> bytes:
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
    return text.encode("utf-8")


def _complete_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    import monai
    import numpy

    meta.setdefault("schema", SCHEMA)
    meta.setdefault("task", "denoising")
    meta.setdefault("intended_use", "research use, not for diagnosis")
    meta.setdefault("monai_version", monai.__version__)
    meta.setdefault("pytorch_version", torch.__version__)
    meta.setdefault("numpy_version", numpy.__version__)
    meta.setdefault("metrics", {})
    meta["training"].setdefault("parent", None)
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"metadata: not JSON-serialisable ({exc})") from None
    return meta


def _check_weights_fit(
    network_def: Mapping[str, Any], weights: Mapping[str, torch.Tensor]
) -> None:
    try:
        network = build_network(network_def)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"metadata: network_def cannot be built ({exc})") from None
    try:
        network.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise BundleError(
            f"write_bundle: weights do not fit network_def ({first})"
        ) from None


def _find_bundle(root: Path, name: str, version: str) -> Path | None:
    for folder in bundle_folders(root):
        try:
            meta = read_metadata(folder)
        except BundleError:
            continue
        if meta.get("name") == name and meta.get("version") == version:
            return folder
    return None


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    # An advisory lock on the root folder itself serialises concurrent exports
    # without leaving a lock file among the bundles.
    fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
