"""Correctness of the engine fast paths: chunked memmap pass, bf16 default, metrics."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from inference import denoise_volume, devices, engine, load_model, metrics, runner
from inference.networks import build_network
from inference.registry import LoadedModel

from .inference_fixtures import FAST_UNET, BundleFactory, phantom

SPACING = (2.5, 0.7, 0.7)


@pytest.fixture
def unet_model(make_bundle: BundleFactory, models_root: Path) -> LoadedModel:
    make_bundle("unet", network_def=FAST_UNET)
    return load_model("unet", models_root=models_root, device="cpu")


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "CHUNK_SLICES", 4)


def test_memmap_in_and_out_matches_the_in_memory_result(
    unet_model: LoadedModel, tmp_path: Path, small_chunks: None
) -> None:
    volume = phantom((11, 32, 24), seed=1).round().astype(np.int16)
    np.save(tmp_path / "volume.npy", volume)
    source = np.load(tmp_path / "volume.npy", mmap_mode="r")
    outputs = [
        np.lib.format.open_memmap(
            tmp_path / f"{name}.npy", mode="w+", dtype=np.float32, shape=volume.shape
        )
        for name in ("reconstruction", "residual")
    ]
    streamed = denoise_volume(
        source,
        unet_model,
        spacing=SPACING,
        precision="fp32",
        reconstruction_out=outputs[0],
        residual_out=outputs[1],
    )
    in_memory = denoise_volume(volume, unet_model, spacing=SPACING, precision="fp32")
    assert streamed.reconstruction is outputs[0]
    np.testing.assert_array_equal(outputs[0], in_memory.reconstruction)
    np.testing.assert_array_equal(outputs[1], in_memory.residual)
    assert streamed.metrics == in_memory.metrics
    as_float = volume.astype(np.float32)
    assert (
        streamed.provenance["input_sha256"]
        == hashlib.sha256(as_float.tobytes()).hexdigest()
    )
    assert (
        streamed.provenance["output_sha256"]
        == hashlib.sha256(in_memory.reconstruction.tobytes()).hexdigest()
    )


def test_progress_stays_increasing_across_chunks(
    unet_model: LoadedModel, small_chunks: None
) -> None:
    fractions: list[float] = []
    denoise_volume(
        phantom((10, 16, 16), seed=2),
        unet_model,
        spacing=SPACING,
        batch_size=2,
        progress=lambda f, _: fractions.append(f),
    )
    assert fractions == sorted(set(fractions))
    assert fractions[-1] == 1.0 and len(fractions) >= 5 + 2


def test_nan_in_a_later_chunk_is_refused(
    unet_model: LoadedModel, small_chunks: None
) -> None:
    volume = phantom((9, 16, 16), seed=3)
    volume[8, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        denoise_volume(volume, unet_model, spacing=SPACING)


def test_output_array_of_the_wrong_shape_is_refused(unet_model: LoadedModel) -> None:
    volume = phantom((2, 16, 16), seed=4)
    with pytest.raises(ValueError, match="reconstruction_out"):
        denoise_volume(
            volume,
            unet_model,
            spacing=SPACING,
            reconstruction_out=np.empty((2, 16, 8), np.float32),
        )


@pytest.mark.parametrize(
    ("kind", "native", "expected"),
    [
        ("fast_unet_noise", True, "bf16"),
        ("fast_unet_noise", False, "fp32"),
        ("redcnn", True, "fp32"),
        (None, True, "fp32"),
    ],
)
def test_auto_precision_on_cpu_is_bf16_only_for_validated_kinds(
    monkeypatch: pytest.MonkeyPatch, kind: str | None, native: bool, expected: str
) -> None:
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native)
    cpu = devices.select_device("cpu")
    assert devices.resolve_precision("auto", cpu, kind) == expected
    assert devices.resolve_precision("fp32", cpu, kind) == "fp32"


@pytest.mark.parametrize(
    ("fp32_ms", "bf16_ms", "expected"),
    [
        (30.0, 10.0, "bf16"),
        (11.0, 10.0, "bf16"),
        (10.9, 10.0, "fp32"),
        (17.0, 22.8, "fp32"),
    ],
)
def test_bf16_is_chosen_only_when_clearly_faster(
    fp32_ms: float, bf16_ms: float, expected: str
) -> None:
    assert runner._faster({"fp32": fp32_ms, "bf16": bf16_ms}) == expected


def test_auto_on_a_bf16_cpu_runs_the_precision_measured_faster(
    unet_model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    volume = phantom((3, 32, 32), seed=5)
    result = denoise_volume(volume, unet_model, spacing=SPACING)
    measured = result.provenance["parameters"]["precision_ms_per_slice"]
    assert set(measured) == {"fp32", "bf16"}
    assert all(ms > 0 for ms in measured.values())
    assert result.provenance["precision"] == runner._faster(measured)
    # Measured once per network: the next series reuses the choice.
    again = denoise_volume(volume, unet_model, spacing=SPACING)
    assert again.provenance["parameters"]["precision_ms_per_slice"] == measured
    chosen = runner.faster_cpu_precision(unet_model.network, batch_size=1)
    assert chosen == (result.provenance["precision"], measured)


@pytest.mark.parametrize("faster", ["fp32", "bf16"])
def test_auto_runs_exactly_what_the_measurement_chose(
    unet_model: LoadedModel, monkeypatch: pytest.MonkeyPatch, faster: str
) -> None:
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(runner, "_faster", lambda ms: faster)
    with torch.no_grad():  # weights whose bf16 rounding shows in the output
        for parameter in unet_model.network.parameters():
            parameter.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(2))
    volume = phantom((3, 32, 32), seed=5)
    auto = denoise_volume(volume, unet_model, spacing=SPACING)
    explicit = denoise_volume(volume, unet_model, spacing=SPACING, precision=faster)
    assert auto.provenance["precision"] == faster
    np.testing.assert_array_equal(auto.reconstruction, explicit.reconstruction)
    other = "bf16" if faster == "fp32" else "fp32"
    different = denoise_volume(volume, unet_model, spacing=SPACING, precision=other)
    assert not np.array_equal(auto.reconstruction, different.reconstruction)


def test_auto_without_native_bf16_measures_nothing(
    unet_model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    result = denoise_volume(phantom((2, 16, 16), seed=5), unet_model, spacing=SPACING)
    assert result.provenance["precision"] == "fp32"
    assert result.provenance["parameters"]["precision_ms_per_slice"] is None
    assert unet_model.network not in runner._choices


def test_bf16_output_stays_close_to_fp32(unet_model: LoadedModel) -> None:
    volume = phantom((3, 32, 32), seed=5)
    fp32 = denoise_volume(volume, unet_model, spacing=SPACING, precision="fp32")
    bf16 = denoise_volume(volume, unet_model, spacing=SPACING, precision="bf16")
    assert bf16.provenance["precision"] == "bf16"
    # The input skips bf16 (x - noise is fp32); only the noise estimate is rounded.
    np.testing.assert_allclose(
        bf16.reconstruction, fp32.reconstruction, atol=0.02 * 4096
    )


def test_not_flat_matches_the_max_min_filter_definition() -> None:
    rng = np.random.default_rng(6)
    chunk = rng.integers(0, 3, size=(3, 19, 23)).astype(np.float32)
    chunk[:, :8, :9] = 5.0
    chunk[1] = 1.0
    size = (1, 3, 3)
    expected = ndimage.maximum_filter(chunk, size=size, mode="nearest") != (
        ndimage.minimum_filter(chunk, size=size, mode="nearest")
    )
    np.testing.assert_array_equal(metrics._not_flat(chunk), expected)


def test_in_place_skips_without_autograd_change_nothing() -> None:
    torch.manual_seed(4)
    network = build_network(FAST_UNET).eval()
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.normal_(0.0, 0.3)
    batch = torch.randn(2, 1, 24, 16)
    with_grad = network(batch)  # the skips are added out of place
    assert with_grad.requires_grad
    with_grad.sum().backward()  # and autograd still works through them
    with torch.inference_mode():
        torch.testing.assert_close(network(batch), with_grad.detach(), rtol=0, atol=0)
