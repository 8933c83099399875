"""Convolution + ReLU fused for CPU inference (inference.fused): the same output as the
network run as it is, built once per weights, and refused where it would not be."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import torch
from monai.networks.blocks import Convolution
from torch import nn

from inference import fused, runner
from inference.fused import FusedConvolution, cpu_network
from inference.networks import build_network
from inference.runner import Normalisation, predict_slices

from .inference_fixtures import CT_SPEC, FAST_UNET, REDCNN

pytestmark = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="this PyTorch build has no oneDNN"
)
#: bf16 is checked only where oneDNN computes it (an emulated bf16 is never chosen by
#: "auto", and may be refused by the check, which the fallback tests cover).
PRECISIONS = ["fp32"] + (
    ["bf16"] if torch.ops.mkldnn._is_mkldnn_bf16_supported() else []
)


def _unet(seed: int = 0) -> nn.Module:
    """The shipped network kind, with random weights (the bundle's head starts at
    zero, which would hide a wrong head)."""
    torch.manual_seed(seed)
    network = build_network(FAST_UNET).eval()
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.normal_(0.0, 0.3)
    return network


def _reference(network: nn.Module, batch: torch.Tensor, precision: str) -> torch.Tensor:
    with (
        torch.inference_mode(),
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"),
    ):
        return network(batch).float()


@pytest.mark.parametrize("precision", PRECISIONS)
def test_fused_network_gives_the_plain_networks_output(precision: str) -> None:
    network = _unet()
    batch = torch.randn(3, 1, 48, 40)
    copy = cpu_network(network, precision)
    assert copy is not None
    with torch.inference_mode():
        got = copy(batch)
    assert got.dtype == torch.float32
    expected = _reference(network, batch, precision)
    # The same oneDNN convolutions in the same dtype: equal to rounding.
    tolerance = 1e-5 if precision == "fp32" else 1e-2
    scale = float(expected.abs().max())
    assert float((got - expected).abs().max()) <= tolerance * scale


def test_every_block_is_fused_and_the_network_itself_is_untouched() -> None:
    network = _unet()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    blocks = sum(isinstance(m, Convolution) for m in network.modules())
    copy = cpu_network(network, "fp32")
    assert sum(isinstance(m, FusedConvolution) for m in copy.modules()) == blocks
    assert not any(isinstance(m, nn.ReLU | Convolution) for m in copy.modules())
    assert not list(copy.parameters())
    for key, value in network.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert any(isinstance(m, Convolution) for m in network.modules())


def test_the_copy_is_reused_and_rebuilt_when_the_weights_change() -> None:
    network = _unet()
    first = cpu_network(network, "fp32")
    assert cpu_network(network, "fp32") is first
    head = network.head.conv
    with torch.no_grad():
        head.bias.add_(5.0)  # in place, as an optimiser step does
    second = cpu_network(network, "fp32")
    assert second is not first
    batch = torch.randn(1, 1, 32, 32)
    with torch.inference_mode():
        np.testing.assert_allclose(
            second(batch).numpy(), first(batch).numpy() - 5.0, rtol=0, atol=1e-4
        )
        np.testing.assert_allclose(
            second(batch).numpy(), network(batch).numpy(), rtol=0, atol=1e-5
        )


def test_a_state_dict_loaded_in_place_rebuilds_the_copy() -> None:
    network, other = _unet(seed=0), _unet(seed=1)
    first = cpu_network(network, "fp32")
    network.load_state_dict(other.state_dict())
    second = cpu_network(network, "fp32")
    assert second is not first
    batch = torch.randn(1, 1, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(second(batch), other(batch), rtol=1e-5, atol=1e-5)


def test_a_network_in_training_mode_is_not_fused() -> None:
    network = _unet().train()
    assert cpu_network(network, "fp32") is None


def test_parameters_without_version_counters_are_not_fused() -> None:
    with torch.inference_mode():
        network = build_network(FAST_UNET).eval()
    assert cpu_network(network, "fp32") is None


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
def test_fusion_follows_the_onednn_switch() -> None:
    network = _unet()
    with torch.backends.mkldnn.flags(enabled=False):
        assert cpu_network(network, "fp32") is None
    assert cpu_network(network, "fp32") is not None


def test_a_network_that_cannot_be_copied_runs_as_is(
    caplog: pytest.LogCaptureFixture,
) -> None:
    network = _unet()
    network.guard = threading.Lock()  # deepcopy refuses locks
    with caplog.at_level(logging.WARNING, logger="inference.fused"):
        assert cpu_network(network, "fp32") is None
    assert "TypeError" in caplog.text


def test_a_bare_block_is_not_replaced_by_itself() -> None:
    block = Convolution(2, 1, 2, kernel_size=3, act="relu", norm=None).eval()
    # The block itself would have to be replaced: its parameters stay, so no copy.
    assert cpu_network(block, "fp32") is None


@pytest.mark.parametrize(
    "network_def",
    [
        {"kind": "fast_unet_noise", "args": {**FAST_UNET["args"], "spatial_dims": 3}},
        {"kind": "unet_noise", "args": {"features": [4, 4, 8, 8, 8, 4]}},
    ],
    ids=["3d", "unet-with-leaky-relu"],
)
def test_networks_with_layers_it_cannot_fuse_run_as_they_are(
    network_def: dict,
) -> None:
    network = build_network(network_def).eval()
    assert cpu_network(network, "fp32") is None


def test_redcnn_with_padded_transposed_convolutions_fuses_too() -> None:
    network = build_network(REDCNN).eval()
    blocks = [m for m in network.modules() if isinstance(m, Convolution)]
    assert [fused.fusable(b) for b in blocks] == [True, True, True, False]
    copy = cpu_network(network, "fp32")
    assert copy is not None
    batch = torch.randn(2, 1, 24, 24)
    with torch.inference_mode():
        torch.testing.assert_close(copy(batch), network(batch), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "conv",
    [
        nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
        nn.ConvTranspose2d(4, 4, (2, 3), stride=(2, 1), padding=(0, 1), dilation=2),
        nn.Conv2d(
            4, 6, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2
        ),
        nn.Conv2d(4, 2, 3, padding=0, bias=False),
    ],
    ids=[
        "transposed-groups-output-padding",
        "transposed-dilated",
        "grouped",
        "no-bias",
    ],
)
@pytest.mark.parametrize("relu", [True, False])
def test_fused_convolution_equals_the_layer_it_replaces(
    conv: nn.Module, relu: bool
) -> None:
    torch.manual_seed(3)
    batch = torch.randn(2, 4, 13, 11).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = conv(batch)
        if relu:
            expected = torch.relu(expected)
        got = FusedConvolution(conv, relu)(batch)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_a_copy_that_differs_is_refused_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    network = _unet()
    build = fused._build

    def off_by_a_little(net: nn.Module, dtype: torch.dtype) -> nn.Module:
        copy = build(net, dtype)
        copy.head.bias.add_(0.01 * float(copy.head.weight.abs().max()) + 0.05)
        return copy

    monkeypatch.setattr(fused, "_build", off_by_a_little)
    with caplog.at_level(logging.WARNING, logger="inference.fused"):
        assert cpu_network(network, "fp32") is None
    assert "output differs" in caplog.text


def test_a_copy_that_fails_is_refused_with_the_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    network = _unet()

    def unsupported(self: FusedConvolution, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("could not create a primitive descriptor")

    monkeypatch.setattr(FusedConvolution, "forward", unsupported)
    with caplog.at_level(logging.WARNING, logger="inference.fused"):
        assert cpu_network(network, "fp32") is None
    assert "could not create a primitive descriptor" in caplog.text


def test_fused_convolution_refuses_what_it_cannot_compute() -> None:
    with pytest.raises(ValueError, match="Conv2d or ConvTranspose2d"):
        FusedConvolution(nn.Conv3d(1, 1, 3))
    with pytest.raises(ValueError, match="zero padding"):
        FusedConvolution(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(ValueError, match="zero padding"):
        FusedConvolution(nn.Conv2d(1, 1, 3, padding="same"))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_predict_slices_runs_the_fused_copy_with_the_same_result(
    precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    network = _unet()
    images = torch.from_numpy(
        np.random.default_rng(1).normal(40, 300, (5, 37, 29)).astype(np.float32)
    )
    spec = {**CT_SPEC, "batch_size": 2}
    norm = Normalisation(kind="linear", offset=-1024.0, scale=4096.0)
    calls: list[nn.Module] = []

    def recording(net: nn.Module, prec: str) -> nn.Module | None:
        copy = cpu_network(net, prec)
        calls.append(copy)
        return copy

    def run() -> torch.Tensor:
        return predict_slices(
            images,
            network,
            spec=spec,
            norm=norm,
            device=torch.device("cpu"),
            precision=precision,
            batch_size=2,
        )

    monkeypatch.setattr(runner, "cpu_network", recording)
    got = run()
    assert calls and calls[0] is not None
    monkeypatch.setattr(runner, "cpu_network", lambda net, prec: None)
    expected = run()
    tolerance = 1e-5 if precision == "fp32" else 1e-2  # of the largest value
    scale = float(expected.abs().max())
    assert float((got - expected).abs().max()) <= tolerance * scale
