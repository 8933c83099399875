"""Tests for inference.registry: discovery, versions, integrity checks, cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from inference.bundle import read_metadata
from inference.errors import BundleError, ModelIntegrityError, ModelNotFoundError
from inference.registry import list_models, load_model

from .inference_fixtures import BundleFactory


def flip_byte(path: Path, offset: int = -10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_load_model_builds_network_in_eval_mode(
    make_bundle: BundleFactory, models_root: Path
) -> None:
    path = make_bundle()
    model = load_model("tiny", models_root=models_root, device="cpu")
    assert (model.name, model.version) == ("tiny", "1.0.0")
    assert model.sha256 == read_metadata(path)["weights_sha256"]
    assert not model.network.training
    assert model.input_spec["modality"] == "CT"


def test_flipped_byte_in_weights_is_refused(
    make_bundle: BundleFactory, models_root: Path
) -> None:
    path = make_bundle()
    expected = read_metadata(path)["weights_sha256"]
    flip_byte(path / "models" / "model.pt")
    with pytest.raises(ModelIntegrityError) as info:
        load_model("tiny", models_root=models_root, device="cpu")
    assert info.value.expected == expected
    assert info.value.actual != expected
    message = str(info.value)
    assert (
        "model.pt" in message and expected in message and info.value.actual in message
    )


def test_tampering_after_a_cached_load_is_still_refused(
    make_bundle: BundleFactory, models_root: Path
) -> None:
    path = make_bundle()
    load_model("tiny", models_root=models_root, device="cpu")
    flip_byte(path / "models" / "model.pt")
    with pytest.raises(ModelIntegrityError):
        load_model("tiny", models_root=models_root, device="cpu")


def test_repeated_loads_share_the_cached_network(
    make_bundle: BundleFactory, models_root: Path
) -> None:
    make_bundle()
    first = load_model("tiny", models_root=models_root, device="cpu")
    second = load_model("tiny", "1.0.0", models_root=models_root, device="cpu")
    assert second.network is first.network


def test_highest_semantic_version_is_chosen(
    make_bundle: BundleFactory, models_root: Path
) -> None:
    for version in ("1.2.0", "1.10.0", "1.9.3"):
        make_bundle(version=version)
    assert load_model("tiny", models_root=models_root, device="cpu").version == "1.10.0"


@pytest.mark.parametrize(("name", "version"), [("tiny", "1.2.0"), ("tiny:1.2.0", None)])
def test_explicit_version_is_loaded(
    make_bundle: BundleFactory, models_root: Path, name: str, version: str | None
) -> None:
    make_bundle(version="1.2.0")
    make_bundle(version="2.0.0")
    model = load_model(name, version, models_root=models_root, device="cpu")
    assert model.version == "1.2.0"


@pytest.mark.parametrize(
    ("default", "expected"),
    [("other", ("other", "0.2.0")), ("tiny:1.0.0", ("tiny", "1.0.0"))],
)
def test_default_bundle_comes_from_default_file(
    make_bundle: BundleFactory,
    models_root: Path,
    default: str,
    expected: tuple[str, str],
) -> None:
    make_bundle("tiny", "1.0.0")
    make_bundle("tiny", "1.1.0")
    make_bundle("other", "0.1.0")
    make_bundle("other", "0.2.0")
    (models_root / "DEFAULT").write_text(default + "\n")
    model = load_model(models_root=models_root, device="cpu")
    assert (model.name, model.version) == expected
    defaults = [(m.name, m.version) for m in list_models(models_root) if m.default]
    assert defaults == [expected]


def test_models_root_comes_from_environment(
    make_bundle: BundleFactory, models_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_bundle()
    (models_root / "DEFAULT").write_text("tiny")
    monkeypatch.setenv("MODELS_ROOT", str(models_root))
    assert load_model(device="cpu").name == "tiny"


def test_missing_default_file_is_reported(
    make_bundle: BundleFactory, models_root: Path
) -> None:
    make_bundle()
    with pytest.raises(ModelNotFoundError, match="DEFAULT"):
        load_model(models_root=models_root, device="cpu")


@pytest.mark.parametrize(("name", "version"), [("nope", None), ("tiny", "9.9.9")])
def test_unknown_model_lists_what_is_registered(
    make_bundle: BundleFactory, models_root: Path, name: str, version: str | None
) -> None:
    make_bundle()
    with pytest.raises(ModelNotFoundError, match=r"registered: tiny:1\.0\.0"):
        load_model(name, version, models_root=models_root, device="cpu")


def test_list_models_keys_by_metadata_not_folder(
    make_bundle: BundleFactory, models_root: Path
) -> None:
    make_bundle("tiny", "1.0.0", folder="whatever", description="CT denoiser")
    (models_root / "not-a-bundle").mkdir()
    (infos,) = list_models(models_root)
    assert (infos.name, infos.version, infos.modality) == ("tiny", "1.0.0", "CT")
    assert infos.path.name == "whatever"
    assert infos.description == "CT denoiser"
    assert len(infos.sha256) == 64
    assert infos.default is False


def test_nested_and_legacy_flat_bundles_are_listed_together(
    make_bundle: BundleFactory, models_root: Path
) -> None:
    make_bundle("tiny", "1.0.0", folder="tiny-old")
    make_bundle("tiny", "1.1.0")
    make_bundle("other", "2.0.0")
    # An export in progress (a hidden folder beside the versions) is not a bundle.
    hidden = models_root / "tiny" / ".1.2.0.tmp-x"
    (hidden / "configs").mkdir(parents=True)
    (hidden / "configs" / "metadata.json").write_text("{}")
    infos = list_models(models_root)
    assert [(i.name, i.version, i.path.relative_to(models_root)) for i in infos] == [
        ("other", "2.0.0", Path("other/2.0.0")),
        ("tiny", "1.0.0", Path("tiny-old")),
        ("tiny", "1.1.0", Path("tiny/1.1.0")),
    ]
    model = load_model("tiny", models_root=models_root, device="cpu")
    assert (model.version, model.path) == ("1.1.0", models_root / "tiny" / "1.1.0")


def test_the_same_version_in_both_layouts_is_refused(
    make_bundle: BundleFactory, models_root: Path
) -> None:
    make_bundle("tiny", "1.0.0")
    legacy = models_root / "tiny-1.0.0"
    shutil.copytree(models_root / "tiny" / "1.0.0", legacy)
    with pytest.raises(BundleError, match="tiny 1.0.0 is in both"):
        list_models(models_root)
