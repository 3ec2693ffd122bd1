"""Whole-pixel jitter: the input translation of Hinton et al.'s MNIST teacher.

Hinton, Vinyals & Dean ("Distilling the Knowledge in a Neural Network", 2015,
section 3) train the big MNIST net on images "jittered by up to two pixels in
any direction". A whole-pixel shift moves the digit without resampling it::

    y[c, i, j] = x[c, i - dy, j - dx]   (0 outside the image),  dx, dy ~ U{-s, ..., s}

whereas a sub-pixel affine shift with bilinear interpolation (``Augment(shift=...)``)
averages neighbouring pixels and blurs the thin strokes of a digit. One shift
is drawn per image; the whole batch is one padded gather (no per-image Python).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from ..errors import TransferkitError


@dataclass
class PixelJitter:
    """Translate every image of a (N, C, H, W) batch by its own whole-pixel offset in [-max_shift, max_shift]².

    Usable wherever an :class:`~transferkit.data.Augment` is (a callable ``(x, generator) -> x``).
    """

    max_shift: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.max_shift, bool) or not isinstance(self.max_shift, int) or self.max_shift < 0:
            raise TransferkitError(f"pixel jitter needs a whole number of pixels >= 0, got {self.max_shift!r}")

    @property
    def active(self) -> bool:
        return self.max_shift > 0

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not self.active or x.dim() != 4:
            return x
        n, _, h, w = x.shape
        s = self.max_shift
        dy, dx = torch.randint(-s, s + 1, (2, n), generator=generator).to(x.device)
        padded = F.pad(x, (s, s, s, s))
        rows = (s - dy)[:, None] + torch.arange(h, device=x.device)  # (N, H): source row of each output row
        cols = (s - dx)[:, None] + torch.arange(w, device=x.device)  # (N, W)
        out = padded[torch.arange(n, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
        return out.permute(0, 3, 1, 2).contiguous()
