"""Tests for inference.bundle: writing, validating and reading model bundles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from inference.bundle import (
    INFERENCE_CONFIG_PATH,
    REQUIRED_METADATA_KEYS,
    SCHEMA,
    models_root_of,
    read_metadata,
    sha256_file,
    write_bundle,
)
from inference.errors import BundleError, BundleExistsError
from inference.networks import build_network

from .inference_fixtures import REDCNN, BundleFactory, metadata


def test_write_bundle_creates_layout_with_weights_hash(models_root: Path) -> None:
    path = write_bundle(
        models_root / "tiny",
        metadata=metadata(),
        state_dict=build_network(REDCNN),
        model_card="# tiny\n",
    )
    meta = json.loads((path / "configs" / "metadata.json").read_text())
    assert meta["weights_sha256"] == sha256_file(path / "models" / "model.pt")
    assert meta["schema"] == SCHEMA
    assert meta["monai_version"] and meta["pytorch_version"] and meta["numpy_version"]
    assert (path / "docs" / "README.md").read_text() == "# tiny\n"
    assert read_metadata(path) == meta
    assert [p.name for p in models_root.iterdir()] == ["tiny"]


def test_saved_weights_are_a_plain_state_dict(make_bundle: BundleFactory) -> None:
    path = make_bundle()
    state = torch.load(path / "models" / "model.pt", weights_only=True)
    build_network(REDCNN).load_state_dict(state, strict=True)


def test_existing_directory_is_never_overwritten(make_bundle: BundleFactory) -> None:
    path = make_bundle(folder="tiny")
    before = sha256_file(path / "models" / "model.pt")
    with pytest.raises(BundleExistsError, match="already exists"):
        make_bundle(version="2.0.0", folder="tiny")
    assert sha256_file(path / "models" / "model.pt") == before


def test_existing_name_and_version_in_another_folder_is_refused(
    make_bundle: BundleFactory, models_root: Path
) -> None:
    make_bundle(folder="first")
    with pytest.raises(BundleExistsError, match="tiny 1.0.0"):
        make_bundle(folder="second")
    assert sorted(p.name for p in models_root.iterdir()) == ["first"]


@pytest.mark.parametrize("key", REQUIRED_METADATA_KEYS)
def test_missing_required_key_is_refused(models_root: Path, key: str) -> None:
    meta = metadata()
    del meta[key]
    with pytest.raises(BundleError, match=key):
        write_bundle(models_root / "x", metadata=meta, state_dict=build_network(REDCNN))
    assert not any(models_root.iterdir())


@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "1.0.0-rc1", "01.0.0", ""])
def test_non_semver_version_is_refused(models_root: Path, version: str) -> None:
    with pytest.raises(BundleError, match="MAJOR.MINOR.PATCH"):
        write_bundle(
            models_root / "x",
            metadata=metadata(version=version),
            state_dict=build_network(REDCNN),
        )


def test_weights_that_do_not_fit_the_network_are_refused(models_root: Path) -> None:
    other = build_network({"kind": "redcnn", "args": {"features": 8, "depth": 2}})
    with pytest.raises(BundleError, match="do not fit"):
        write_bundle(models_root / "x", metadata=metadata(), state_dict=other)
    assert not any(models_root.iterdir())


def test_bad_input_spec_names_the_field(models_root: Path) -> None:
    meta = metadata()
    meta["input_spec"]["normalisation"] = {"kind": "linear", "offset": 0, "scale": 0}
    with pytest.raises(BundleError, match="normalisation.scale"):
        write_bundle(models_root / "x", metadata=meta, state_dict=build_network(REDCNN))


@pytest.mark.parametrize(
    ("keep", "message"),
    [
        ({"sigma_mm": 0}, "keep_low_frequencies.sigma_mm must be a number > 0"),
        ({"sigma_mm": "wide"}, "keep_low_frequencies.sigma_mm must be a number > 0"),
        ([0.9], "keep_low_frequencies must be null or an object"),
    ],
)
def test_a_bad_keep_low_frequencies_is_refused(keep, message: str) -> None:
    from inference.bundle import validate_input_spec

    spec = {**metadata()["input_spec"], "keep_low_frequencies": keep}
    with pytest.raises(BundleError, match=message):
        validate_input_spec(spec)
    good = validate_input_spec({**spec, "keep_low_frequencies": {"sigma_mm": 0.9}})
    assert good["keep_low_frequencies"] == {"sigma_mm": 0.9}
    with pytest.raises(BundleError, match="needs spatial_dims 2"):
        validate_input_spec({**good, "spatial_dims": 3, "roi_size": None})


def test_caller_metadata_is_not_modified(models_root: Path) -> None:
    meta = metadata()
    meta["training"].pop("parent")
    snapshot = json.dumps(meta, sort_keys=True)
    write_bundle(models_root / "x", metadata=meta, state_dict=build_network(REDCNN))
    assert json.dumps(meta, sort_keys=True) == snapshot


def test_read_metadata_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="metadata.json: no such file"):
        read_metadata(tmp_path)


def test_a_version_goes_in_name_version_beside_the_others(
    make_bundle: BundleFactory, models_root: Path
) -> None:
    first = make_bundle("tiny", "1.0.0")
    second = make_bundle("tiny", "1.1.0")
    assert (first, second) == (models_root / "tiny/1.0.0", models_root / "tiny/1.1.0")
    assert models_root_of(second, read_metadata(second)) == models_root
    assert sorted(p.name for p in (models_root / "tiny").iterdir()) == [
        "1.0.0",
        "1.1.0",
    ]
    assert (second / INFERENCE_CONFIG_PATH).is_file()


def test_a_nested_version_clashing_with_a_legacy_folder_is_refused(
    make_bundle: BundleFactory, models_root: Path
) -> None:
    make_bundle("tiny", "1.0.0", folder="tiny-1.0.0")
    with pytest.raises(BundleExistsError, match=r"tiny 1\.0\.0 already exists"):
        make_bundle("tiny", "1.0.0")
    assert not (models_root / "tiny").exists()


def test_a_bundle_is_never_written_inside_another(
    make_bundle: BundleFactory, models_root: Path
) -> None:
    make_bundle("tiny", "1.0.0", folder="tiny")
    with pytest.raises(BundleError, match="inside the bundle"):
        make_bundle("tiny", "1.1.0")
    assert sorted(p.name for p in (models_root / "tiny").iterdir()) == [
        "configs",
        "models",
    ]
