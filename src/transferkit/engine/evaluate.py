"""Evaluation: accuracy, loss, per-class accuracy, probabilities."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import TensorData, batches


def _cat(parts: Sequence[Any]) -> Any:
    """Join per-batch outputs along dimension 0: tensors, ``None``, and tuples/lists of them."""
    first = parts[0]
    if first is None:
        return None
    if isinstance(first, (tuple, list)):
        return type(first)(_cat([p[j] for p in parts]) for j in range(len(first)))
    return torch.cat(list(parts))


@torch.no_grad()
def batched_forward(
    model: nn.Module,
    x: Tensor,
    batch_size: int = 1024,
    fn: Callable[[Tensor], Any] | None = None,
    device: torch.device | str | None = None,
) -> Any:
    """``fn`` (default: ``model``) over ``x`` in slices of ``batch_size``, joined along dimension 0.

    ``model`` is in eval mode and autograd is off during the pass; its training flag is
    restored afterwards, also on an error. Each slice moves to ``device`` when one is given.
    ``fn`` returns a tensor, ``None`` or a (nested) tuple/list of them; the result has the
    same structure with every tensor the concatenation of its slices. An empty ``x`` gives
    ``torch.zeros(0)``.
    """
    fn = model if fn is None else fn
    was = model.training
    model.eval()
    try:
        slices = (x[i : i + batch_size] for i in range(0, len(x), batch_size))
        parts = [fn(xb if device is None else xb.to(device)) for xb in slices]
    finally:
        model.train(was)
    return _cat(parts) if parts else torch.zeros(0)


def predict_logits(model: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    """Logits for ``x`` in eval mode (the model's mode is restored)."""
    return batched_forward(model, x, batch_size, device=next(model.parameters()).device)


def metrics_from_logits(logits: Tensor, y: Tensor, num_classes: int) -> dict[str, Any]:
    y = y.to(logits.device)
    pred = logits.argmax(1)
    correct = pred == y
    per_class = []
    for c in range(num_classes):
        m = y == c
        per_class.append(float(correct[m].float().mean() * 100) if m.any() else float("nan"))
    return {
        "acc": float(correct.float().mean() * 100),
        "loss": float(F.cross_entropy(logits, y)),
        "per_class_acc": per_class,
        "n": len(y),
    }


def evaluate(model: nn.Module, data: TensorData, batch_size: int = 1024) -> dict[str, Any]:
    """Accuracy (%), mean cross-entropy and per-class accuracy of ``model`` on labelled ``data``."""
    y = data.require_labels("evaluation")
    logits = predict_logits(model, data.x, batch_size)
    return metrics_from_logits(logits, y, max(int(logits.shape[1]), data.num_classes))


def confusion_counts(y: Tensor, pred: Tensor, num_classes: int) -> Tensor:
    """(C, C) counts ``M[i, j] = |{n : y_n = i, pred_n = j}|`` (true class per row), C = ``num_classes``."""
    c = int(num_classes)
    return torch.bincount(y.cpu().long() * c + pred.cpu().long(), minlength=c * c).reshape(c, c)


def confusion_matrix(model: nn.Module, data: TensorData, batch_size: int = 1024) -> Tensor:
    """Confusion counts of ``model`` on labelled ``data`` (see :func:`confusion_counts`)."""
    y = data.require_labels("a confusion matrix")
    pred = predict_logits(model, data.x, batch_size).argmax(1).cpu()
    c = max(data.num_classes, int(pred.max()) + 1 if len(pred) else 0)
    return confusion_counts(y, pred, c)


__all__ = ["batched_forward", "batches", "confusion_counts", "confusion_matrix", "evaluate", "metrics_from_logits", "predict_logits"]
