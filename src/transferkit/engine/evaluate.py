"""Evaluation: accuracy, loss, per-class accuracy, probabilities."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import TensorData, batches


@torch.no_grad()
def predict_logits(model: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    """Logits for ``x`` in eval mode (the model's mode is restored)."""
    was = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        out = [model(x[i : i + batch_size].to(device)) for i in range(0, len(x), batch_size)]
    finally:
        model.train(was)
    return torch.cat(out) if out else torch.zeros(0)


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


def confusion_matrix(model: nn.Module, data: TensorData, batch_size: int = 1024) -> Tensor:
    y = data.require_labels("a confusion matrix")
    pred = predict_logits(model, data.x, batch_size).argmax(1).cpu()
    c = max(data.num_classes, int(pred.max()) + 1 if len(pred) else 0)
    return torch.bincount(y.cpu() * c + pred, minlength=c * c).reshape(c, c)


__all__ = ["batches", "confusion_matrix", "evaluate", "metrics_from_logits", "predict_logits"]
