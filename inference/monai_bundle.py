"""A bundle's MONAI config (``configs/inference.json``): run it with ``monai.bundle``.

The config builds the network the metadata names, loads ``models/model.pt`` into it
and denoises a ``.npy`` series through :class:`BundleInferer`, which calls the
worker's own :func:`inference.runner.predict_slices` (normalisation, noise level
map, padding, residual limit, low frequencies kept), so a bundle run with
``python -m monai.bundle run`` (which needs ``fire``) gives what the app gives::

    cd models/ct-denoise/2.3.0 && python -m monai.bundle run \\
        --config_file configs/inference.json --input_path scan.npy \\
        --output_path out.npy --pixel_mm "[0.7, 0.7]"

The SHA-256 check of the weights stays with :func:`inference.load_model`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer
from torch import nn

from inference.networks import NETWORK_KINDS
from inference.runner import normalisation_for, predict, predict_slices

__all__ = [
    "INFERENCE_CONFIG_PATH",
    "BundleInferer",
    "inference_config",
    "inference_config_text",
]

INFERENCE_CONFIG_PATH = Path("configs") / "inference.json"


class BundleInferer(Inferer):
    """A MONAI inferer that denoises a series in its own units as the worker does.

    Args:
        input_spec: the bundle's ``input_spec`` (``models/README.md``).
        batch_size: slices (2D) or windows (3D) per forward pass, default the
            spec's ``batch_size``.
        precision: "fp32" (default), "bf16" or "fp16" (CUDA only).
        pixel_mm: (row, column) pixel spacing in mm, for ``keep_low_frequencies``;
            default unknown (its Gaussian is then one pixel wide).
    """

    def __init__(
        self,
        input_spec: Mapping[str, Any],
        *,
        batch_size: int | None = None,
        precision: str = "fp32",
        pixel_mm: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.input_spec = dict(input_spec)
        self.batch_size = int(batch_size or self.input_spec["batch_size"])
        self.precision = precision
        self.pixel_mm = pixel_mm

    def __call__(  # type: ignore[override]
        self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """Denoise ``inputs``, a (z, y, x) or (y, x) series in the bundle's units
        (HU for CT), with ``network`` (in eval mode); returns the same shape and
        units, float32, on the network's device (2D) or the CPU (3D)."""
        images = torch.as_tensor(inputs, dtype=torch.float32)
        if images.ndim not in (2, 3):
            raise ValueError(
                f"BundleInferer: expected a (y, x) or (z, y, x) series, got shape "
                f"{tuple(images.shape)}"
            )
        stack = images if images.ndim == 3 else images[None]
        device = next(network.parameters()).device
        norm = normalisation_for(stack.cpu().numpy(), self.input_spec)
        options: dict[str, Any] = {
            "spec": self.input_spec,
            "norm": norm,
            "device": device,
            "precision": self.precision,
            "batch_size": self.batch_size,
            "pixel_mm": self.pixel_mm,
        }
        if int(self.input_spec["spatial_dims"]) == 2:
            result = predict_slices(stack, network, **options)
        else:
            out = np.empty(tuple(stack.shape), dtype=np.float32)
            predict(stack.cpu().numpy(), network, out=out, **options)
            result = torch.from_numpy(out)
        return result if images.ndim == 3 else result[0]


def inference_config(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The ``configs/inference.json`` of a bundle, from its metadata.

    ``network_def`` is the class and arguments of the metadata's ``network_def``
    (as :func:`inference.networks.build_network` builds it); ``initialize`` loads
    ``models/model.pt`` into it (strict); ``run`` denoises ``input_path`` (a
    ``.npy`` series in the bundle's units) into ``output_path``.
    """
    definition = metadata["network_def"]
    kind = definition["kind"]
    if kind not in NETWORK_KINDS:
        raise ValueError(
            f"inference_config: network kind must be one of {sorted(NETWORK_KINDS)}, "
            f"got {kind!r}"
        )
    cls = NETWORK_KINDS[kind]
    return {
        "imports": ["$import numpy", "$import torch", "$import inference.monai_bundle"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "input_spec": dict(metadata["input_spec"]),
        "network_def": {
            "_target_": f"{cls.__module__}.{cls.__qualname__}",
            **dict(definition.get("args", {})),
        },
        "network": "$@network_def.to(@device)",
        "checkpoint": "$@bundle_root + '/models/model.pt'",
        "checkpointloader": "$@network.load_state_dict(torch.load(@checkpoint, "
        "map_location=@device, weights_only=True), strict=True)",
        "input_path": None,
        "output_path": None,
        "pixel_mm": None,
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImage", "image_only": True, "reader": "NumpyReader"},
                {
                    "_target_": "EnsureType",
                    "dtype": "$torch.float32",
                    "track_meta": False,
                },
            ],
        },
        "inferer": {
            "_target_": "inference.monai_bundle.BundleInferer",
            "input_spec": "@input_spec",
            "pixel_mm": "@pixel_mm",
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [{"_target_": "EnsureType", "data_type": "numpy"}],
        },
        "initialize": ["$@checkpointloader", "$@network.eval()"],
        "run": [
            "$numpy.save(@output_path, @postprocessing(@inferer("
            "@preprocessing(@input_path), @network)))"
        ],
    }


def inference_config_text(metadata: Mapping[str, Any]) -> str:
    """:func:`inference_config` as the JSON text of ``configs/inference.json``."""
    return json.dumps(inference_config(metadata), indent=2, allow_nan=False) + "\n"
