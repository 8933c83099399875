"""Reflect padding through MONAI's ``Pad``: NumPy's numbers, MONAI's pad widths, and
the same network outputs as padding the image beforehand."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from monai.transforms import DivisiblePad, SpatialPad

from inference.networks import build_network
from inference.runner import Normalisation, padding_for, predict, reflect_pad

from .inference_fixtures import CT_SPEC, REDCNN, phantom

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

#: (batch shape, multiple, minimum): MONAI's path, and the fallback for pads as wide
#: as the image and for 1-pixel axes.
CASES = [
    ((2, 1, 37, 29), 8, None),
    ((3, 2, 64, 63), 16, None),
    ((1, 1, 100, 90), 32, None),
    ((2, 1, 40, 27), 8, (48, 48)),
    ((1, 1, 512, 512), 32, None),
    ((2, 1, 3, 33), 16, (64, 64)),
    ((1, 1, 1, 9), 8, None),
    ((1, 1, 4, 4), 8, None),
    ((1, 1, 10, 24, 20), 8, (8, 16, 16)),
    ((1, 1, 5, 30, 31), 4, None),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("shape", "multiple", "minimum"), CASES)
def test_reflect_pad_gives_numpys_reflect_padding(
    shape: tuple[int, ...], multiple: int, minimum: Any, device: str
) -> None:
    batch = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    pads = padding_for(shape[2:], multiple, minimum)
    expected = np.pad(batch, [(0, 0), (0, 0), *pads], mode="reflect")
    got = reflect_pad(torch.from_numpy(batch).to(device), pads)
    assert type(got) is torch.Tensor
    np.testing.assert_array_equal(got.cpu().numpy(), expected)


@pytest.mark.parametrize(("shape", "multiple", "minimum"), CASES)
def test_pad_widths_are_monais(
    shape: tuple[int, ...], multiple: int, minimum: Any
) -> None:
    pads = padding_for(shape[2:], multiple, minimum)
    target = [
        size + before + after
        for size, (before, after) in zip(shape[2:], pads, strict=True)
    ]
    assert [tuple(p) for p in SpatialPad(target).compute_pad_width(shape[2:])] == [
        (0, 0),
        *pads,
    ]
    if minimum is None:
        widths = DivisiblePad(multiple).compute_pad_width(shape[2:])
        assert [tuple(p) for p in widths] == [(0, 0), *pads]


@pytest.mark.parametrize("shape", [(2, 37, 29), (3, 64, 63), (1, 3, 33), (2, 1, 9)])
def test_padding_inside_predict_equals_padding_beforehand(
    shape: tuple[int, int, int],
) -> None:
    """Outputs are bit-identical to running the network on the image padded with
    NumPy first and cropping the result."""
    torch.manual_seed(0)
    network = build_network(REDCNN).eval()
    spec = dict(CT_SPEC, size_multiple=8)
    norm = Normalisation("linear", -1024.0, 4096.0)
    volume = phantom(shape, seed=7)
    pads = padding_for(shape[1:], 8)
    padded = np.pad(volume, [(0, 0), *pads], mode="reflect")
    options: dict[str, Any] = {
        "spec": spec,
        "norm": norm,
        "device": torch.device("cpu"),
        "precision": "fp32",
        "batch_size": 2,
    }
    out = np.empty_like(volume)
    predict(volume, network, out=out, **options)
    reference = np.empty_like(padded)
    predict(padded, network, out=reference, **options)
    crop = tuple(
        slice(before, before + size)
        for (before, _), size in zip(pads, shape[1:], strict=True)
    )
    np.testing.assert_array_equal(out, reference[(slice(None), *crop)])
