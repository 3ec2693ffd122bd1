"""Figures for people: learning curves, confusion matrices, t-SNE maps, score bars (matplotlib, Agg).

Every function returns a ``matplotlib.figure.Figure``; :func:`png_bytes` and
:func:`save_figure` turn it into a PNG. Axes are labelled, legends placed
outside the data where they would cover it, and fonts sized to be read at
the size the report shows them.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..io import atomic_write
from .tsne import Embedding

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

STYLE: dict[RcKeyType, Any] = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 9,
         "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.grid": True, "grid.alpha": 0.3}
DOMAIN_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
CLASS_MARKERS = ["o", "s", "^", "v", "D", "P", "X", "*", "<", ">", "p", "h"]


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    data = png_bytes(fig, dpi)
    return atomic_write(path, lambda p: p.write_bytes(data))


def _series(records: Sequence[dict[str, Any]], group: str, key: str) -> tuple[list[int], list[float]]:
    xs: list[int] = []
    ys: list[float] = []
    for r in records:
        v = (r.get(group) or {}).get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            xs.append(int(r.get("epoch", len(xs))) + 1)
            ys.append(float(v))
    return xs, ys


def learning_curves(records: Sequence[dict[str, Any]], title: str = "") -> Figure:
    """Loss (train and validation) and validation accuracy per epoch; the best epoch is marked.

    ``records`` are ``metrics.jsonl`` lines: ``{"epoch", "train": {"loss", ...}, "val": {"acc", "loss"}, "score", "best"}``.
    """
    with plt.rc_context(STYLE):
        fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 3.8))
        train_keys = sorted({k for r in records for k, v in (r.get("train") or {}).items() if isinstance(v, (int, float))})
        _, total = _series(records, "train", "loss")
        for k in ["loss", *[k for k in train_keys if k != "loss"]][:6]:
            xs, ys = _series(records, "train", k)
            if k != "loss" and len(ys) == len(total) and np.allclose(ys, total):
                continue  # a single loss term equal to the total: drawn once
            if xs:
                ax_l.plot(xs, ys, marker="o", ms=3, lw=2 if k == "loss" else 1,
                          ls="-" if k == "loss" else "--", label=f"train {k}" if k != "loss" else "train loss (total)")
        xs, ys = _series(records, "val", "loss")
        if xs:
            ax_l.plot(xs, ys, marker="s", ms=3, lw=2, color="black", label="validation loss")
        ax_l.set(xlabel="epoch", ylabel="loss", title="Loss")
        if ax_l.lines:
            ax_l.legend(loc="best")
        xs, ys = _series(records, "val", "acc")
        if xs:
            ax_a.plot(xs, ys, marker="o", ms=3, lw=2, label="validation accuracy")
        sx = [int(r.get("epoch", i)) + 1 for i, r in enumerate(records) if isinstance(r.get("score"), (int, float))]
        sy = [float(r["score"]) for r in records if isinstance(r.get("score"), (int, float))]
        if sx and not (xs and np.allclose(sy, ys) and sx == xs):
            ax_a.plot(sx, sy, marker=".", lw=1, ls=":", color="grey", label="selection score")
        best = [int(r.get("epoch", i)) + 1 for i, r in enumerate(records) if r.get("best")]
        if best:
            ax_a.axvline(best[-1], color="green", ls="--", lw=1, label=f"best epoch ({best[-1]})")
        ax_a.set(xlabel="epoch", ylabel="accuracy (%)" if xs else "score", title="Validation")
        if ax_a.lines:
            ax_a.legend(loc="lower right")
        else:
            ax_a.text(0.5, 0.5, "no validation metrics logged", ha="center", va="center", transform=ax_a.transAxes)
        for ax in (ax_l, ax_a):
            ax.xaxis.get_major_locator().set_params(integer=True)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
    return fig


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], title: str = "") -> Figure:
    """Row-normalised confusion matrix (true class per row) with counts written in the cells."""
    m = np.asarray(matrix, dtype=np.float64)
    c = m.shape[0]
    names = list(class_names)[:c] + [str(i) for i in range(len(class_names), c)]
    rows = m.sum(1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    size = min(3.5 + 0.3 * c, 12.0)
    with plt.rc_context({**STYLE, "axes.grid": False}):
        fig, ax = plt.subplots(figsize=(size + 1.2, size))
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
        if c <= 30:
            for i in range(c):
                for j in range(c):
                    if m[i, j]:
                        ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=8 if c > 12 else 9,
                                color="white" if norm[i, j] > 0.5 else "black")
            ax.set_xticks(range(c), names, rotation=45 if max(map(len, names)) > 2 else 0, ha="right" if max(map(len, names)) > 2 else "center")
            ax.set_yticks(range(c), names)
        ax.set(xlabel="predicted class", ylabel="true class", title=title or "Confusion matrix")
        fig.tight_layout()
    return fig


def _scatter(ax: Any, emb: Embedding, mask: np.ndarray | None = None) -> None:
    mask = np.ones(len(emb.points), bool) if mask is None else mask
    labelled = (emb.labels >= 0).any()
    classes = sorted(set(emb.labels[mask & (emb.labels >= 0)].tolist())) if labelled else [-1]
    for d, _name in enumerate(emb.domain_names):
        for k, cls in enumerate(classes):
            sel = mask & (emb.domain == d) & (emb.labels == cls if labelled else True)
            if sel.any():
                ax.scatter(emb.points[sel, 0], emb.points[sel, 1], s=14, alpha=0.65, linewidths=0.3,
                           marker=CLASS_MARKERS[k % len(CLASS_MARKERS)] if labelled else "o",
                           color=DOMAIN_COLOURS[d % len(DOMAIN_COLOURS)], edgecolors="white")
    ax.set(xlabel="t-SNE 1", ylabel="t-SNE 2")
    ax.set_xticks([])
    ax.set_yticks([])


def _tsne_legend(fig: Figure, emb: Embedding) -> None:
    handles = [Line2D([], [], ls="", marker="o", ms=8, color=DOMAIN_COLOURS[d % len(DOMAIN_COLOURS)], label=name)
               for d, name in enumerate(emb.domain_names)]
    classes = sorted(set(emb.labels[emb.labels >= 0].tolist()))
    for k, cls in enumerate(classes[:24]):
        name = emb.class_names[cls] if cls < len(emb.class_names) else str(cls)
        handles.append(Line2D([], [], ls="", marker=CLASS_MARKERS[k % len(CLASS_MARKERS)], ms=7, color="dimgray", label=f"class {name}"))
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), title="colour: domain\nmarker: class", frameon=False)


def tsne_figure(emb: Embedding, title: str = "t-SNE of features") -> Figure:
    """One t-SNE map: colour = domain, marker = class."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.5, 5.5))
        _scatter(ax, emb)
        ax.set_title(title)
        fig.tight_layout()
        _tsne_legend(fig, emb)
    return fig


def tsne_pair_figure(before: Embedding, after: Embedding, titles: tuple[str, str] = ("before adaptation", "after adaptation")) -> Figure:
    """Two t-SNE maps side by side (e.g. source-only model vs adapted model)."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(11, 5))
        for ax, emb, t in zip(axes, (before, after), titles, strict=True):
            _scatter(ax, emb)
            ax.set_title(t)
        fig.tight_layout()
        _tsne_legend(fig, after)
    return fig


def score_bars(rows: Sequence[dict[str, Any]], scores: Sequence[str], titles: dict[str, str]) -> Figure:
    """One horizontal bar panel per transferability score, models in ranking order."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(scores), figsize=(3.2 * len(scores) + 1.5, 0.45 * len(rows) + 1.6), sharey=True)
        axes = np.atleast_1d(axes)
        names = [str(r["model"]) for r in rows][::-1]
        for ax, s in zip(axes, scores, strict=True):
            vals = [float(r[s]) for r in rows][::-1]
            bars = ax.barh(names, vals, color="#1f77b4")
            ax.bar_label(bars, labels=[f"{v:.3g}" for v in vals], padding=3, fontsize=8)
            ax.margins(x=0.25)
            ax.set(title=titles.get(s, s), xlabel="score (higher is better)")
        fig.tight_layout()
    return fig
