"""Soak test: 20,000 training steps through the real Trainer, resident memory sampled.

Protocol: an MLP (64-256-256-10) on scikit-learn's digits (8x8, offline), Adam, batch 32,
20 epochs x 1,000 steps = 20,000 steps per seed through :class:`transferkit.engine.Trainer`
with a run folder (metrics.jsonl appended and best/last checkpoints written every epoch,
validation every epoch), so the whole stack a long job uses is exercised. Resident set
size (RSS, from ``/proc/self/statm``) is sampled every 500 steps. Growth is measured from
the sample after the warm-up (step 2,000: allocator pools, lazy imports and optimizer
state exist by then) to the last sample; the target is flat within 5 %. Three seeds, one
process each after the other, one thread.

Usage: ``python benchmarks/soak.py [--steps 20000]``; writes ``benchmarks/results/soak.{json,md}``.
Budget: about 1-3 minutes per seed on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RESULTS, markdown_table, ratio, row, write_results
from transferkit.data import index_batches, load_data
from transferkit.engine import (
    Callback,
    RunDir,
    Supervised,
    TrainConfig,
    Trainer,
    evaluate,
    seed_everything,
)
from transferkit.models import create_model

PAGE = os.sysconf("SC_PAGE_SIZE")
WARMUP_STEP = 2000
EVERY = 500


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE / 2**20


class RssSampler(Callback):
    def __init__(self) -> None:
        self.samples: list[tuple[int, float]] = []

    def on_step_end(self, trainer: Any, losses: dict[str, float]) -> None:
        if trainer.global_step % EVERY == 0:
            self.samples.append((trainer.global_step, rss_mb()))


def soak(seed: int, steps: int, folder: Path) -> dict[str, Any]:
    seed_everything(seed)
    train = load_data("digits", "train")
    val = load_data("digits", "test")
    model = create_model("mlp", train.num_classes, train.input_shape)
    per_epoch = 1000
    epochs = max(1, steps // per_epoch)
    cfg = TrainConfig(epochs=epochs, lr=1e-3, optimizer="adam", seed=seed, steps_per_epoch=per_epoch)

    def batches(epoch: int, gen: torch.Generator) -> Iterator[Any]:
        while True:  # the Trainer stops after steps_per_epoch
            for idx in index_batches(len(train), 32, True, gen):
                yield train.x[idx], train.y[idx]

    sampler = RssSampler()
    run = RunDir(folder / f"seed{seed}")
    trainer = Trainer(Supervised(model), cfg, batches, per_epoch, validate=lambda m: evaluate(m.model, val),
                      run=run, callbacks=[sampler], verbose=False)
    gc.collect()
    t0 = time.perf_counter()
    result = trainer.fit()
    wall = time.perf_counter() - t0
    base = next(mb for step, mb in sampler.samples if step >= WARMUP_STEP)
    last = sampler.samples[-1][1]
    peak = max(mb for step, mb in sampler.samples if step >= WARMUP_STEP)
    return {"growth_pct": 100 * (last - base) / base, "peak_growth_pct": 100 * (peak - base) / base,
            "base_mb": base, "last_mb": last, "steps": trainer.global_step, "wall_s": wall,
            "steps_per_s": trainer.global_step / wall, "val_acc": result.last["val"]["acc"], "samples": sampler.samples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("TRANSFERKIT_OFFLINE", "1")
    runs = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        for seed in args.seeds:
            r = soak(seed, args.steps, Path(d))
            print(f"seed {seed}: {r['steps']} steps, RSS {r['base_mb']:.1f} -> {r['last_mb']:.1f} MB "
                  f"({r['growth_pct']:+.2f} %), {r['steps_per_s']:.0f} steps/s, val acc {r['val_acc']:.2f}", flush=True)
            runs.append(r)
    wall = time.perf_counter() - t_all
    task = f"digits mlp, {args.steps} steps"
    rows = [
        row(task, "rss growth after warm-up", [r["growth_pct"] for r in runs], wall, selection="last sample vs step 2000", metric="percent"),
        row(task, "peak rss growth", [r["peak_growth_pct"] for r in runs], wall, selection="max sample vs step 2000", metric="percent"),
        row(task, "training speed", [r["steps_per_s"] for r in runs], wall, selection="whole run", metric="steps/s"),
        row(task, "final val acc", [r["val_acc"] for r in runs], wall, selection="last epoch", metric="accuracy"),
    ]
    worst = max(abs(r["growth_pct"]) for r in runs)
    ratios = [ratio("max |rss growth| %", worst, "target: flat within 5 % (|growth| <= 5)"),
              ratio("flat within 5 %", float(worst <= 5.0), "1 = every seed within the target")]
    extra = {"rss_samples_mb": {str(s): r["samples"] for s, r in zip(args.seeds, runs, strict=True)},
             "protocol": __doc__.split("Usage:")[0].strip()}
    path = write_results("soak", rows, ratios, extra)
    md = ("# Soak test: resident memory over 20,000 training steps\n\n" + markdown_table(rows)
          + f"\nMax |RSS growth| after warm-up: {worst:.2f} % (target <= 5 %). RSS sampled every {EVERY} steps "
          "from /proc/self/statm; growth = last sample vs the sample at step 2,000. Values are percent, "
          "steps/s or accuracy (%) as named in the method column.\n")
    (RESULTS / "soak.md").write_text(md)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
