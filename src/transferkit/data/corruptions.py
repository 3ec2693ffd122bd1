"""Common corruptions for robustness tests: noise, blur and digital distortions at five severities.

Hendrycks and Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", ICLR 2019. The severity parameters are those of the public CIFAR-10-C release
(made for 32 x 32 images); each corruption here is written on batches ``x`` of shape
(N, C, H, W) with values in [0, 1], returns the same shape in [0, 1], and draws all its
randomness from one seeded ``torch.Generator``: the same seed gives the same bytes.

With ``x`` a clean image, ``c`` the severity's parameter and ``clip`` to [0, 1]:

==================  ==========================================================================
gaussian_noise      ``clip(x + c * n)``, ``n ~ N(0, 1)`` per value; c = 0.04 ... 0.10
shot_noise          ``clip(Poisson(c x) / c)`` (photon counts); c = 500 ... 50 (fewer photons)
impulse_noise       salt and pepper: each value becomes 0 or 1 (even odds) with probability c;
                    c = 0.01 ... 0.07
speckle_noise       ``clip(x + x * c * n)``, ``n ~ N(0, 1)``; c = 0.06 ... 0.20
gaussian_blur       Gaussian filter of standard deviation c pixels (edges repeated); c = 0.4 ... 1
defocus_blur        a disk of radius r (pixel centres within r), normalised, softened by a 3x3
                    Gaussian of width s, as a filter (edges mirrored); (r, s) = (0.3, 0.4) ...
                    (1.5, 0.1)
contrast            ``clip((x - m) c + m)``, ``m`` the image's mean per channel; c = 0.75 ... 0.15
brightness          HSV value ``V = max_c x`` raised to ``min(V + c, 1)``, hue and saturation
                    kept, i.e. ``x V'/V`` (black becomes grey ``V'``); c = 0.05 ... 0.3
pixelate            box-filter down to ``floor(c H) x floor(c W)`` and box-filter back up (as
                    PIL's ``Image.BOX`` resampling); c = 0.95 ... 0.65
jpeg_compression    JPEG encode/decode at quality c (Pillow, per image, 8-bit); c = 80 ... 40
==================  ==========================================================================

The release stores its images as 8-bit; these functions return floats (only JPEG is quantised,
by its nature). Apply them with :func:`corrupt` (a tensor) or :func:`corrupt_data` (a
:class:`~transferkit.data.TensorData`); on the command line ``--corruption NAME --severity S``
corrupts the data a trained model is evaluated, predicts or adapts on (``transferkit datasets``
lists the names).

>>> x_c = corrupt(x, "gaussian_noise", severity=5, seed=0)
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine.registry import Registry
from ..errors import TransferkitError
from .tensors import TensorData

SEVERITIES = (1, 2, 3, 4, 5)

Corruption = Callable[[Tensor, Any, torch.Generator], Tensor]
"""``fn(x, parameter, generator) -> corrupted x``: one corruption at the parameter of one severity."""

CORRUPTIONS: Registry[Corruption] = Registry("corruption")
"""Corruptions by name; ``CORRUPTIONS.entry(name).doc`` is its one-line description."""

PARAMETERS: dict[str, tuple[Any, ...]] = {}
"""Name -> its parameter at severities 1..5 (the CIFAR-10-C values)."""


def _register(name: str, doc: str, params: tuple[Any, ...]) -> Callable[[Corruption], Corruption]:
    def deco(fn: Corruption) -> Corruption:
        PARAMETERS[name] = params
        return CORRUPTIONS.register(name, doc)(fn)

    return deco


def _normal(x: Tensor, g: torch.Generator) -> Tensor:
    return torch.randn(x.shape, generator=g, dtype=torch.float32).to(x.device, x.dtype)


def _uniform(x: Tensor, g: torch.Generator) -> Tensor:
    return torch.rand(x.shape, generator=g, dtype=torch.float32).to(x.device, x.dtype)


@_register("gaussian_noise", "additive Gaussian noise of std 0.04-0.10", (0.04, 0.06, 0.08, 0.09, 0.10))
def gaussian_noise(x: Tensor, c: float, g: torch.Generator) -> Tensor:
    return (x + c * _normal(x, g)).clamp(0, 1)


@_register("shot_noise", "Poisson (photon) noise, 500 down to 50 photons at full intensity", (500, 250, 100, 75, 50))
def shot_noise(x: Tensor, c: float, g: torch.Generator) -> Tensor:
    counts = torch.poisson((x * c).float().cpu(), generator=g)
    return (counts / c).to(x.device, x.dtype).clamp(0, 1)


@_register("impulse_noise", "salt-and-pepper noise on 1-7% of the values", (0.01, 0.02, 0.03, 0.05, 0.07))
def impulse_noise(x: Tensor, c: float, g: torch.Generator) -> Tensor:
    flipped = _uniform(x, g) <= c
    salt = _uniform(x, g) <= 0.5
    return torch.where(flipped, salt.to(x.dtype), x)


@_register("speckle_noise", "multiplicative Gaussian noise of std 0.06-0.20", (0.06, 0.10, 0.12, 0.16, 0.20))
def speckle_noise(x: Tensor, c: float, g: torch.Generator) -> Tensor:
    return (x + x * c * _normal(x, g)).clamp(0, 1)


def _filter(x: Tensor, kernel: Tensor, mode: str) -> Tensor:
    """Each channel filtered by the odd-sized 2-D ``kernel``, borders padded with ``mode``."""
    kh, kw = kernel.shape
    n, ch, h, w = x.shape
    if kh // 2 >= h or kw // 2 >= w:
        raise TransferkitError(f"images of {h}x{w} pixels are too small for this blur; use images of at least {kh // 2 + 1}x{kw // 2 + 1}")
    padded = F.pad(x.reshape(n * ch, 1, h, w), (kw // 2, kw // 2, kh // 2, kh // 2), mode=mode)
    out = F.conv2d(padded, kernel.to(x.device, x.dtype)[None, None])
    return out.reshape(n, ch, h, w)


def _gaussian_1d(sigma: float, radius: int) -> Tensor:
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    return k / k.sum()


@_register("gaussian_blur", "Gaussian blur of std 0.4-1 pixel", (0.4, 0.6, 0.7, 0.8, 1.0))
def gaussian_blur(x: Tensor, c: float, g: torch.Generator) -> Tensor:
    k = _gaussian_1d(c, int(4 * c + 0.5))  # truncated at 4 standard deviations
    return _filter(x, (k[:, None] * k[None, :]).float(), "replicate").clamp(0, 1)


def disk_kernel(radius: float, alias_sigma: float) -> Tensor:
    """The defocus kernel: pixel centres within ``radius`` of the middle, normalised, then a 3x3 Gaussian.

    The Gaussian (width ``alias_sigma``) softens the aliased disk; the result is cropped to its
    non-zero support (odd, centred), which leaves the filter unchanged.
    """
    half = max(8, math.ceil(radius))
    t = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((t[:, None] ** 2 + t[None, :] ** 2) <= radius**2).double()
    disk /= disk.sum()
    g = _gaussian_1d(alias_sigma, 1)
    soft = F.conv2d(F.pad(disk[None, None], (1, 1, 1, 1), mode="reflect"), (g[:, None] * g[None, :])[None, None])[0, 0]
    r = int((soft.abs() > 0).nonzero().sub(half).abs().max())
    return soft[half - r : half + r + 1, half - r : half + r + 1].float()


@_register("defocus_blur", "out-of-focus blur: a disk of radius 0.3-1.5 pixels",
           ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)))
def defocus_blur(x: Tensor, c: tuple[float, float], g: torch.Generator) -> Tensor:
    return _filter(x, disk_kernel(*c), "reflect").clamp(0, 1)


@_register("contrast", "contrast scaled to 75%-15% around each channel's mean", (0.75, 0.5, 0.4, 0.3, 0.15))
def contrast(x: Tensor, c: float, g: torch.Generator) -> Tensor:
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * c + mean).clamp(0, 1)


@_register("brightness", "HSV value raised by 0.05-0.3", (0.05, 0.1, 0.15, 0.2, 0.3))
def brightness(x: Tensor, c: float, g: torch.Generator) -> Tensor:
    value = x.amax(dim=1, keepdim=True)
    raised = (value + c).clamp(max=1)
    scaled = x * (raised / value.clamp_min(1e-12))
    return torch.where(value > 0, scaled, raised.expand_as(x)).clamp(0, 1)


def box_resize_matrix(n_in: int, n_out: int) -> Tensor:
    """(n_out, n_in) weights of a 1-D box-filter resize (the rule of PIL's ``Image.BOX``).

    Output pixel ``i`` averages the input pixels whose centres fall in its footprint
    ``(i + 1/2) s +- max(s, 1)/2`` (``s = n_in / n_out``): an area average when shrinking,
    the nearest pixel when enlarging.
    """
    scale = n_in / n_out
    support = max(scale, 1.0)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    centres = torch.arange(n_in, dtype=torch.float64) + 0.5
    for i in range(n_out):
        u = (centres - (i + 0.5) * scale) / support
        m[i] = ((u > -0.5) & (u <= 0.5)).double()
    return m / m.sum(1, keepdim=True).clamp_min(1)


@_register("pixelate", "box down-sampling to 95%-65% of the size and back", (0.95, 0.9, 0.85, 0.75, 0.65))
def pixelate(x: Tensor, c: float, g: torch.Generator) -> Tensor:
    h, w = x.shape[-2:]
    sh, sw = max(1, int(h * c)), max(1, int(w * c))
    rows = box_resize_matrix(sh, h) @ box_resize_matrix(h, sh)  # (h, h): down then up
    cols = box_resize_matrix(sw, w) @ box_resize_matrix(w, sw)
    return (rows.to(x.device, x.dtype) @ x @ cols.t().to(x.device, x.dtype)).clamp(0, 1)


@_register("jpeg_compression", "JPEG compression at quality 80-40", (80, 65, 58, 50, 40))
def jpeg_compression(x: Tensor, c: int, g: torch.Generator) -> Tensor:
    from PIL import Image

    if x.shape[1] not in (1, 3):
        raise TransferkitError(f"jpeg_compression needs grey or RGB images (1 or 3 channels), got {x.shape[1]} channels")
    pixels = (x.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = np.empty_like(pixels)
    for i, img in enumerate(pixels):
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, "JPEG", quality=int(c))
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf)).reshape(img.shape)
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255.0


def check_corruption(name: str, severity: int) -> None:
    """Refuse an unknown corruption name or a severity outside 1-5 (one line each)."""
    CORRUPTIONS.entry(name)
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise TransferkitError(f"corruption severity must be a whole number from 1 to 5, got {severity!r}")


def corrupt(x: Tensor, name: str, severity: int, seed: int = 0, batch_size: int = 4096) -> Tensor:
    """``x`` (N, C, H, W) in [0, 1] with corruption ``name`` at ``severity`` (1-5); seeded, deterministic.

    The random draws come from one generator seeded with ``seed`` and are made on the CPU in
    order, ``batch_size`` images at a time, so the result does not depend on the device.
    """
    check_corruption(name, severity)
    if x.dim() != 4:
        raise TransferkitError(f"corruptions apply to images (N, C, H, W); got inputs of shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TransferkitError(f"corruptions take float images in [0, 1]; got {x.dtype}")
    fn = CORRUPTIONS[name]
    param = PARAMETERS[name][severity - 1]
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        parts = [fn(x[i : i + batch_size], param, g) for i in range(0, len(x), batch_size)]
    return torch.cat(parts) if parts else x.clone()


def corrupt_data(data: TensorData, name: str, severity: int, seed: int = 0) -> TensorData:
    """``data`` with its images corrupted (labels, classes and preprocessing kept; see :func:`corrupt`)."""
    check_corruption(name, severity)
    if not data.is_image:
        raise TransferkitError(f"--corruption applies to images, but {data.name} holds feature vectors of shape "
                               f"{tuple(data.input_shape)}; use an image folder or an image dataset")
    return replace(data, x=corrupt(data.x, name, severity, seed), name=f"{data.name}+{name}:{severity}")


def describe() -> list[dict[str, str]]:
    """One row per corruption: name, description and the parameter at severities 1-5."""
    return [{"name": e.name, "description": e.doc, "severity 1-5": ", ".join(str(p) for p in PARAMETERS[e.name])}
            for e in CORRUPTIONS.entries()]
