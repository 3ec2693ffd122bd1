"""t-SNE embeddings of features from several domains (sklearn.manifold.TSNE)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..errors import TransferkitError


@dataclass
class Embedding:
    """2-D points with, per point, the index of its domain and its class (-1 when unlabelled)."""

    points: np.ndarray  # (N, 2)
    domain: np.ndarray  # (N,) int
    labels: np.ndarray  # (N,) int, -1 = unknown
    domain_names: list[str]
    class_names: list[str]


def balanced_subsample(n: int, max_points: int, seed: int) -> Tensor:
    """Indices of at most ``max_points`` of ``n`` items, drawn without replacement (seeded)."""
    if n <= max_points:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_points].sort().values


def tsne_embed(
    features: Sequence[Tensor],
    labels: Sequence[Tensor | None],
    domain_names: Sequence[str],
    class_names: Sequence[str] = (),
    max_per_domain: int = 500,
    perplexity: float = 30.0,
    seed: int = 0,
) -> Embedding:
    """Embed the features of each domain (at most ``max_per_domain`` points each) together in 2-D.

    van der Maaten & Hinton, "Visualizing Data using t-SNE", JMLR 2008. Features
    are flattened, standardised jointly and embedded with PCA initialisation.
    """
    from sklearn.manifold import TSNE

    if not features:
        raise TransferkitError("t-SNE needs at least one set of features")
    xs, doms, labs = [], [], []
    for k, (f, y) in enumerate(zip(features, labels, strict=True)):
        idx = balanced_subsample(len(f), max_per_domain, seed + k)
        xs.append(f[idx].detach().reshape(len(idx), -1).double().cpu().numpy())
        doms.append(np.full(len(idx), k))
        labs.append(y[idx].cpu().numpy() if y is not None else np.full(len(idx), -1))
    x = np.concatenate(xs)
    if len({a.shape[1] for a in xs}) > 1:
        raise TransferkitError("t-SNE: the domains have features of different sizes")
    if len(x) < 5:
        raise TransferkitError(f"t-SNE needs at least 5 points, got {len(x)}")
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    perp = float(min(perplexity, (len(x) - 1) / 3))
    pts = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed, learning_rate="auto").fit_transform(x)
    return Embedding(pts, np.concatenate(doms), np.concatenate(labs), list(domain_names), list(class_names))
