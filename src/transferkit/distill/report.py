"""Teacher versus student: accuracy, agreement, parameters, size on disk and CPU latency."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from ..engine import metrics_from_logits, predict_logits
from ..models import parameter_count


def size_on_disk(model: nn.Module) -> int:
    """Bytes of the model's weights as a safetensors file (what ``Classifier.save`` writes, less metadata)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return len(safetensors_bytes(tensors))


@torch.no_grad()
def cpu_latency_ms(model: nn.Module, example: Tensor, batch_size: int, repeats: int = 10, warmup: int = 2) -> float:
    """Median wall time (ms) of one eval-mode forward pass on one CPU thread for a batch of ``batch_size``.

    One thread makes the number comparable between models and robust to a busy machine
    (several threads on shared cores mostly measure waiting for each other).
    """
    device = next(model.parameters()).device
    was = model.training
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model.to("cpu").eval()
    reps = -(-batch_size // len(example))
    x = example.cpu().repeat(reps, *([1] * (example.dim() - 1)))[:batch_size].contiguous()
    try:
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        model.to(device).train(was)
        torch.set_num_threads(threads)
    return statistics.median(times)


def compare(
    teacher: nn.Module,
    student: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    batch_sizes: tuple[int, ...] = (1, 256),
    latency: bool = True,
) -> dict[str, Any]:
    """Summary of both models on inputs ``x`` (labels ``y`` give accuracy).

    Returns ``{"teacher": {...}, "student": {...}, "agreement": %, "n": N}``; each side has
    ``acc`` (when labelled), ``parameters``, ``size_bytes`` and ``latency_ms_b{B}`` per batch size.
    """
    out: dict[str, Any] = {"n": len(x)}
    preds = {}
    for name, model in (("teacher", teacher), ("student", student)):
        logits = predict_logits(model, x)
        preds[name] = logits.argmax(1)
        row: dict[str, Any] = {"parameters": parameter_count(model), "size_bytes": size_on_disk(model)}
        if y is not None:
            m = metrics_from_logits(logits, y, int(logits.shape[1]))
            row["acc"] = m["acc"]
            row["errors"] = int((preds[name] != y.to(preds[name].device)).sum())
        if latency:
            for b in batch_sizes:
                row[f"latency_ms_b{b}"] = cpu_latency_ms(model, x[: min(len(x), b)], b)
        out[name] = row
    out["agreement"] = float((preds["teacher"] == preds["student"]).float().mean() * 100)
    return out


def summary_rows(cmp: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for a printed table: one per model, plus the student/teacher ratio."""
    rows = []
    for name in ("teacher", "student"):
        r = cmp[name]
        row = {"model": name, "params": f"{r['parameters']:,}", "size": f"{r['size_bytes'] / 1e6:.2f} MB"}
        row["acc"] = f"{r['acc']:.2f}%" if "acc" in r else "-"
        for k in sorted(k for k in r if k.startswith("latency_ms_b")):
            row["1-thread ms b" + k.removeprefix("latency_ms_b")] = f"{r[k]:.2f}"
        rows.append(row)
    rows[1]["agree"] = f"{cmp['agreement']:.2f}%"
    rows[0]["agree"] = ""
    return rows
