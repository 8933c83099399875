"""Denoising autoencoders built from MONAI blocks, from a bundle's network_def."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.networks.blocks import Convolution
from monai.networks.nets import AutoEncoder, BasicUNet, VarAutoEncoder
from torch import nn

__all__ = [
    "NETWORK_KINDS",
    "DenoisingNetwork",
    "PlainAutoEncoder",
    "SparseAutoEncoder",
    "VariationalAutoEncoder",
    "REDCNN",
    "NoiseUNet",
    "FastNoiseUNet",
    "build_network",
]


class DenoisingNetwork(nn.Module):
    """Base of every denoiser: maps a normalised noisy batch to a normalised clean one.

    Subclasses set ``size_multiple`` (each spatial size of the input must be a multiple
    of it; the engine pads) and ``fixed_roi`` (a fixed input window, or ``None`` when
    any size works). ``regularisation()`` returns the penalty of the last forward pass
    (zero for plain networks), which the training loop adds to the data loss.
    """

    kind: str = ""
    size_multiple: int = 1
    fixed_roi: tuple[int, ...] | None = None
    #: Whether the input has a second channel, the slice's noise SD in normalised
    #: units as a constant map (:func:`inference.runner.predict_slices` adds it).
    noise_conditioned: bool = False

    def __init__(self) -> None:
        super().__init__()
        self._penalty: torch.Tensor | None = None

    def regularisation(self) -> torch.Tensor:
        if self._penalty is None:
            return torch.zeros(())
        return self._penalty


class PlainAutoEncoder(DenoisingNetwork):
    """MONAI's strided convolutional ``AutoEncoder`` (no skip connections).

    Args:
        spatial_dims: 2 for slice-wise, 3 for volumetric denoising.
        channels: channels per encoder level, default ``(32, 64, 128)``.
        strides: down-sampling stride per level, default ``(2, 2, 2)``.
        num_res_units: residual units per level, default 1.
    """

    kind = "autoencoder"

    def __init__(
        self,
        spatial_dims: int = 2,
        channels: Sequence[int] = (32, 64, 128),
        strides: Sequence[int] = (2, 2, 2),
        num_res_units: int = 1,
    ) -> None:
        super().__init__()
        if len(channels) != len(strides):
            raise ValueError(
                f"channels and strides must have the same length, got {channels} "
                f"and {strides}"
            )
        self.net = AutoEncoder(
            spatial_dims=spatial_dims,
            in_channels=1,
            out_channels=1,
            channels=tuple(channels),
            strides=tuple(strides),
            num_res_units=num_res_units,
            norm=None,  # type: ignore[arg-type]  # MONAI takes None: no norm
        )
        multiple = 1
        for stride in strides:
            multiple *= stride
        self.size_multiple = multiple

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.intermediate(self.net.encode(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.decode(self.latent(x))


class SparseAutoEncoder(PlainAutoEncoder):
    """``PlainAutoEncoder`` with an L1 penalty on the latent code (sparse coding).

    Args:
        l1_weight: weight of the mean absolute latent activation, default ``1e-4``.
        **kwargs: passed to :class:`PlainAutoEncoder`.
    """

    kind = "sparse_autoencoder"

    def __init__(self, l1_weight: float = 1e-4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if l1_weight < 0:
            raise ValueError(f"l1_weight must be >= 0, got {l1_weight}")
        self.l1_weight = l1_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.latent(x)
        self._penalty = self.l1_weight * z.abs().mean()
        return self.net.decode(z)


class VariationalAutoEncoder(DenoisingNetwork):
    """MONAI's ``VarAutoEncoder`` on fixed square windows, with a KL penalty.

    At inference the posterior mean is decoded, so the output is deterministic.

    Args:
        spatial_dims: 2 or 3.
        roi: window edge in pixels, default 64; the engine tiles slices with it.
        latent_size: size of the latent vector, default 256.
        channels: channels per level, default ``(32, 64, 128)``.
        strides: stride per level, default ``(2, 2, 2)``.
        kl_weight: weight of the KL divergence, default ``1e-5``.
    """

    kind = "vae"

    def __init__(
        self,
        spatial_dims: int = 2,
        roi: int = 64,
        latent_size: int = 256,
        channels: Sequence[int] = (32, 64, 128),
        strides: Sequence[int] = (2, 2, 2),
        kl_weight: float = 1e-5,
    ) -> None:
        super().__init__()
        self.net = VarAutoEncoder(
            spatial_dims=spatial_dims,
            in_shape=(1,) + (roi,) * spatial_dims,
            out_channels=1,
            latent_size=latent_size,
            channels=tuple(channels),
            strides=tuple(strides),
            norm=None,  # type: ignore[arg-type]  # MONAI takes None: no norm
            use_sigmoid=False,
            use_mean_at_inference=True,
        )
        self.kl_weight = kl_weight
        self.fixed_roi = (roi,) * spatial_dims
        self.size_multiple = roi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        recon, mu, logvar, _ = self.net(x)
        kl = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
        self._penalty = self.kl_weight * kl
        return recon


class REDCNN(DenoisingNetwork):
    """Residual encoder-decoder CNN in the style of RED-CNN (Chen et al., 2017).

    A stack of ``depth`` convolutions, then ``depth`` transposed convolutions, with
    shortcuts adding encoder features to the decoder every second layer and the input
    to the output, so the network learns the noise to subtract. No pooling: the image
    keeps its full resolution, which keeps small lesions intact.

    Args:
        spatial_dims: 2 or 3.
        features: channels of every hidden layer, default 32.
        depth: number of encoder (and decoder) layers, default 5.
        kernel_size: convolution kernel, default 5.
    """

    kind = "redcnn"

    def __init__(
        self,
        spatial_dims: int = 2,
        features: int = 32,
        depth: int = 5,
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth}")

        def conv(cin: int, cout: int, transposed: bool, last: bool) -> Convolution:
            return Convolution(
                spatial_dims,
                cin,
                cout,
                kernel_size=kernel_size,
                act=None if last else "relu",
                norm=None,
                is_transposed=transposed,
                conv_only=last,
            )

        self.encoder = nn.ModuleList(
            conv(1 if i == 0 else features, features, False, False)
            for i in range(depth)
        )
        self.decoder = nn.ModuleList(
            conv(features, 1 if i == depth - 1 else features, True, i == depth - 1)
            for i in range(depth)
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcuts = [x]
        h = x
        for i, layer in enumerate(self.encoder):
            h = layer(h)
            if i % 2 == 1 and i < len(self.encoder) - 1:
                shortcuts.append(h)
        for i, layer in enumerate(self.decoder):
            h = layer(h)
            if i % 2 == 1 and i < len(self.decoder) - 1:
                h = self.relu(h + shortcuts.pop())
        return h + shortcuts[0]


class NoiseUNet(DenoisingNetwork):
    """U-Net-like encoder-decoder (MONAI ``BasicUNet``) that predicts the noise.

    The output is ``x - unet(x)``: the network's job is the residual map itself.

    Args:
        spatial_dims: 2 or 3.
        features: six channel counts as ``BasicUNet`` expects, default
            ``(16, 16, 32, 64, 128, 16)``.
    """

    kind = "unet_noise"
    size_multiple = 16

    def __init__(
        self,
        spatial_dims: int = 2,
        features: Sequence[int] = (16, 16, 32, 64, 128, 16),
    ) -> None:
        super().__init__()
        if len(features) != 6:
            raise ValueError(f"features must have 6 entries, got {features}")
        self.net = BasicUNet(
            spatial_dims=spatial_dims,
            in_channels=1,
            out_channels=1,
            features=tuple(features),
            norm=None,  # type: ignore[arg-type]  # MONAI takes None: no norm
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.net(x)


class FastNoiseUNet(DenoisingNetwork):
    """Light U-Net-like encoder-decoder that predicts the noise, sized for CPU speed.

    One thin convolution works at full resolution; everything else runs at 1/2 to
    1/2**len(channels) resolution, reached by strided convolutions and brought back
    by transposed convolutions whose outputs are added to the encoder features of
    the same scale (additive skips cost nothing at full resolution, unlike
    concatenation). The output is ``x - noise``. For 2D inputs the network runs in
    ``channels_last`` memory format, which roughly halves CPU time for thin layers.

    With ``noise_conditioned`` the input has a second channel holding the slice's
    estimated noise SD as a level map (:func:`inference.noise.noise_level_map`, as
    FFDNet's noise level map), so one network can remove exactly the noise a slice
    has, from none to very low dose; the head's estimate is then in units of that
    SD (it is multiplied by it), so a slice without noise comes out unchanged and
    every noise level asks the same of the network. The output keeps one channel.

    Args:
        spatial_dims: 2 or 3.
        stem_channels: channels of the single full-resolution layer, default 8.
        channels: channels per down-sampled level, default ``(16, 32, 64)``; each
            level halves the resolution.
        encoder_blocks: extra 3x3 convolutions per level after its down-sampling,
            default ``(1, 1, 2)``.
        decoder_blocks: 3x3 convolutions per level after its skip addition, for
            every level but the deepest, default ``(1, 1)``; a 0 skips them.
        noise_conditioned: take the noise level map as a second input channel,
            default ``False``.
        noise_unit: the map's unit (the input spec's ``noise_unit``), default
            0.005: the noise SD is ``noise_unit * (2 ** (8 * map) - 1)``.
    """

    kind = "fast_unet_noise"

    def __init__(
        self,
        spatial_dims: int = 2,
        stem_channels: int = 8,
        channels: Sequence[int] = (16, 32, 64),
        encoder_blocks: Sequence[int] = (1, 1, 2),
        decoder_blocks: Sequence[int] = (1, 1),
        noise_conditioned: bool = False,
        noise_unit: float = 0.005,
    ) -> None:
        super().__init__()
        if len(channels) < 1:
            raise ValueError(f"channels must have at least one level, got {channels}")
        if len(encoder_blocks) != len(channels):
            raise ValueError(
                f"encoder_blocks must have {len(channels)} entries (one per level), "
                f"got {encoder_blocks}"
            )
        if len(decoder_blocks) != len(channels) - 1:
            raise ValueError(
                f"decoder_blocks must have {len(channels) - 1} entries (one per level "
                f"but the deepest), got {decoder_blocks}"
            )
        self.spatial_dims = spatial_dims
        self.noise_conditioned = bool(noise_conditioned)
        self.noise_unit = float(noise_unit)

        def conv(cin: int, cout: int, *, strides: int = 1) -> Convolution:
            return Convolution(
                spatial_dims,
                cin,
                cout,
                strides=strides,
                kernel_size=3,
                act="relu",
                norm=None,
            )

        def up(cin: int, cout: int) -> Convolution:
            return Convolution(
                spatial_dims,
                cin,
                cout,
                strides=2,
                kernel_size=2,
                act="relu",
                norm=None,
                is_transposed=True,
                padding=0,
                output_padding=0,
            )

        widths = [stem_channels, *channels]
        self.stem = conv(1 + int(self.noise_conditioned), stem_channels)
        self.down = nn.ModuleList(
            nn.Sequential(
                conv(widths[i], widths[i + 1], strides=2),
                *(conv(widths[i + 1], widths[i + 1]) for _ in range(encoder_blocks[i])),
            )
            for i in range(len(channels))
        )
        self.up = nn.ModuleList(
            up(widths[i + 1], widths[i]) for i in range(len(channels))
        )
        self.decode = nn.ModuleList(
            nn.Sequential(
                *(conv(widths[i], widths[i]) for _ in range(decoder_blocks[i - 1]))
            )
            if i > 0
            else nn.Identity()
            for i in range(len(channels))
        )
        self.head = Convolution(
            spatial_dims, stem_channels, 1, kernel_size=3, conv_only=True
        )
        # A zero noise estimate at initialisation: training starts from the
        # identity instead of from a random image added to every input.
        for parameter in self.head.parameters():
            nn.init.zeros_(parameter)
        self.size_multiple = 2 ** len(channels)
        if spatial_dims == 2:
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial_dims == 2:
            x = x.contiguous(memory_format=torch.channels_last)
        sd = None
        if self.noise_conditioned:
            sd = self.noise_unit * (torch.exp2(8.0 * x[:, 1:2]) - 1.0)
        h = self.stem(x)
        skips = [h]
        for level in self.down:
            h = level(h)
            skips.append(h)
        skips.pop()
        # Without autograd the skip is added into the up-sampled features in place:
        # one pass less over memory for these memory-bound layers (~4% on a CPU).
        in_place = not torch.is_grad_enabled()
        for i in reversed(range(len(self.up))):
            up = self.up[i](h)
            up = up.add_(skips.pop()) if in_place else up + skips.pop()
            h = self.decode[i](up)
        estimate = self.head(h)
        if sd is not None:
            estimate = estimate * sd
        return (x[:, :1] - estimate).contiguous()


NETWORK_KINDS: Mapping[str, type[DenoisingNetwork]] = {
    cls.kind: cls
    for cls in (
        PlainAutoEncoder,
        SparseAutoEncoder,
        VariationalAutoEncoder,
        REDCNN,
        NoiseUNet,
        FastNoiseUNet,
    )
}


def build_network(definition: Mapping[str, Any]) -> DenoisingNetwork:
    """Build an untrained network from a bundle's ``network_def``.

    Args:
        definition: ``{"kind": one of NETWORK_KINDS, "args": {...}}``; ``args`` are the
            keyword arguments of that class (``spatial_dims`` included).

    Returns:
        The network, in training mode, on the CPU.
    """
    kind = str(definition.get("kind"))
    if kind not in NETWORK_KINDS:
        raise ValueError(
            f"network kind must be one of {sorted(NETWORK_KINDS)}, got {kind!r}"
        )
    args = dict(definition.get("args", {}))
    return NETWORK_KINDS[kind](**args)
