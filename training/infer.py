"""Run a denoising network over whole 2D slices, as the inference engine feeds it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from inference.networks import DenoisingNetwork
from training.data import normaliser

__all__ = ["denoise_slices"]


def _forward(network: DenoisingNetwork, batch: torch.Tensor) -> torch.Tensor:
    if network.fixed_roi is not None:
        out = sliding_window_inference(
            batch,
            network.fixed_roi,
            batch.shape[0] * 4,
            network,
            overlap=0.25,
            mode="gaussian",
        )
        assert isinstance(out, torch.Tensor)
        return out
    multiple = network.size_multiple
    ny, nx = batch.shape[-2:]
    py, px = (-ny) % multiple, (-nx) % multiple
    if py or px:
        batch = torch.nn.functional.pad(batch, (0, px, 0, py), mode="reflect")
    return network(batch)[..., :ny, :nx]


def denoise_slices(
    network: DenoisingNetwork,
    images: Sequence[np.ndarray],
    input_spec: Mapping[str, Any],
    *,
    batch_size: int = 8,
) -> list[np.ndarray]:
    """Denoise 2D slices (physical units in, physical units out).

    Slices of equal shape are batched; each is normalised as ``input_spec`` says
    (MR: its own 99.5th percentile), padded (reflect) to the network's size
    multiple, or tiled with Gaussian-weighted windows for fixed-window networks.

    Args:
        network: the network; switched to eval mode.
        images: 2D float arrays in HU (CT) or magnitude (MR).
        input_spec: the bundle's ``input_spec``.
        batch_size: slices per forward pass, default 8.

    Returns:
        float32 arrays, same shapes as ``images``.
    """
    network.eval()
    norm = normaliser(input_spec)
    outputs: list[np.ndarray] = [np.empty(0)] * len(images)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        by_shape.setdefault(image.shape, []).append(i)
    with torch.inference_mode():
        for indices in by_shape.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                params = [norm(images[i]) for i in chunk]
                batch = np.stack(
                    [
                        (images[i] - o) / s
                        for i, (o, s) in zip(chunk, params, strict=True)
                    ]
                )[:, None].astype(np.float32)
                device = next(network.parameters()).device
                result = _forward(network, torch.from_numpy(batch).to(device))
                out = result.cpu().numpy()[:, 0]
                for k, (i, (o, s)) in enumerate(zip(chunk, params, strict=True)):
                    outputs[i] = (out[k] * s + o).astype(np.float32)
    return outputs
