"""MNIST <-> USPS with a few target labels (semi-supervised) and without source data (SHOT), LeNet, 28x28.

Per task and seed, one source-only LeNet is trained with the recipe of ``adapt_digits.py`` (Adam
1e-3, batch 64, random shift 2 px and zoom 0.85-1.15 of source batches), for fewer steps, and
every row starts from a copy of it:

- ``shot``: source-free (Liang et al. 2020): the unlabelled target only, head frozen;
- ``mme K=k`` and ``fixmatch K=k``: k labelled target examples per class drawn from the target
  training set (seeded by the run's seed, stratified), the rest unlabelled;
- ``S+T K=k``: the source-only method with the same k labels per class in its supervised loss
  (the "S+T" baseline of Saito et al. 2019);
- ``fine-tune on K=k labels alone``: the source model fine-tuned on the same 10k labelled target
  examples, nothing else (no source, no unlabelled target), best epoch by training loss (no
  labelled data is left to validate on).

Checkpoints of the adaptation rows are chosen by IM on unlabelled target images (the K labelled
examples train, they never choose). Every number is the accuracy on the FULL target test set
(USPS test: 2007 images; MNIST test: 10,000). The unsupervised rows (source-only, best method) are
read from ``results/adapt_digits.json`` (2000 source steps, 1500 adaptation steps), not rerun.

Budget (the defaults): 600 source steps, 200 steps per adaptation row (checkpoints every 100),
100 fine-tuning steps, at most 10,000 training images per domain (the test sets are whole),
Adam 1e-3. About 25 minutes on 2 free CPU cores; the committed results were measured while the
2 cores were shared with other jobs (load 15-25), which made each run 10-20x slower than that:
the per-row wall times in the table are those slow ones. ``--source-steps 2000 --steps 800
--finetune-steps 300 --train-subset 0`` is the closer-to-adapt_digits budget (about 4x longer).

    TRANSFERKIT_DATA_DIR=../shared/data python benchmarks/adapt_digits_semi.py
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import re
import statistics
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adapt_digits import TASK_ARGS, TASKS, subset
from bench_common import RESULTS, markdown_table, row, write_results
from transferkit.adapt import AdaptSpec, adapt
from transferkit.adapt.api import prepare_domains
from transferkit.adapt.semi import split_target_labels
from transferkit.adapt.shot import ShotConfig, adapt_source_free
from transferkit.data import Augment, TensorData, load_data
from transferkit.engine import TrainConfig, evaluate
from transferkit.finetune.api import FinetuneSpec, finetune

PUBLISHED_SHOT = {"M->U": 98.0, "U->M": 98.4}  # Liang et al. 2020, Table 2, their LeNet-style network with BN/WN bottleneck
SEMI_METHODS = ("mme", "fixmatch", "source-only")  # source-only with K labels = S+T


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=list(TASK_ARGS), choices=list(TASK_ARGS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--k", nargs="+", type=int, default=[1, 3], help="labelled target examples per class")
    ap.add_argument("--source-steps", type=int, default=600, help="stage-1 steps (source-only training)")
    ap.add_argument("--steps", type=int, default=200, help="adaptation steps per row (SHOT, MME, FixMatch, S+T)")
    ap.add_argument("--eval-every", type=int, default=100, help="steps between checkpoints (validator evaluations)")
    ap.add_argument("--finetune-steps", type=int, default=100, help="steps of fine-tuning on the K labels alone")
    ap.add_argument("--batch-size", type=int, default=64, help="per domain")
    ap.add_argument("--source-lr", type=float, default=1e-3)
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of every row after the source stage")
    ap.add_argument("--val-target-size", type=int, default=500)
    ap.add_argument("--train-subset", type=int, default=10000, help="use at most N training images per domain (0: full sets)")
    ap.add_argument("--no-st", action="store_true", help="skip the S+T rows")
    ap.add_argument("--unit-cache", default=None, help="folder keeping each finished task x seed unit, and each finished row of an "
                    "unfinished one (resume after an interruption)")
    ap.add_argument("--collect", action="store_true", help="train nothing: write the results from the rows in --unit-cache "
                    "(and --import-log); a row with fewer seeds than --seeds is listed as incomplete, outside the table")
    ap.add_argument("--import-log", nargs="*", default=[], help="with --collect: also take rows from the printed lines of runs "
                    "started before rows were cached one by one")
    ap.add_argument("--jobs", type=int, default=2, help="task x seed units in parallel, one thread each")
    ap.add_argument("--name", default="adapt_digits_semi")
    return ap.parse_args()


def task_data(task: str, a: argparse.Namespace) -> tuple[TensorData, TensorData, TensorData]:
    """Source (labelled), target training data WITH its labels (the K per class are drawn from it), target test."""
    s_name, t_name = TASKS[task]
    limit = a.train_subset or None
    src = subset(load_data(s_name, "train"), limit)
    tgt = subset(load_data(t_name, "train"), limit, 1)
    src, tgt, test = prepare_domains(src, tgt, load_data(t_name, "test"), 28, 1, quiet=True, keep_target_labels=True)
    assert test is not None
    return src, tgt, test


LINE = re.compile(r"^(M->U|U->M) seed (\d+) (.+?)\s+(\d+\.\d+)\s+\((\d+)s\)$")


def unit_key(task: str, seed: int, a: argparse.Namespace) -> str:
    return f"semi-{task.replace('->', '')}-seed{seed}-src{a.source_steps}-steps{a.steps}-k{'-'.join(map(str, a.k))}"


def cached_rows(a: argparse.Namespace) -> list[dict[str, Any]]:
    """Every row in the unit cache (finished units, then rows of unfinished ones) and in --import-log lines."""
    found: dict[tuple[str, str, int], dict[str, Any]] = {}
    folder = Path(a.unit_cache) if a.unit_cache else None
    for task in a.tasks:
        for seed in a.seeds:
            if folder is None:
                continue
            whole, part = folder / f"{unit_key(task, seed, a)}.json", folder / f"{unit_key(task, seed, a)}.partial.jsonl"
            recs = json.loads(whole.read_text()) if whole.is_file() else (
                [json.loads(line) for line in part.read_text().splitlines() if line.strip()] if part.is_file() else [])
            for r in recs:
                found.setdefault((r["task"], r["method"], r["seed"]), r)
    for log in a.import_log:
        for line in Path(log).read_text().splitlines():
            m = LINE.match(line.strip())
            if m and m.group(1) in a.tasks and int(m.group(2)) in a.seeds:
                r = {"task": m.group(1), "method": m.group(3).strip(), "seed": int(m.group(2)), "acc": float(m.group(4)),
                     "wall_s": float(m.group(5)), "from_log": log}
                found.setdefault((r["task"], r["method"], r["seed"]), r)
    return list(found.values())


def run_unit(task: str, seed: int, a: argparse.Namespace) -> list[dict[str, Any]]:
    """One task and seed: the source stage, then every row from a copy of its model."""
    cache = partial = None
    if a.unit_cache:
        cache = Path(a.unit_cache) / f"{unit_key(task, seed, a)}.json"
        partial = cache.with_suffix(".partial.jsonl")
        if cache.is_file():
            return json.loads(cache.read_text())
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", UserWarning)
    augment = Augment(shift=2.0, scale=(0.85, 1.15))
    src, tgt, test = task_data(task, a)
    unlabelled = tgt.unlabeled()
    records: list[dict[str, Any]] = []

    def record(method: str, model: Any, wall: float, **info: Any) -> None:
        acc = evaluate(model, test)["acc"]  # the full target test set
        records.append({"task": task, "method": method, "seed": seed, "acc": acc, "wall_s": round(wall, 1), **info})
        print(f"{task} seed {seed} {method:32s} {acc:6.2f}  ({wall:.0f}s)", flush=True)
        if partial is not None:
            partial.parent.mkdir(parents=True, exist_ok=True)
            with partial.open("a") as f:
                f.write(json.dumps(records[-1]) + "\n")

    epochs_src = max(1, a.source_steps // a.eval_every)
    spec = AdaptSpec(method="source-only", select_by="im", source_epochs=epochs_src, source_lr=a.source_lr,
                     batch_size=a.batch_size, val_fraction=0.05, val_target_size=a.val_target_size,
                     source_steps_per_epoch=a.eval_every)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    base = adapt(src, unlabelled, spec, TrainConfig(epochs=epochs_src, lr=a.source_lr, seed=seed), "lenet",
                 verbose=False, callbacks=[], augment=augment)
    record("source-only (this run)", base.source_model, time.perf_counter() - t0)
    epochs = max(1, a.steps // a.eval_every)

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    shot = adapt_source_free(base.source_model, unlabelled, ShotConfig(batch_size=a.batch_size, val_target_size=a.val_target_size),
                             TrainConfig(epochs=epochs, steps_per_epoch=a.eval_every, lr=a.lr, seed=seed), verbose=False, callbacks=[])
    record("shot (source-free)", shot.model, time.perf_counter() - t0, selected_epoch=shot.summary["selection"]["epoch"])

    for k in a.k:
        labelled, _ = split_target_labels(tgt, k, 10, seed)  # the same draw adapt() makes with this seed
        tuned = copy.deepcopy(base.source_model)
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        finetune(tuned, labelled, None, FinetuneSpec(), TrainConfig(epochs=3, steps=a.finetune_steps, lr=a.lr, seed=seed),
                 batch_size=len(labelled), augment=augment, verbose=False, callbacks=[])
        record(f"fine-tune on K={k} labels alone", tuned, time.perf_counter() - t0)
        for method in SEMI_METHODS:
            if method == "source-only" and a.no_st:
                continue
            mspec = AdaptSpec(method=method, select_by="im", batch_size=a.batch_size, val_fraction=0.05,
                              val_target_size=a.val_target_size, target_labels_per_class=k)
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            res = adapt(src, tgt, mspec, TrainConfig(epochs=epochs, steps_per_epoch=a.eval_every, lr=a.lr, seed=seed),
                        "lenet", source_model=copy.deepcopy(base.source_model), verbose=False, callbacks=[], augment=augment)
            name = "S+T" if method == "source-only" else method
            record(f"{name} K={k}", res.model, time.perf_counter() - t0, selected_epoch=res.summary["selection"]["epoch"])
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(records))
    return records


def unsupervised_rows(tasks: list[str]) -> list[dict[str, Any]]:
    """Source-only and the best unsupervised method of ``results/adapt_digits.json`` (read, not rerun)."""
    path = RESULTS / "adapt_digits.json"
    if not path.is_file():
        return []
    def base(task: str) -> str:  # "U->M (previous run)": a label adapt_digits.json has used for rows kept from an earlier run
        return task.split(" (")[0]

    rows = [r for r in json.loads(path.read_text())["rows"] if base(r["task"]) in tasks and r["selection"] == "im (unsupervised)"]
    out = []
    for task in tasks:
        mine = [r for r in rows if base(r["task"]) == task]
        if not mine:
            continue
        src = next(r for r in mine if r["method"] == "source-only")
        best = max((r for r in mine if r["method"] != "source-only"), key=lambda r: r["mean"])
        for r, label in ((src, "source-only"), (best, f"{best['method']} (best unsupervised)")):
            out.append({**r, "method": f"{label} [adapt_digits.json]",
                        "selection": "im (unsupervised); read from adapt_digits.json, 1500 adaptation steps, not rerun"})
    return out


def main() -> None:
    warnings.simplefilter("ignore", UserWarning)
    torch.set_num_threads(1)
    a = parse()
    a.tasks = [TASK_ARGS[t] for t in a.tasks]
    t_all = time.perf_counter()
    log: list[dict[str, Any]] = []
    if a.collect:
        log = cached_rows(a)
    else:
        with ProcessPoolExecutor(a.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_unit, task, seed, a) for task in a.tasks for seed in a.seeds]
            for f in futures:
                log += f.result()
    order = ["source-only (this run)", "shot (source-free)"] + [
        name for k in a.k for name in (f"fine-tune on K={k} labels alone", f"S+T K={k}", f"mme K={k}", f"fixmatch K={k}")]
    rank = {m: i for i, m in enumerate(order)}
    rows: list[dict[str, Any]] = []
    incomplete: list[dict[str, Any]] = []
    for task in a.tasks:
        methods = sorted(dict.fromkeys(r["method"] for r in log if r["task"] == task), key=lambda m: rank.get(m, len(rank)))
        for method in methods:
            recs = sorted((r for r in log if r["task"] == task and r["method"] == method), key=lambda r: r["seed"])
            if len(recs) < len(a.seeds):
                incomplete.append({"task": task, "method": method, "seeds_done": [r["seed"] for r in recs],
                                   "acc": [round(r["acc"], 3) for r in recs]})
                continue
            if method.startswith("fine-tune") or method.startswith("source-only"):
                sel = "best epoch by training loss (no target labels left to validate)" if method.startswith("fine-tune") else "im (unsupervised)"
            else:
                sel = "im (unsupervised; the K labels train, never select)" if "K=" in method else "im (unsupervised, source-free)"
            rows.append(row(task, method, [r["acc"] for r in recs], statistics.fmean(r["wall_s"] for r in recs), sel))
    rows += unsupervised_rows(a.tasks)
    protocol = {
        "train_sets": "full" if not a.train_subset else f"at most {a.train_subset} per domain (seeded subset)",
        "source_steps": a.source_steps, "adapt_steps": a.steps, "eval_every": a.eval_every, "finetune_steps": a.finetune_steps,
        "batch_size_per_domain": a.batch_size, "labelled_target_batch": "min(batch size, 10 K), drawn from the K x 10 labelled examples",
        "k_per_class": a.k, "image_size": 28, "backbone": "lenet",
        "optimizer": f"Adam, lr {a.source_lr} (source) / {a.lr} (every later row)",
        "augmentation": "random shift 2 px and zoom 0.85-1.15 of source and labelled-target batches",
        "selection": f"im on {a.val_target_size} unlabelled target images (+5% source validation split); fine-tuning: best epoch by training loss",
        "labelled_target": "K per class from the target training set, seeded by the run seed, stratified; the same draw for every row",
        "final_metric": "accuracy of the chosen checkpoint on the full target test set",
        "unsupervised_rows": "read from results/adapt_digits.json (full sets, 2000 source + 1500 adaptation steps, lr 2e-4), not rerun",
        "wall_s": "training + validation of one row (source stage counted only in its own row)",
        "budget": "about 25 minutes on 2 free CPU cores, 2 units in parallel, one thread each; measured on 2 cores shared with "
                  "other jobs (load 15-25): per-row wall times are 10-20x what a free machine gives",
        "row_wall_s_sum": round(sum(r["wall_s"] for r in log), 1),
    }
    extra = {"protocol": protocol, "published": {"shot_paper_digits": PUBLISHED_SHOT,
                                                 "note": "SHOT paper, its own LeNet-style network with a BN bottleneck and weight-normalised head"},
             "incomplete_rows": incomplete, "runs": log, "total_wall_s": round(time.perf_counter() - t_all, 1)}
    path = write_results(a.name, rows, [], extra)
    published = {(t, "shot (source-free)"): f"{v} (SHOT paper)" for t, v in PUBLISHED_SHOT.items()}
    md = [f"# {a.name}: MNIST <-> USPS with few target labels, and source-free SHOT; LeNet, 28x28\n\n",
          f"{a.source_steps} source steps, then {a.steps} steps per adaptation row (checkpoints every {a.eval_every}, "
          f"chosen by IM on unlabelled target images), {a.finetune_steps} steps of fine-tuning on the K labels alone; "
          f"K = {', '.join(map(str, a.k))} labelled target examples per class; {len(a.seeds)} seeds; "
          "accuracy on the full target test set. S+T = source-only training with the K target labels added. "
          "Rows marked [adapt_digits.json] are read from that benchmark (1500 adaptation steps), not rerun. "
          "The SHOT paper's numbers use its own network.\n\n",
          markdown_table(rows, published),
          *(["\nNot finished for every seed before the deadline (left out of the table): "
             + "; ".join(f"{r['task']} {r['method']}: seeds {r['seeds_done']} -> {r['acc']}" for r in incomplete) + "\n"]
            if incomplete else []),
          f"\nSum of the per-row wall times: {protocol['row_wall_s_sum']:.0f} s (units ran in parallel processes on 2 CPU cores "
          "shared with other jobs, load 15-25); machine and command in the JSON.\n"]
    (RESULTS / f"{a.name}.md").write_text("".join(md))
    print(json.dumps({"results": str(path)}))


if __name__ == "__main__":
    main()
