"""Convolution and ReLU fused into one oneDNN call for CPU inference.

Run eagerly, every MONAI ``Convolution`` block (convolution, then ReLU) is two passes
over its output, and the thin full-resolution layers of the denoisers are bound by
memory traffic. oneDNN can apply the ReLU as a post-op while the output is still in
registers: ``torch.ops.mkldnn._convolution_pointwise``, the operator ``torch.compile``
emits for these layers on a CPU, used here without its compile step or recompiles per
input shape. What it saves, measured: ``bench/results/fast-paths.md``.

:func:`cpu_network` returns a copy of a network in which each such block is replaced
by one fused call with its weights stored in the run's precision. The network's own
``forward`` is unchanged, so the same additions, skips and output arithmetic run. The
copy is checked against the network run as is (under autocast for bf16) on a small
CT-like input before it is used: its estimate (output minus input) must agree to
rounding. A network with any other parameterised layer runs as it is; an operator
missing from the PyTorch build, a copy that cannot be built, or any difference beyond
rounding falls back to the plain network with a warning. The fused bf16 copy runs the
network's other operations in bf16 too, which matches autocast for the operations the
bundled kinds use between convolutions (addition, subtraction, ReLU); the check
catches any other.
"""

from __future__ import annotations

import copy
import logging
import threading
import weakref

import torch
from monai.networks.blocks import Convolution
from torch import nn

from inference.devices import autocast

__all__ = ["FusedConvolution", "cpu_network", "fusable"]

logger = logging.getLogger(__name__)

#: Tolerance of the check, relative to the largest value of the plain network's
#: estimate (output minus input): the fused operator runs the same oneDNN
#: convolutions, so fp32 agrees to rounding and bf16 to a few bf16 steps.
_CHECK_RTOL = {"fp32": 1e-5, "bf16": 4e-3}
#: Spatial size of the check's input (a multiple of every bundled network's stride).
_CHECK_SIZE = 32

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
_lock = threading.Lock()
#: network -> {precision: (parameter versions, fused copy, or None to run it as is)}
_cache: weakref.WeakKeyDictionary[nn.Module, dict[str, tuple[tuple, nn.Module | None]]]
_cache = weakref.WeakKeyDictionary()


class FusedConvolution(nn.Module):
    """A 2D (transposed) convolution with an optional ReLU, as one oneDNN operator.

    Args:
        conv: the ``nn.Conv2d`` or ``nn.ConvTranspose2d`` whose weights are used;
            zero padding given as integers.
        relu: apply ReLU to the output, default ``True``.
        dtype: the weights' and the output's dtype, ``torch.float32`` (default) or
            ``torch.bfloat16``; inputs are converted to it.

    Raises:
        ValueError: for another layer type, string or non-zero padding modes.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None

    def __init__(
        self, conv: nn.Module, relu: bool = True, dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        if not isinstance(conv, nn.Conv2d | nn.ConvTranspose2d):
            raise ValueError(f"expected Conv2d or ConvTranspose2d, got {type(conv)}")
        if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
            raise ValueError(
                f"expected integer zero padding, got padding={conv.padding!r}, "
                f"padding_mode={conv.padding_mode!r}"
            )
        self.transposed = isinstance(conv, nn.ConvTranspose2d)
        self.attr = "relu" if relu else "none"
        self.padding = list(conv.padding)
        self.output_padding = list(conv.output_padding)
        self.stride = list(conv.stride)
        self.dilation = list(conv.dilation)
        self.groups = conv.groups
        weight = conv.weight.detach().to(dtype)
        self.register_buffer(
            "weight", weight.contiguous(memory_format=torch.channels_last)
        )
        bias = conv.bias.detach().to(dtype) if conv.bias is not None else None
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.weight.dtype)
        if self.transposed:
            return torch.ops.mkldnn._convolution_transpose_pointwise(
                x,
                self.weight,
                self.bias,
                self.padding,
                self.output_padding,
                self.stride,
                self.dilation,
                self.groups,
                self.attr,
                [],
                None,
            )
        return torch.ops.mkldnn._convolution_pointwise(
            x,
            self.weight,
            self.bias,
            self.padding,
            self.stride,
            self.dilation,
            self.groups,
            self.attr,
            [],
            None,
        )


def fusable(block: nn.Module) -> bool | None:
    """What a MONAI ``Convolution`` block would fuse into.

    Args:
        block: any module.

    Returns:
        ``True`` for a 2D (transposed) convolution with integer zero padding
        followed by ReLU, ``False`` for such a convolution alone, ``None`` for
        anything else (normalisation, dropout, another activation, 3D, other
        padding, or not such a block).
    """
    if not isinstance(block, Convolution):
        return None
    children = dict(block.named_children())
    conv = children.pop("conv", None)
    if not isinstance(conv, nn.Conv2d | nn.ConvTranspose2d):
        return None
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        return None
    adn = children.pop("adn", None)
    if children:
        return None
    if adn is None:
        return False
    layers = list(adn.children())
    if len(layers) == 1 and isinstance(layers[0], nn.ReLU):
        return True
    return None


def cpu_network(network: nn.Module, precision: str) -> nn.Module | None:
    """The fused copy of ``network`` for a CPU at ``precision``, or ``None`` when it
    is to run as it is (under :func:`inference.devices.autocast`).

    The copy is built and checked once per network, precision and weights, and
    rebuilt when a parameter is replaced or changed in place through autograd-visible
    operations (an optimiser step, ``load_state_dict``). Writes through
    ``parameter.data`` bypass PyTorch's version counter and are not seen. It takes
    float32 inputs and needs no autocast: its weights are already in ``precision``.

    Args:
        network: a denoiser on the CPU. One in training mode, one with parameters
            made under ``torch.inference_mode`` (which keep no version counter), or
            any while ``torch.backends.mkldnn.enabled`` is off, is never fused.
        precision: a resolved precision, "fp32" or "bf16".
    """
    if (
        network.training
        or precision not in _DTYPES
        or not torch.backends.mkldnn.enabled
        or any(p.is_inference() for p in network.parameters())
    ):
        return None
    versions = _weights_key(network)
    with _lock:
        by_precision = _cache.setdefault(network, {})
        cached = by_precision.get(precision)
        if cached is None or cached[0] != versions:
            cached = (versions, _build_checked(network, precision))
            by_precision[precision] = cached
    return cached[1]


def _weights_key(network: nn.Module) -> tuple:
    """Where each parameter is and how often it was changed in place."""
    return tuple((p.data_ptr(), p._version) for p in network.parameters())


def _build_checked(network: nn.Module, precision: str) -> nn.Module | None:
    name = type(network).__name__
    if not torch.backends.mkldnn.is_available() or not hasattr(
        torch.ops.mkldnn, "_convolution_pointwise"
    ):
        logger.warning("fused CPU inference: no oneDNN here; %s runs as is", name)
        return None
    try:
        fused = _build(network, _DTYPES[precision])
    except Exception as exc:  # a module deepcopy or the fused layers refuse
        logger.warning("fused CPU inference: %s runs as is: %s", name, _brief(exc))
        return None
    if fused is None:
        logger.info("fused CPU inference: %s has layers that are not fusable", name)
        return None
    reason = _differs(network, fused, precision)
    if reason:
        logger.warning("fused CPU inference: %s runs as is: %s", name, reason)
        return None
    return fused


def _build(network: nn.Module, dtype: torch.dtype) -> nn.Module | None:
    """A copy of ``network`` with every fusable block replaced, or ``None`` when a
    parameterised layer would be left (it would see inputs of the wrong dtype)."""
    fused = copy.deepcopy(network)
    for name, block in list(fused.named_modules()):
        relu = fusable(block)
        if relu is None or not name:  # the network itself is no block to replace
            continue
        parent_name, _, child = name.rpartition(".")
        parent = fused.get_submodule(parent_name)
        parent.register_module(child, FusedConvolution(block.conv, relu, dtype))
    if any(True for _ in fused.parameters()):
        return None
    return fused.eval()


def _differs(network: nn.Module, fused: nn.Module, precision: str) -> str:
    """Why ``fused`` cannot stand in for ``network`` ("" when it can): an error, or
    an output further from the plain network's than rounding allows."""
    multiple = int(getattr(network, "size_multiple", 1) or 1)
    size = max(_CHECK_SIZE, multiple)
    size += -size % multiple
    generator = torch.Generator().manual_seed(0)
    # Normalised CT: soft tissue about 0.26 of the (-1024, 4096) range, with noise.
    sample = 0.26 + 0.02 * torch.randn(2, 1, size, size, generator=generator)
    if getattr(network, "noise_conditioned", False):
        # The second channel is the slice's noise SD as a constant map.
        sample = torch.cat([sample, torch.full_like(sample, 0.02)], dim=1)
    try:
        with torch.inference_mode():
            with autocast(torch.device("cpu"), precision):
                expected = network(sample).float()
            got = fused(sample).float()
    except Exception as exc:  # an operator this build or CPU lacks
        return _brief(exc)
    if got.shape != expected.shape:
        return f"output shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    # Compared as estimates (output minus input): the input, passed through by
    # residual networks, would hide a difference in what the network adds.
    estimate = expected - sample[:, :1]
    scale = float(estimate.abs().max()) or 1.0
    error = float((got - expected).abs().max())
    if not error <= _CHECK_RTOL[precision] * scale:
        return f"output differs by {error:.3g} (estimate up to {scale:.3g})"
    return ""


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
