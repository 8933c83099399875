"""The device-resident path of the engine (GPU) and its pieces, checked on the CPU
against the NumPy path; on a machine with CUDA the same comparisons run there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inference import denoise_volume, engine, load_model
from inference.registry import LoadedModel
from inference.runner import reflect_pad

from .inference_fixtures import FAST_UNET, BundleFactory, phantom

SPACING = (2.5, 0.7, 0.7)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("size", [1, 2, 3, 7])
@pytest.mark.parametrize("pad", [(0, 0), (1, 2), (5, 4), (17, 9), (1, 8), (0, 30)])
def test_reflect_pad_matches_numpy_even_past_the_image(
    size: int, pad: tuple[int, int]
) -> None:
    image = np.arange(size * 3, dtype=np.float32).reshape(3, size)
    expected = np.pad(image, [(1, 0), pad], mode="reflect")
    got = reflect_pad(torch.from_numpy(image)[None, None], [(1, 0), pad])
    np.testing.assert_array_equal(got[0, 0].numpy(), expected)


@pytest.fixture
def unet(make_bundle: BundleFactory, models_root: Path) -> LoadedModel:
    make_bundle("unet", network_def=FAST_UNET)
    return load_model("unet", models_root=models_root, device="cpu")


def test_device_resident_pass_gives_the_numpy_pass_result(
    unet: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume = phantom((9, 40, 36), seed=12)
    monkeypatch.setattr(engine, "CHUNK_SLICES", 4)
    options = {"spacing": SPACING, "precision": "fp32", "batch_size": 2}
    on_host = denoise_volume(volume, unet, **options)
    monkeypatch.setattr(engine, "stays_on_device", lambda device: True)
    on_device = denoise_volume(volume, unet, **options)
    np.testing.assert_array_equal(on_device.reconstruction, on_host.reconstruction)
    np.testing.assert_array_equal(on_device.residual, on_host.residual)
    for key in ("input_sha256", "output_sha256"):
        assert on_device.provenance[key] == on_host.provenance[key]
    for name, value in on_host.metrics["per_slice"].items():
        np.testing.assert_allclose(
            np.asarray(on_device.metrics["per_slice"][name], dtype=float),
            np.asarray(value, dtype=float),
            rtol=1e-5,
            atol=1e-6,
            err_msg=name,
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_run_matches_the_cpu_run(
    make_bundle: BundleFactory, models_root: Path
) -> None:
    make_bundle("redcnn")
    volume = phantom((6, 64, 48), seed=13)
    cpu = denoise_volume(
        volume,
        load_model("redcnn", models_root=models_root, device="cpu"),
        spacing=SPACING,
        precision="fp32",
    )
    cuda = denoise_volume(
        volume,
        load_model("redcnn", models_root=models_root, device="cuda"),
        spacing=SPACING,
        precision="fp32",
    )
    assert cuda.provenance["hardware"]["device"].startswith("cuda")
    np.testing.assert_allclose(cuda.reconstruction, cpu.reconstruction, atol=0.05)
    assert cuda.metrics["flagged_slices"] == cpu.metrics["flagged_slices"]


@pytest.mark.parametrize(("side", "expected"), [(512, 32), (1024, 8), (4096, 8)])
def test_chunks_hold_a_bounded_number_of_bytes(side: int, expected: int) -> None:
    assert engine._chunk_slices((side, side), batch=8) == expected


@pytest.mark.parametrize(("side", "expected"), [(512, 32), (1024, 8), (2048, 4)])
def test_accelerators_default_to_larger_batches_within_the_chunk_bytes(
    unet: LoadedModel, monkeypatch: pytest.MonkeyPatch, side: int, expected: int
) -> None:
    spec_batch = unet.input_spec["batch_size"]
    on_cpu = max(1, min(spec_batch, engine.CPU_BATCH_PIXELS // side**2))
    assert engine._check_batch_size(None, unet, (side, side)) == on_cpu
    monkeypatch.setattr(engine, "stays_on_device", lambda device: True)
    assert engine._check_batch_size(None, unet, (side, side)) == max(
        expected, spec_batch
    )
    assert engine._check_batch_size(3, unet, (side, side)) == 3


def test_dropping_pages_of_a_finished_chunk_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "out.npy"
    out = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.float32, shape=(8, 64, 64)
    )
    values = np.random.default_rng(14).normal(size=out.shape).astype(np.float32)
    out[:5] = values[:5]
    engine._release_pages(out[:5])
    out[5:] = values[5:]
    engine._release_pages(out[5:])
    np.testing.assert_array_equal(out, values)
    out.flush()
    del out
    np.testing.assert_array_equal(np.load(path), values)


def test_copy_on_write_maps_are_never_dropped(tmp_path: Path) -> None:
    path = tmp_path / "in.npy"
    np.save(path, np.zeros((4, 32, 32), np.float32))
    private = np.load(path, mmap_mode="c")
    private[:2] = 7.0
    engine._release_pages(private[:2])
    assert float(private[:2].min()) == 7.0


def test_strided_and_read_only_memmaps_are_handled(
    unet: LoadedModel, tmp_path: Path
) -> None:
    volume = phantom((5, 32, 32), seed=15)
    np.save(tmp_path / "in.npy", volume)
    read_only = np.load(tmp_path / "in.npy", mmap_mode="r")
    out = np.lib.format.open_memmap(
        tmp_path / "out.npy", mode="w+", dtype=np.float32, shape=volume.shape
    )
    reversed_out = out[::-1]
    result = denoise_volume(
        read_only,
        unet,
        spacing=SPACING,
        precision="fp32",
        reconstruction_out=reversed_out,
    )
    expected = denoise_volume(volume, unet, spacing=SPACING, precision="fp32")
    np.testing.assert_array_equal(result.reconstruction, expected.reconstruction)
    np.testing.assert_array_equal(out[::-1], expected.reconstruction)


def test_populated_output_pages_take_no_faults_when_written(tmp_path) -> None:
    import resource

    shape = (8, 256, 256)  # 2 MiB of float32: 512 pages
    values = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)

    def faults_writing(populate: bool) -> int:
        out = np.lib.format.open_memmap(
            tmp_path / f"out-{populate}.npy", mode="w+", dtype=np.float32, shape=shape
        )
        if populate:
            engine._populate_pages(out)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        out[...] = values
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        out.flush()
        np.testing.assert_array_equal(np.load(tmp_path / f"out-{populate}.npy"), values)
        return faults

    plain = faults_writing(False)
    if plain < 100:
        pytest.skip("this kernel maps file pages in without a fault per page")
    assert faults_writing(True) < plain / 10


def test_populating_leaves_read_only_and_private_maps_alone(tmp_path) -> None:
    path = tmp_path / "in.npy"
    np.save(path, np.ones((4, 64, 64), dtype=np.float32))
    for mode in ("r", "c"):
        array = np.load(path, mmap_mode=mode)
        engine._populate_pages(array, array[:, ::2])  # strided views too
        np.testing.assert_array_equal(array, 1.0)
