"""What trains and how fast: freezing strategies and layer-wise learning rates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import TransferkitError, unknown_name
from ..models import Classifier, trainable_by_pattern

STRATEGIES = {
    "full": "train every layer",
    "partial": "freeze the first k layer groups (--freeze K) or all but --trainable PATTERN",
    "linear-probe": "freeze the backbone; compute its features once and train only the head",
    "lora": "freeze the backbone, add low-rank adapters (peft) to its layers; adapters and head train (Hu et al. 2022)",
}


def apply_strategy(
    model: Classifier, strategy: str, freeze: int | None = None, trainable: str | None = None,
    lora: dict[str, Any] | None = None,
) -> list[str]:
    """Set ``requires_grad`` per the strategy; return the names of frozen groups.

    ``lora``: the keyword arguments of :func:`~transferkit.finetune.lora.apply_lora`
    (``rank``, ``alpha``, ``dropout``, ``targets``) for ``strategy="lora"``.
    """
    if strategy not in STRATEGIES:
        raise unknown_name("strategy", strategy, STRATEGIES)
    if model.spec.get("lora") and strategy != "lora":
        raise TransferkitError(
            f"this model carries a LoRA adapter; --strategy {strategy} would train its frozen base: "
            "continue with --strategy lora, or merge it first (`transferkit export` writes a merged model)"
        )
    if strategy == "lora":
        from .lora import apply_lora

        if not model.spec.get("lora"):  # a loaded LoRA run keeps training its own adapter
            apply_lora(model, **(lora or {}))
        groups = model.layer_groups()
        return [n for n, ps in groups if not any(p.requires_grad for p in ps)]
    for p in model.parameters():
        p.requires_grad_(True)
    groups = model.layer_groups()
    if strategy == "full":
        return []
    if strategy == "linear-probe":
        for name, params in groups:
            if name != "head":
                for p in params:
                    p.requires_grad_(False)
        return [n for n, _ in groups if n != "head"]
    if trainable:
        trainable_by_pattern(model, trainable)
        return [n for n, ps in groups if not any(p.requires_grad for p in ps)]
    k = len(groups) // 2 if freeze is None else freeze
    if not 0 <= k < len(groups):
        raise TransferkitError(
            f"--freeze {k} is out of range: this model has {len(groups)} layer groups "
            f"({', '.join(n for n, _ in groups)}); use 0..{len(groups) - 1}"
        )
    for _, params in groups[:k]:
        for p in params:
            p.requires_grad_(False)
    return [n for n, _ in groups[:k]]


def lora_options(rank: int, alpha: float, dropout: float, targets: Sequence[str] | str | None) -> dict[str, Any]:
    """``--lora-targets a,b`` (or a list) -> the keyword arguments of ``apply_lora``."""
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return {"rank": rank, "alpha": alpha, "dropout": dropout, "targets": list(targets) if targets else None}


def layerwise_groups(model: Classifier, lr: float, decay: float | None, head_lr_mult: float = 1.0) -> list[dict[str, Any]]:
    """Parameter groups with ``lr * decay**depth`` (depth 0 at the head).

    With ``decay=None`` every backbone group gets ``lr`` and the head ``lr * head_lr_mult``.
    """
    groups = model.layer_groups()
    out = []
    for depth, (name, params) in enumerate(reversed(groups)):
        scale = (decay**depth) if decay is not None else 1.0
        if name == "head":
            scale *= head_lr_mult
        trainable = [p for p in params if p.requires_grad]
        if trainable:
            out.append({"params": trainable, "lr": lr * scale, "name": name})
    return out
