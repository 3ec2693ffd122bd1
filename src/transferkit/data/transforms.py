"""Whole-batch transforms: resizing, channel conversion and augmentation.

Domains of different shapes (MNIST 28x28 grey, USPS 16x16, RGB images) are
paired by declaring one common shape, :func:`conform`. Augmentation runs on a
whole batch at once with one affine grid, never per sample.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import TransferkitError
from .tensors import TensorData, check_memory


def resize(x: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Bilinear (antialiased when shrinking) resize of an (N, C, H, W) batch."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == hw:
        return x
    shrink = hw[0] < x.shape[-2] or hw[1] < x.shape[-1]
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=shrink)


def to_channels(x: Tensor, channels: int) -> Tensor:
    """Grey -> RGB by repetition, RGB -> grey by luminance."""
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1:
        return x.expand(-1, channels, -1, -1).contiguous()
    if channels == 1 and c == 3:
        w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    raise TransferkitError(f"cannot convert {c} channels to {channels}")


def conform(data: TensorData, size: int | None = None, channels: int | None = None) -> TensorData:
    """Bring an image dataset to ``channels`` x ``size`` x ``size``."""
    if not data.is_image:
        if size is not None or channels is not None:
            raise TransferkitError(f"{data.name} is a feature table; --image-size/--channels apply to images only")
        return data
    x = data.x
    shape = (channels or x.shape[1], size or x.shape[2], size or x.shape[3])
    if shape != tuple(x.shape[1:]):  # estimate before allocating: N x C x H x W float32
        check_memory(len(x) * shape[0] * shape[1] * shape[2] * 4, f"{data.name} as {len(x)} images of {'x'.join(map(str, shape))}",
                     "choose a smaller --image-size, fewer --channels or less data")
    if channels is not None:
        x = to_channels(x, channels)
    if size is not None:
        x = torch.cat([resize(x[i : i + 4096], size) for i in range(0, len(x), 4096)]) if len(x) else x
    return replace(data, x=x.contiguous())


def pair_shapes(a: TensorData, b: TensorData, size: int | None, channels: int | None) -> tuple[TensorData, TensorData]:
    """Conform two domains to one shape, or explain which option makes them fit."""
    if a.is_image != b.is_image:
        table, images = (a, b) if b.is_image else (b, a)
        raise TransferkitError(
            f"{table.name} is a feature table and {images.name} holds images: they cannot be compared "
            "directly; give two image sets, or two tables with the same columns (for images, the features "
            "of a trained network: --features-from RUN)"
        )
    a, b = conform(a, size, channels), conform(b, size, channels)
    if a.input_shape != b.input_shape:
        raise TransferkitError(
            f"{a.name} has inputs of shape {tuple(a.input_shape)} and {b.name} of shape "
            f"{tuple(b.input_shape)}; pair them with --image-size N (and --channels C)"
        )
    return a, b


TEXT_TOKEN_DROP = 0.1
"""Token dropout rate an image augmentation stands for on text (see :class:`Augment`)."""


@dataclass
class Augment:
    """Random translation (pixels), horizontal flip, scale and colour on a whole batch.

    One affine grid is built for the batch and applied with ``grid_sample``:
    cost is one kernel launch whatever the batch size.

    ``colour`` (images in [0, 1]): each image's channels are folded about a random level,
    ``x'_c = |l_c - x_c|`` with ``l_c ~ U(0, 1)`` drawn per image and channel. A white digit on
    black becomes a digit of one random colour on a background of another, with its contrast
    kept; ``l = 0`` leaves a channel as it was, ``l = 1`` inverts it. Grey inputs should be
    given 3 channels first (``--channels 3``) for the colours to differ between channels.
    """

    shift: float = 0.0
    flip: bool = False
    scale: tuple[float, float] | None = None
    colour: bool = False
    token_drop: float | None = None
    """Text (integer token ids): the fraction of tokens turned into padding; default 0.1 when any
    image transform is set (so a method's "strong view" is word dropout on text), else none."""

    @property
    def active(self) -> bool:
        return self.shift > 0 or self.flip or self.scale is not None or self.colour or bool(self.token_drop)

    @property
    def geometric(self) -> bool:
        return self.shift > 0 or self.flip or self.scale is not None

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not x.is_floating_point() and x.dim() == 2:  # token ids (data/text.py)
            from .text import drop_tokens

            rate = self.token_drop if self.token_drop is not None else (TEXT_TOKEN_DROP if self.active else 0.0)
            return drop_tokens(x, rate, generator)
        if not self.active or x.dim() != 4:
            return x
        n, c, h, w = x.shape

        def rand(*shape: int) -> Tensor:
            return torch.rand(*shape, generator=generator).to(x.device, x.dtype)

        if self.colour:
            x = (rand(n, c, 1, 1) - x).abs()
        if not self.geometric:
            return x

        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        s = torch.ones(n, device=x.device, dtype=x.dtype)
        if self.scale is not None:
            lo, hi = self.scale
            s = lo + (hi - lo) * rand(n)
        sx = s.clone()
        if self.flip:
            sx = torch.where(rand(n) < 0.5, -sx, sx)
        theta[:, 0, 0] = 1.0 / sx
        theta[:, 1, 1] = 1.0 / s
        if self.shift > 0:
            # grid coordinates span [-1, 1], so one pixel is 2 / size
            theta[:, 0, 2] = (rand(n) * 2 - 1) * self.shift * 2 / w
            theta[:, 1, 2] = (rand(n) * 2 - 1) * self.shift * 2 / h
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
