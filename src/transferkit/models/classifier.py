"""A classifier is a backbone, an optional bottleneck and a linear head.

``Classifier`` is the one model type every family trains. Any ``nn.Module``
that maps a batch to (N, D) features can be the backbone, so users drop in
their own network with :meth:`Classifier.from_backbone`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..errors import TransferkitError
from ..io import atomic_write, safe_torch_load
from .backbones import create_backbone


class CosineHead(nn.Module):
    """``logits = (w_k / ||w_k||) . (f / ||f||) / T``: a cosine-similarity classifier, no bias.

    Used by MME (Saito et al., ICCV 2019); saved as ``head.weight`` with ``spec["head"] =
    {"kind": "cosine", "temperature": T}`` so :func:`load_model` rebuilds the same head.
    """

    def __init__(self, in_features: int, out_features: int, temperature: float = 0.05):
        super().__init__()
        if temperature <= 0:
            raise TransferkitError(f"the cosine head's temperature must be > 0, got {temperature}")
        self.in_features, self.out_features, self.temperature = in_features, out_features, float(temperature)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.normal_(self.weight, std=0.1)

    def forward(self, f: Tensor) -> Tensor:
        return nn.functional.normalize(f, dim=1) @ nn.functional.normalize(self.weight, dim=1).t() / self.temperature

    def spec(self) -> dict[str, Any]:
        return {"kind": "cosine", "temperature": self.temperature}


class Classifier(nn.Module):
    """``logits = head(bottleneck(backbone(x)))``.

    Attributes:
        backbone: maps inputs to (N, backbone.out_features).
        bottleneck: ``Linear -> BatchNorm -> ReLU`` to ``bottleneck_dim`` features, or identity.
        head: ``Linear(feature_dim, num_classes)``.
        spec: how to rebuild the model (saved in checkpoints).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        bottleneck_dim: int | None = None,
        spec: dict[str, Any] | None = None,
        classes: Sequence[str] | None = None,
    ):
        super().__init__()
        if num_classes < 1:
            raise TransferkitError(f"num_classes must be at least 1, got {num_classes}")
        self.backbone = backbone
        in_dim = int(getattr(backbone, "out_features", 0))
        if in_dim <= 0:
            raise TransferkitError("the backbone must have an int attribute out_features (its feature size)")
        if bottleneck_dim:
            self.bottleneck: nn.Module = nn.Sequential(nn.Linear(in_dim, bottleneck_dim), nn.BatchNorm1d(bottleneck_dim), nn.ReLU())
            self.feature_dim = bottleneck_dim
        else:
            self.bottleneck = nn.Identity()
            self.feature_dim = in_dim
        self.head = nn.Linear(self.feature_dim, num_classes)
        self.spec = dict(spec or {})
        self.spec.update(num_classes=num_classes, bottleneck_dim=bottleneck_dim)
        self.classes = list(classes) if classes else [str(i) for i in range(num_classes)]

    @classmethod
    def from_backbone(cls, backbone: nn.Module, num_classes: int, out_features: int | None = None, **kw: Any) -> Classifier:
        """Wrap any user module that returns (N, D) features."""
        if out_features is not None:
            cast(Any, backbone).out_features = out_features  # nn.Module.__setattr__ is typed for tensors/modules only
        return cls(backbone, num_classes, **kw)

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def features(self, x: Tensor) -> Tensor:
        return self.bottleneck(self.backbone(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def forward_all(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Features and logits in one pass."""
        f = self.features(x)
        return f, self.head(f)

    def replace_head(self, num_classes: int, classes: Sequence[str] | None = None) -> Classifier:
        """A fresh head for a new class count (the old one is discarded)."""
        self.head = nn.Linear(self.feature_dim, num_classes).to(self.head.weight.device)
        self.spec.pop("head", None)  # a plain linear head again
        self.spec["num_classes"] = num_classes
        self.classes = list(classes) if classes else [str(i) for i in range(num_classes)]
        return self

    def use_cosine_head(self, temperature: float = 0.05) -> CosineHead:
        """Swap the linear head for a :class:`CosineHead` with the same prototype directions (MME).

        Recorded in ``spec["head"]``, so a saved model is rebuilt with it by :func:`load_model`.
        """
        old: nn.Module = self.head
        if isinstance(old, CosineHead):
            head = old
        else:
            head = CosineHead(self.feature_dim, self.num_classes, temperature).to(self.head.weight.device)
            with torch.no_grad():
                head.weight.copy_(self.head.weight)
        head.temperature = float(temperature)
        setattr(self, "head", head)  # noqa: B010 (the attribute is typed for the usual linear head)
        self.spec["head"] = head.spec()
        return head

    def layer_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        """Named parameter groups from input to output: backbone groups, bottleneck, head."""
        names = list(getattr(self.backbone, "groups", [])) or [n for n, _ in self.backbone.named_children()]
        groups: list[tuple[str, list[nn.Parameter]]] = []
        seen: set[int] = set()
        for n in names:
            params = [p for p in getattr(getattr(self.backbone, "net", self.backbone), n).parameters()]
            groups.append((f"backbone.{n}", params))
            seen.update(id(p) for p in params)
        rest = [p for p in self.backbone.parameters() if id(p) not in seen]
        if rest:
            groups.append(("backbone.other", rest))
        if list(self.bottleneck.parameters()):
            groups.append(("bottleneck", list(self.bottleneck.parameters())))
        groups.append(("head", list(self.head.parameters())))
        return groups

    # ----------------------------------------------------------- persistence
    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Weights as safetensors; the spec and class names in its metadata.

        A LoRA model (``spec["lora"]``) saves only its adapter and head: the frozen base is
        rebuilt from ``spec["pretrained"]`` when loaded (:func:`load_model`).
        """
        meta = {"transferkit": json.dumps({"spec": self.spec, "classes": self.classes, **(extra or {})})}
        state = self.state_dict()
        if self.spec.get("lora"):
            from ..finetune.lora import adapter_keys

            state = {k: state[k] for k in adapter_keys(self)}
        tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        return atomic_write(path, lambda p: save_file(tensors, str(p), metadata=meta))

    def load_weights(self, state: dict[str, Tensor], strict: bool = True, skip_head: bool = False) -> None:
        """Load a state dict, explaining any mismatch by key."""
        own = self.state_dict()
        if skip_head:
            state = {k: v for k, v in state.items() if not k.startswith("head.")}
        missing = [k for k in own if k not in state and not (skip_head and k.startswith("head."))]
        unexpected = [k for k in state if k not in own]
        wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state if k in own and state[k].shape != own[k].shape]
        if wrong or (strict and (missing or unexpected)):
            parts = []
            if wrong:
                parts.append("shape mismatch: " + ", ".join(wrong[:8]))
            if missing:
                parts.append("missing: " + ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else ""))
            if unexpected:
                parts.append("unexpected: " + ", ".join(unexpected[:8]) + (" ..." if len(unexpected) > 8 else ""))
            raise TransferkitError("checkpoint does not fit this architecture (" + "; ".join(parts) + ")")
        self.load_state_dict(state, strict=False)


def create_model(
    name: str,
    num_classes: int,
    input_shape: Sequence[int],
    bottleneck_dim: int | None = None,
    pretrained: bool | str = False,
    classes: Sequence[str] | None = None,
    **kwargs: Any,
) -> Classifier:
    """``create_model("lenet", 10, (1, 28, 28))``; also ``timm:NAME`` and ``torchvision:NAME``."""
    backbone = create_backbone(name, input_shape, pretrained=pretrained, **kwargs)
    spec: dict[str, Any] = {"arch": name, "input_shape": list(input_shape), "kwargs": kwargs}
    prep = getattr(backbone, "preprocessing", None)
    if isinstance(prep, dict):  # a pretrained-capable backbone: its input size and normalisation go with the model
        spec["input_shape"] = list(getattr(backbone, "input_shape", input_shape))
        spec.update({k: v for k, v in prep.items() if k != "pretrained"})
        spec["pretrained"] = prep.get("pretrained")
    return Classifier(backbone, num_classes, bottleneck_dim, spec=spec, classes=classes)


def pretrained_classifier(name: str, input_shape: Sequence[int], pretrained: bool | str = True) -> Classifier:
    """A pretrained EfficientNet-Lite with its 1000-class ImageNet head as the classifier's head.

    >>> model = pretrained_classifier("efficientnet-lite0", (3, 224, 224))
    >>> model.classes[int(model(x).argmax())]   # an ImageNet class name, e.g. 'daisy'
    """
    from .pretrained import imagenet_classes

    model = create_model(name, 1000, input_shape, pretrained=pretrained, classes=imagenet_classes())
    fc = getattr(model.backbone, "imagenet_head", None)
    if not fc:
        raise TransferkitError(f"'{name}' has no ImageNet head to keep; build it with create_model(..., pretrained=...) and fine-tune a head")
    with torch.no_grad():
        model.head.weight.copy_(fc[0].weight)
        model.head.bias.copy_(fc[0].bias)
    return model


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and transferkit metadata from a safetensors file or a weights-only torch file."""
    path = Path(path)
    if path.is_dir():  # a run folder
        for cand in (path / "checkpoints" / "best" / "model.safetensors", path / "checkpoints" / "last" / "model.safetensors"):
            if cand.is_file():
                path = cand
                break
        else:
            raise TransferkitError(f"{path} is not a run folder with a checkpoint (no checkpoints/best or checkpoints/last)")
    if not path.is_file():
        raise TransferkitError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            state = load_file(str(path))
        except Exception as exc:
            raise TransferkitError(f"cannot read {path} as safetensors: {exc}") from None
        info = json.loads(meta["transferkit"]) if "transferkit" in meta else {}
        return state, info
    obj = safe_torch_load(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise TransferkitError(f"{path} does not hold a state dict of tensors")
    return obj, {}


def load_model(path: str | Path, **overrides: Any) -> Classifier:
    """Rebuild a model saved by transferkit (a run folder or a .safetensors file)."""
    state, info = read_checkpoint(path)
    spec = info.get("spec")
    if not spec or "arch" not in spec:
        raise TransferkitError(
            f"{path} has no transferkit model description; build the model with create_model(...) "
            "and pass the file as --init (a plain state dict) instead"
        )
    lora = spec.get("lora")
    model = create_model(
        spec["arch"], spec["num_classes"], spec["input_shape"], spec.get("bottleneck_dim"),
        pretrained=(spec.get("pretrained") or False) if lora else False,  # a LoRA file holds the adapter, not the base
        classes=info.get("classes"), **spec.get("kwargs", {}),
    )
    head = spec.get("head")
    if head and head.get("kind") == "cosine":  # a cosine-similarity head (MME), not the default linear one
        model.use_cosine_head(head["temperature"])
    if lora:
        from ..finetune.lora import load_adapter

        load_adapter(model, lora, state, path)
    else:
        model.load_weights(state)
    if "weights" in spec:  # where the weights first came from (spec["pretrained"] says how to rebuild the base now)
        model.spec["weights"] = spec["weights"]
    if spec.get("preprocess"):
        model.spec["preprocess"] = dict(spec["preprocess"])  # applied again to new inputs (fit_to_model)
    for k, v in overrides.items():
        setattr(model, k, v)
    return model


class FeatureHooks:
    """Capture the outputs of modules addressed by path, e.g. ``backbone.conv2``.

    >>> with FeatureHooks(model, ["backbone.conv2"]) as feats:
    ...     model(x)
    ...     h = feats["backbone.conv2"]
    """

    def __init__(self, model: nn.Module, paths: Sequence[str]):
        modules = dict(model.named_modules())
        bad = [p for p in paths if p not in modules]
        if bad:
            avail = [n for n in modules if n]
            raise TransferkitError(f"no module named {', '.join(bad)}; module paths are: {', '.join(avail)}")
        self.modules = {p: modules[p] for p in paths}
        self.outputs: dict[str, Tensor] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> dict[str, Tensor]:
        for p, m in self.modules.items():
            self._handles.append(m.register_forward_hook(self._hook(p)))
        return self.outputs

    def _hook(self, path: str):
        def fn(_m: nn.Module, _i: Any, out: Tensor) -> None:
            self.outputs[path] = out

        return fn

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def trainable_by_pattern(model: nn.Module, pattern: str) -> int:
    """Freeze every parameter whose name does not match the regex ``pattern``; return the count left trainable."""
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise TransferkitError(f"--trainable '{pattern}' is not a valid regular expression: {exc}") from None
    n = 0
    for name, p in model.named_parameters():
        p.requires_grad_(bool(rx.search(name)))
        n += int(p.requires_grad)
    if n == 0:
        names = [n for n, _ in model.named_parameters()]
        raise TransferkitError(f"--trainable '{pattern}' matches no parameter; names look like: {', '.join(names[:10])}")
    return n


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_init(model: Classifier, path: str | Path, skip_head: bool) -> None:
    """Initialise ``model`` from a user checkpoint (ours or a plain state dict)."""
    state, _ = read_checkpoint(path)
    if not any(k.startswith(("backbone.", "head.")) for k in state):
        # a bare backbone state dict: it must cover the whole backbone and nothing else
        state = {f"backbone.{k}": v for k, v in state.items()}
        own = [k for k in model.state_dict() if k.startswith("backbone.")]
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if missing or unexpected:
            raise TransferkitError(
                f"{path} does not fit this backbone (missing: {', '.join(missing[:6]) or 'none'}; "
                f"unexpected: {', '.join(unexpected[:6]) or 'none'}); check --model"
            )
        with torch.no_grad():
            model.load_weights(state, strict=False)
        return
    with torch.no_grad():
        model.load_weights(state, skip_head=skip_head)
