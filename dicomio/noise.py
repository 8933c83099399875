"""Scanner noise for synthetic scans: low-dose CT, MR Rician magnitude."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.transform import iradon, radon

__all__ = [
    "MU_WATER_PER_MM",
    "CTNoiseModel",
    "hu_to_mu",
    "mu_to_hu",
    "add_rician_noise",
]

#: Linear attenuation of water at about 70 keV effective energy, per millimetre.
MU_WATER_PER_MM = 0.0192


def hu_to_mu(image_hu: np.ndarray) -> np.ndarray:
    """Hounsfield units to linear attenuation per mm (air 0, water MU_WATER_PER_MM)."""
    return np.maximum(MU_WATER_PER_MM * (1.0 + image_hu / 1000.0), 0.0)


def mu_to_hu(mu: np.ndarray) -> np.ndarray:
    """Linear attenuation per mm back to Hounsfield units."""
    return (mu / MU_WATER_PER_MM - 1.0) * 1000.0


@dataclass(frozen=True)
class CTNoiseModel:
    """Low-dose CT noise inserted through the projection domain.

    The clean slice is forward-projected (parallel-beam Radon transform), detector
    counts are drawn as Poisson(``i0 * dose * exp(-p)``) plus Gaussian electronic
    noise, log-transformed back to line integrals, and the difference to the clean
    line integrals is reconstructed by filtered back-projection (ramp filter). The
    noise image is added to the clean slice, so the noise is streaky and spatially
    correlated along high-attenuation paths as in real CT, while the clean target
    carries no reconstruction artefacts. FBP is linear, so this equals
    ``FBP(noisy sinogram) - FBP(clean sinogram)``.

    Args:
        i0: unattenuated photon count per detector bin and view at full dose
            (``dose=1``), default 5e6. With 360 views and a 360 mm field of view
            this gives about 10 HU noise in the abdomen of a 512x512 slice.
        electronic_sd: standard deviation of the Gaussian electronic noise in counts,
            default 20.
        views: projection angles over 180 degrees; default ``None`` uses
            ``round(0.7 * size)``.
    """

    i0: float = 5.0e6
    electronic_sd: float = 20.0
    views: int | None = None

    def __post_init__(self) -> None:
        if self.i0 <= 0:
            raise ValueError(f"i0 must be > 0, got {self.i0}")
        if self.electronic_sd < 0:
            raise ValueError(f"electronic_sd must be >= 0, got {self.electronic_sd}")

    def _theta(self, size: int) -> np.ndarray:
        views = self.views or max(16, round(0.7 * size))
        return np.linspace(0.0, 180.0, views, endpoint=False)

    def noise(
        self,
        image_hu: np.ndarray,
        dose: float,
        *,
        pixel_mm: float,
        rng: np.random.Generator,
        full_dose_input: bool = False,
    ) -> np.ndarray:
        """The noise image (HU) that lowers ``image_hu`` to ``dose``.

        Args:
            image_hu: a square 2D slice in HU; values outside the inscribed circle
                are treated as air.
            dose: dose fraction of the reference ``i0``, in (0, 1].
            pixel_mm: pixel spacing in mm (sets the path lengths).
            rng: random generator.
            full_dose_input: the slice is a real full-dose scan that already carries
                the full-dose noise; only the extra variance ``1/dose - 1`` is
                inserted, so the result has the noise of a scan at ``dose``.

        Returns:
            float32 noise image in HU, same shape as ``image_hu``.
        """
        return self.realisations(
            image_hu,
            dose,
            1,
            pixel_mm=pixel_mm,
            rng=rng,
            full_dose_input=full_dose_input,
        )[0]

    def realisations(
        self,
        image_hu: np.ndarray,
        dose: float,
        count: int,
        *,
        pixel_mm: float,
        rng: np.random.Generator,
        full_dose_input: bool = False,
    ) -> np.ndarray:
        """``count`` independent :meth:`noise` images of one slice, projecting the
        slice once: (count, y, x) float32 HU."""
        if image_hu.ndim != 2 or image_hu.shape[0] != image_hu.shape[1]:
            raise ValueError(
                f"CT noise needs a square 2D slice, got shape {image_hu.shape}"
            )
        if not 0 < dose <= 1:
            raise ValueError(f"dose must be in (0, 1], got {dose}")
        if full_dose_input and dose >= 1:
            return np.zeros((count, *image_hu.shape), dtype=np.float32)
        size = image_hu.shape[0]
        # Circle mask: radon(circle=True) assumes zero attenuation outside it.
        yy, xx = np.mgrid[:size, :size]
        c = size // 2
        outside = (yy - c) ** 2 + (xx - c) ** 2 > (size // 2 - 1) ** 2
        mu = hu_to_mu(np.where(outside, -1000.0, image_hu).astype(np.float64))
        theta = self._theta(size)
        line_integrals = radon(mu, theta, circle=True) * pixel_mm
        counts_mean = self.i0 * (dose / (1.0 - dose) if full_dose_input else dose)
        expected = counts_mean * np.exp(-line_integrals)
        out = np.empty((count, size, size), dtype=np.float32)
        for k in range(count):
            counts = rng.poisson(expected).astype(np.float64)
            counts += rng.normal(0.0, self.electronic_sd, counts.shape)
            # Photon starvation: counts at or below zero are clipped as scanners do.
            noisy = -np.log(np.maximum(counts, 1.0) / counts_mean)
            delta = (noisy - line_integrals) / pixel_mm
            noise_mu = iradon(delta, theta, circle=True, filter_name="ramp")
            noise_hu = noise_mu / MU_WATER_PER_MM * 1000.0
            noise_hu[outside] = 0.0
            out[k] = noise_hu
        return out

    def apply(
        self,
        image_hu: np.ndarray,
        dose: float,
        *,
        pixel_mm: float,
        rng: np.random.Generator,
        full_dose_input: bool = False,
    ) -> np.ndarray:
        """``image_hu`` plus :meth:`noise` (same arguments), float32 HU."""
        noise = self.noise(
            image_hu, dose, pixel_mm=pixel_mm, rng=rng, full_dose_input=full_dose_input
        )
        return (image_hu + noise).astype(np.float32)


def add_rician_noise(
    image: np.ndarray, sigma: float, *, rng: np.random.Generator
) -> np.ndarray:
    """MR magnitude noise: ``|image + n_re + i n_im|`` with Gaussian ``n`` of SD sigma.

    The result is Rician: unbiased where the signal is far above ``sigma``, biased
    upwards (towards ``sigma * sqrt(pi / 2)`` in air) at low signal-to-noise ratio.

    Args:
        image: non-negative magnitude image, any shape.
        sigma: standard deviation of each Gaussian channel, same units, >= 0.
        rng: random generator.

    Returns:
        float32 array of the same shape.
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    real = image + rng.normal(0.0, sigma, image.shape)
    imag = rng.normal(0.0, sigma, image.shape)
    return np.sqrt(real**2 + imag**2).astype(np.float32)
