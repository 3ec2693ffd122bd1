"""LoRA: low-rank adapters on a frozen pretrained backbone, through the ``peft`` library.

Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models". A target layer
with frozen weight :math:`W_0` (a linear map, or a convolution seen as one) becomes

.. math::
    h = W_0 x + \\frac{\\alpha}{r} B A\\, \\mathrm{drop}(x), \\qquad
    A \\in \\mathbb{R}^{r \\times d_{in}},\\ B \\in \\mathbb{R}^{d_{out} \\times r},\\ B_0 = 0,

so training starts from the pretrained function and learns a rank-``r`` update
:math:`\\Delta W = \\frac{\\alpha}{r} BA`. Only ``A``, ``B`` and the classifier head (and
bottleneck) train; batch-norm statistics of the frozen base stay as pretrained. A saved
LoRA model holds only those tensors (``spec["lora"]`` describes the adapter,
``spec["pretrained"]`` where the base comes from); :func:`merge_lora` folds
:math:`\\Delta W` into :math:`W_0` (what ``peft``'s ``merge_and_unload`` does) for export.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..errors import TransferkitError

if TYPE_CHECKING:
    from ..models import Classifier

LORA_LAYERS = (nn.Linear, nn.Conv2d)
# per backbone family: the last names of the modules that get adapters by default
FAMILY_TARGETS: dict[str, tuple[str, ...]] = {
    "efficientnet-lite": ("_expand_conv", "_project_conv", "head_conv.conv"),  # the 1x1 (pointwise) convolutions
    "vit": ("qkv", "proj", "fc1", "fc2"),  # timm transformers: attention and MLP linears
    "torchvision-vit": ("out_proj", "mlp.0", "mlp.3"),
    "bert": ("query", "key", "value", "intermediate.dense", "output.dense"),  # text encoders: attention and feed-forward
}


def _peft() -> Any:
    try:
        import peft
    except ImportError:
        raise TransferkitError("--strategy lora needs peft: pip install 'transferkit[vision]'") from None
    return peft


def _kernel_padding_ok(module: nn.Module) -> bool:
    """A convolution peft can adapt: its own ``padding`` holds all of its padding (1x1, or not 'same'-padded outside)."""
    if not isinstance(module, nn.Conv2d):
        return True
    outside = getattr(module, "static_padding", None)
    pads_outside = outside is not None and type(outside).__name__ != "Identity"  # nn.Identity or the library's own
    return module.groups == 1 and not pads_outside and not type(module).__name__.startswith("Conv2dDynamic")


def candidate_layers(backbone: nn.Module) -> dict[str, nn.Module]:
    """The backbone's layers LoRA can adapt (Linear, and ungrouped Conv2d), by module path."""
    return {n: m for n, m in backbone.named_modules() if n and isinstance(m, LORA_LAYERS) and _kernel_padding_ok(m)}


def _family_defaults(arch: str, names: Sequence[str]) -> tuple[str, ...] | None:
    if arch.startswith("efficientnet-lite"):
        return FAMILY_TARGETS["efficientnet-lite"]
    if any(n.endswith(".qkv") for n in names):
        return FAMILY_TARGETS["vit"]
    if any(n.endswith(".attention.self.query") for n in names):
        return FAMILY_TARGETS["bert"]
    if any(n.endswith(".out_proj") for n in names):
        return FAMILY_TARGETS["torchvision-vit"]
    return None  # CNNs (ResNets, ...): every adaptable convolution and linear layer


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or name.endswith("." + pattern) or re.fullmatch(pattern, name) is not None


def _available(layers: dict[str, nn.Module]) -> str:
    counts = Counter(n.rsplit(".", 1)[-1] for n in layers)
    shown = ", ".join(f"{k} ({v})" for k, v in counts.most_common(8))
    return shown + (f", ... ({len(counts)} names)" if len(counts) > 8 else "")


def resolve_targets(backbone: nn.Module, arch: str, targets: Sequence[str] | None) -> list[str]:
    """Module paths that get adapters: ``targets`` (names matched at the end of a path, or regexes), or the family default."""
    layers = candidate_layers(backbone)
    if not layers:
        raise TransferkitError("this backbone has no Linear or Conv2d layer LoRA can adapt; use --strategy partial or full")
    if targets:
        try:
            chosen = [n for n in layers if any(_matches(n, t) for t in targets)]
        except re.error as exc:
            raise TransferkitError(f"--lora-targets {','.join(targets)} is not a valid name or regex: {exc}") from None
        if not chosen:
            raise TransferkitError(
                f"--lora-targets {','.join(targets)} matches no adaptable layer; the backbone's layer names are "
                f"(count): {_available(layers)}"
            )
        return chosen
    family = _family_defaults(arch, list(layers))
    chosen = [n for n in layers if family is None or any(_matches(n, t) for t in family)]
    return chosen or list(layers)


def apply_lora(
    model: Classifier, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0, targets: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Freeze ``model`` (a Classifier) and add LoRA adapters to its backbone; the head (and bottleneck) train.

    Returns the adapter's description, also stored in ``model.spec["lora"]``.
    """
    peft = _peft()
    if rank < 1:
        raise TransferkitError(f"--lora-rank must be at least 1, got {rank}")
    backbone = model.backbone
    spec = model.spec
    chosen = resolve_targets(backbone, str(spec.get("arch", "")), targets)
    config = peft.LoraConfig(r=int(rank), lora_alpha=float(alpha), lora_dropout=float(dropout), target_modules=chosen, bias="none")
    peft.inject_adapter_in_model(config, backbone)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name or name.startswith(("head.", "bottleneck.")))
    info = {"rank": int(rank), "alpha": float(alpha), "dropout": float(dropout), "targets": chosen}
    spec["lora"] = info
    _check_forward(model)
    return info


def _check_forward(model: Classifier) -> None:
    shape = model.spec.get("input_shape")
    if not shape or len(shape) != 3:  # images only (token ids need their own dummy input)
        return
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *shape, device=next(model.parameters()).device))
    except RuntimeError as exc:
        raise TransferkitError(f"a LoRA target does not fit its layer ({str(exc).splitlines()[0]}); choose other --lora-targets") from None
    finally:
        model.train(was)


def is_lora(model: nn.Module) -> bool:
    return bool(getattr(model, "spec", {}).get("lora"))


def adapter_keys(model: nn.Module) -> list[str]:
    """State-dict keys a LoRA model saves: the adapters, the head and the bottleneck.

    Everything when the base cannot be rebuilt from its pretrained weights (``spec["pretrained"]``
    is False: e.g. LoRA on a model fine-tuned before and loaded from its checkpoint).
    """
    if getattr(model, "spec", {}).get("pretrained") is False:
        return list(model.state_dict())
    return [k for k in model.state_dict() if "lora_" in k or k.startswith(("head.", "bottleneck."))]


def adapter_size(model: nn.Module) -> dict[str, int]:
    """Parameters and bytes of what a LoRA run saves (adapters + head), and the adapters alone."""
    state = model.state_dict()
    keys = adapter_keys(model)
    lora = [k for k in keys if "lora_" in k]
    return {
        "saved_parameters": sum(state[k].numel() for k in keys),
        "saved_bytes": sum(state[k].numel() * state[k].element_size() for k in keys),
        "adapter_parameters": sum(state[k].numel() for k in lora),
    }


def load_adapter(model: Classifier, lora: dict[str, Any], state: dict[str, Tensor], path: str | Path) -> None:
    """Rebuild the adapters described by ``lora`` on ``model`` (its base already loaded) and load ``state`` into them."""
    apply_lora(model, lora["rank"], lora["alpha"], lora["dropout"], lora["targets"])
    want = set(adapter_keys(model))
    missing, unexpected = sorted(want - set(state)), sorted(set(state) - want)
    if missing or unexpected:
        raise TransferkitError(
            f"{path} does not hold this LoRA adapter ({len(missing)} missing: {', '.join(missing[:3]) or 'none'}; "
            f"{len(unexpected)} unexpected: {', '.join(unexpected[:3]) or 'none'})"
        )
    with torch.no_grad():
        model.load_weights(state, strict=False)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base layer and remove the peft wrappers (peft's ``merge_and_unload``), in place.

    Afterwards the model is a plain network with the same outputs; ``spec["lora"]`` is dropped, so it saves in full.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, module in wrapped:
        module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.get_base_layer())
    spec = getattr(model, "spec", None)
    if isinstance(spec, dict) and spec.pop("lora", None) is not None:
        spec["merged_lora"] = True
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every batch-norm layer in eval mode (the frozen base keeps its statistics); dropout stays in train mode."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
