"""Test-time and source-free adaptation on CIFAR-10 with common corruptions (CIFAR-10-C protocol, severity 5).

One CIFAR ResNet with batch norm is trained on the CIFAR-10 training images (random shift of up
to 4 px and horizontal flips, SGD with momentum, cosine schedule) and cached in ``--cache-dir``
(keyed by its settings), so reruns and every seed reuse it. Then for each corruption (the
library's own implementation of Hendrycks & Dietterich 2019 with the CIFAR-10-C parameters,
:mod:`transferkit.data.corruptions`) and each seed, on a fixed subset of the CIFAR-10 test
images corrupted at ``--severity``:

* ``source``: the trained model as it is;
* ``adabn``: batch-norm statistics re-estimated over the test stream (continual);
* ``tent-episodic`` / ``tent-continual``: TENT (Adam on the norm layers' affine parameters, one
  step per test batch), reset before each batch or carried along the stream;
* ``shot``: SHOT, source-free, on the corrupted test images as the unlabelled target; its
  checkpoint is chosen by the information-maximisation validator (no labels).

The seed drives the corruption's noise, the order of the test stream and SHOT's training.
Metric: error % (100 - accuracy). Speed: TENT's prediction throughput against plain prediction
(images/s, same model and batch size, same process).

    TRANSFERKIT_DATA_DIR=/work/shared/data python benchmarks/tta_cifar10c.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RESULTS, ratio, row, write_results
from transferkit.adapt.shot import ShotConfig, adapt_source_free
from transferkit.adapt.tta import adapt_and_predict, create_tta
from transferkit.data import Augment, TensorData, load_data
from transferkit.data.corruptions import corrupt_data
from transferkit.engine import ProgressBar, TrainConfig, predict_logits
from transferkit.finetune import FinetuneSpec, finetune
from transferkit.models import Classifier, create_model, load_model

CORRUPTIONS = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "contrast", "brightness", "pixelate",
               "jpeg_compression"]
METHODS = ["source", "adabn", "tent-episodic", "tent-continual", "shot"]
# Wang et al., "Tent", ICLR 2021, Table 2: CIFAR-10-C, severity 5, mean error over 15 corruptions, WideResNet-28
PUBLISHED = {"source": 40.8, "adabn": 20.4, "tent-continual": 18.6}


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=None, help="CIFAR-10 image folders (train/<class>, test/<class>); default $TRANSFERKIT_DATA_DIR/cifar10-jpg")
    ap.add_argument("--arch", default="resnet8", choices=["resnet8", "resnet20"])
    ap.add_argument("--source-epochs", type=int, default=2)
    ap.add_argument("--source-train-size", type=int, default=None, help="train the source model on N training images (default: all)")
    ap.add_argument("--source-lr", type=float, default=0.05)
    ap.add_argument("--source-batch-size", type=int, default=128)
    ap.add_argument("--corruptions", nargs="+", default=CORRUPTIONS)
    ap.add_argument("--severity", type=int, default=5)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--test-size", type=int, default=500, help="fixed subset of the test images (the same for every seed)")
    ap.add_argument("--tta-batch-size", type=int, default=64)
    ap.add_argument("--tent-lr", type=float, default=1e-3)
    ap.add_argument("--shot-epochs", type=int, default=2)
    ap.add_argument("--shot-lr", type=float, default=1e-3,
                    help="SGD learning rate of the feature extractor (SHOT: 0.1 x its 0.01, the backbone's rate; this network has no bottleneck)")
    ap.add_argument("--shot-batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (1: the shared CPU is faster so)")
    ap.add_argument("--jobs", type=int, default=2, help="(corruption, seed) units run in parallel processes")
    ap.add_argument("--cache-dir", default="runs/bench-cache/tta_cifar10c")
    ap.add_argument("--train-only", action="store_true", help="train (or find) the cached source model and stop")
    ap.add_argument("--name", default="tta_cifar10c")
    return ap.parse_args()


def data_root(args: argparse.Namespace) -> Path:
    root = Path(args.data_root or Path(os.environ.get("TRANSFERKIT_DATA_DIR", "/work/shared/data")) / "cifar10-jpg")
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        sys.exit(f"{root} has no train/ and test/ image folders; set TRANSFERKIT_DATA_DIR or --data-root")
    return root


def source_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"arch": args.arch, "epochs": args.source_epochs, "lr": args.source_lr, "batch_size": args.source_batch_size,
            "train_size": args.source_train_size, "optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4,
            "schedule": "cosine", "augment": "shift 4 px + horizontal flip", "seed": 0}


def source_model(args: argparse.Namespace, root: Path) -> tuple[Classifier, dict[str, Any]]:
    """The trained source model: from the cache when its settings match, else trained now and cached."""
    settings = source_settings(args)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(args.cache_dir) / f"source-{args.arch}-{key}.safetensors"
    info_path = path.with_suffix(".json")
    if path.is_file() and info_path.is_file():
        print(f"source model from the cache: {path}", flush=True)
        return load_model(path), json.loads(info_path.read_text())
    train = load_data(str(root / "train"))
    if args.source_train_size:
        g = torch.Generator().manual_seed(0)
        train = train.subset(torch.randperm(len(train), generator=g)[: args.source_train_size])
    test = load_data(str(root / "test"), split="test")
    model = create_model(args.arch, train.num_classes, train.input_shape, classes=train.classes)
    config = TrainConfig(epochs=args.source_epochs, lr=args.source_lr, optimizer="sgd", momentum=0.9, weight_decay=5e-4,
                         schedule="cosine", seed=0)
    print(f"training the source model ({args.arch}, {len(train)} images, {args.source_epochs} epochs) ...", flush=True)
    t0 = time.time()
    finetune(model, train, None, FinetuneSpec(), config, args.source_batch_size, Augment(shift=4.0, flip=True), verbose=True,
             callbacks=[ProgressBar()])
    wall = time.time() - t0
    model.eval()
    acc = float((predict_logits(model, test.x).argmax(1) == test.y).float().mean()) * 100
    info = {**settings, "train_images": len(train), "train_wall_s": round(wall, 1), "clean_test_error": round(100 - acc, 2),
            "clean_test_images": len(test)}
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path, {"benchmark": "tta_cifar10c", **info})
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    print(f"source model: clean test error {100 - acc:.2f}% after {wall:.0f} s; cached in {path}", flush=True)
    return model, info


def error(logits: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 - float((logits.argmax(1) == y).float().mean()) * 100.0


def fresh(model: Classifier) -> Classifier:
    """A copy of the source model (every method starts from the same trained weights)."""
    import copy

    return copy.deepcopy(model).eval()


def run_unit(model: Classifier, data: TensorData, args: argparse.Namespace, seed: int) -> tuple[dict[str, float], dict[str, float]]:
    """Error % of every method on one corrupted test stream (already in the seed's order); wall seconds per method."""
    y = data.require_labels("error")
    errs: dict[str, float] = {}
    walls: dict[str, float] = {}
    bs = args.tta_batch_size

    def timed(name: str, fn: Any) -> None:
        t0 = time.time()
        errs[name] = fn()
        walls[name] = time.time() - t0

    timed("source", lambda: error(predict_logits(fresh(model), data.x, bs), y))
    timed("adabn", lambda: error(adapt_and_predict(create_tta("adabn", fresh(model)), data.x, bs), y))
    timed("tent-episodic", lambda: error(adapt_and_predict(create_tta("tent", fresh(model), tta_lr=args.tent_lr, episodic=True), data.x, bs), y))
    timed("tent-continual", lambda: error(adapt_and_predict(create_tta("tent", fresh(model), tta_lr=args.tent_lr), data.x, bs), y))

    def shot() -> float:
        spec = ShotConfig(batch_size=args.shot_batch_size, val_target_size=min(len(data), 1000))
        config = TrainConfig(epochs=args.shot_epochs, lr=args.shot_lr, optimizer="sgd", momentum=0.9, weight_decay=5e-4, seed=seed)
        res = adapt_source_free(fresh(model), data.unlabeled(), spec, config, verbose=False)
        res.model.eval()
        return error(predict_logits(res.model, data.x, bs), y)

    timed("shot", shot)
    return errs, walls


_SHARED: dict[str, Any] = {}  # the model, test subset and options, inherited by forked workers


def unit(job: tuple[str, int]) -> tuple[str, int, dict[str, float], dict[str, float]]:
    """One (corruption, seed): corrupt the test subset with the seed's noise, shuffle it by the seed, run every method."""
    corruption, seed = job
    args, test = _SHARED["args"], _SHARED["test"]
    torch.set_num_threads(args.threads)
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))
    data = corrupt_data(test, corruption, args.severity, seed=seed).subset(order)
    e, w = run_unit(_SHARED["model"], data, args, seed)
    print(f"{corruption} seed {seed}: " + "  ".join(f"{m} {e[m]:.1f}" for m in METHODS) + f"  ({sum(w.values()):.0f} s)", flush=True)
    return corruption, seed, e, w


def throughput(model: Classifier, x: torch.Tensor, bs: int, tent_lr: float, repeats: int = 2) -> dict[str, float]:
    """Images per second of plain prediction and of TENT (continual) prediction, alternated, best of ``repeats``."""
    best = {"plain": 0.0, "tent": 0.0}
    for _ in range(repeats):
        m = fresh(model)
        t0 = time.perf_counter()
        predict_logits(m, x, bs)
        best["plain"] = max(best["plain"], len(x) / (time.perf_counter() - t0))
        adapter = create_tta("tent", fresh(model), tta_lr=tent_lr)
        t0 = time.perf_counter()
        adapt_and_predict(adapter, x, bs)
        best["tent"] = max(best["tent"], len(x) / (time.perf_counter() - t0))
    return best


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    root = data_root(args)
    t_start = time.time()
    model, info = source_model(args, root)
    if args.train_only:
        return
    test = load_data(str(root / "test"), split="test")
    subset = torch.randperm(len(test), generator=torch.Generator().manual_seed(1234))[: args.test_size]
    test = test.subset(subset)
    clean_err = error(predict_logits(fresh(model), test.x, args.tta_batch_size), test.require_labels("error"))
    print(f"clean error on the {len(test)}-image subset: {clean_err:.2f}%", flush=True)

    units = [(c, s) for c in args.corruptions for s in args.seeds]
    _SHARED.update(model=model, test=test, args=args)
    done: dict[tuple[str, int], tuple[dict[str, float], dict[str, float]]] = {}
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            for corruption, seed, e, w in pool.map(unit, units):
                done[(corruption, seed)] = (e, w)
    else:
        for corruption, seed, e, w in map(unit, units):
            done[(corruption, seed)] = (e, w)
    errs: dict[tuple[str, str], list[float]] = {}
    walls: dict[tuple[str, str], float] = {}
    for corruption, seed in units:  # seeds in order, whatever order the units finished in
        e, w = done[(corruption, seed)]
        for m in METHODS:
            errs.setdefault((corruption, m), []).append(e[m])
            walls[(corruption, m)] = walls.get((corruption, m), 0.0) + w[m]

    rows = []
    for corruption in args.corruptions:
        for m in METHODS:
            rows.append(row(corruption, m, errs[(corruption, m)], walls[(corruption, m)], selection=selection(m), metric="error %"))
    for m in METHODS:  # the mean over corruptions, per seed
        per_seed = [statistics.fmean(errs[(c, m)][i] for c in args.corruptions) for i in range(len(args.seeds))]
        rows.append(row("mean", m, per_seed, sum(walls[(c, m)] for c in args.corruptions), selection=selection(m), metric="error %"))

    data = corrupt_data(test, args.corruptions[0], args.severity, seed=0)
    speed = throughput(model, data.x, args.tta_batch_size, args.tent_lr)
    ratios = [ratio("tent_vs_plain_prediction_throughput", speed["tent"] / speed["plain"],
                    f"images/s of TENT (continual, 1 step) / plain prediction, {args.arch}, batch {args.tta_batch_size}, "
                    f"{len(data)} images, {args.threads} threads, best of 2 alternated: "
                    f"{speed['tent']:.0f} vs {speed['plain']:.0f} images/s")]
    total = time.time() - t_start
    extra = {"sizes": sizes(args, info, len(test)), "clean_error_subset": round(clean_err, 2), "source_model": info,
             "published": {"paper": "Wang et al., Tent, ICLR 2021, Table 2 (WideResNet-28, 15 corruptions)", **PUBLISHED},
             "total_wall_s": round(total, 1)}
    path = write_results(args.name, rows, ratios, extra)
    (RESULTS / f"{args.name}.md").write_text(markdown(rows, ratios, args, info, clean_err, len(test), total))
    print(f"wrote {path} and {args.name}.md ({total:.0f} s)")


def selection(method: str) -> str:
    return {"shot": "unsupervised validator (im)", "source": "none (trained model)"}.get(method, "none (online, last batch)")


def sizes(args: argparse.Namespace, info: dict[str, Any], n_test: int) -> dict[str, Any]:
    return {"arch": args.arch, "source_epochs": args.source_epochs, "source_train_images": info.get("train_images"),
            "test_images_per_corruption": n_test, "severity": args.severity, "corruptions": args.corruptions,
            "seeds": args.seeds, "tta_batch_size": args.tta_batch_size, "tent_lr": args.tent_lr,
            "shot_epochs": args.shot_epochs, "shot_lr": args.shot_lr, "shot_batch_size": args.shot_batch_size,
            "threads": args.threads}


def markdown(rows: list[dict[str, Any]], ratios: list[dict[str, Any]], args: argparse.Namespace, info: dict[str, Any],
             clean_err: float, n_test: int, total: float) -> str:
    by = {(r["task"], r["method"]): r for r in rows}
    tasks = [*args.corruptions, "mean"]
    head = "| corruption | " + " | ".join(METHODS) + " |"
    lines = [head, "|---|" + "---|" * len(METHODS)]
    for t in tasks:
        cells = [f"{by[(t, m)]['mean']:.1f} ± {by[(t, m)]['std']:.1f}" for m in METHODS]
        name = f"**{t}**" if t == "mean" else t
        lines.append(f"| {name} | " + " | ".join(f"**{c}**" if t == "mean" else c for c in cells) + " |")
    paper = "| TENT paper, WRN-28, mean of 15 | " + " | ".join(str(PUBLISHED.get(m, "-")) for m in METHODS) + " |"
    lines.append(paper)
    src_mean = by[("mean", "source")]["mean"]
    gains = ", ".join(f"{m} {100 * (src_mean - by[('mean', m)]['mean']) / src_mean:.0f}%" for m in METHODS[1:])
    paper_gains = ", ".join(f"{m} {100 * (PUBLISHED['source'] - PUBLISHED[m]) / PUBLISHED['source']:.0f}%" for m in ("adabn", "tent-continual"))
    r = ratios[0]
    return f"""# Test-time adaptation on CIFAR-10 with common corruptions (severity {args.severity})

Error % (lower is better), mean ± std over seeds {", ".join(map(str, args.seeds))} (the seed drives the
corruption noise, the order of the test stream and SHOT's training). Made by `benchmarks/tta_cifar10c.py`.

{chr(10).join(lines)}

**Our network is not the paper's.** The TENT paper reports a WideResNet-28 (5.2% clean error, 15
corruptions, all 10,000 test images); this is a CIFAR {args.arch} trained for {info.get('epochs')} epochs on
the 2-core CPU of this machine ({info.get('clean_test_error')}% clean test error), on {len(args.corruptions)}
corruptions and {n_test} test images. Compare relative gains, not absolute errors: the relative
reduction of the mean error against the source model is {gains} here, and adabn (BN)
{paper_gains.split(', ')[0].split(' ', 1)[1]}, tent {paper_gains.split(', ')[1].split(' ', 1)[1]} in the paper.

Sizes: source model {args.arch}, {info.get('train_images')} training images, {info.get('epochs')} epochs, batch
{info.get('batch_size')}, SGD lr {info.get('lr')} (momentum 0.9, weight decay 5e-4, cosine), random shift
up to 4 px and horizontal flips, trained once ({info.get('train_wall_s')} s) and cached; evaluation on a
fixed subset of {n_test} CIFAR-10 test images (the same for every seed and corruption), corrupted
by `transferkit.data.corruptions` (CIFAR-10-C parameters, severity {args.severity}; floats, not the release's
8-bit files). Test batches of {args.tta_batch_size}; TENT: Adam lr {args.tent_lr}, one step per batch;
AdaBN: continual statistics over the stream; SHOT: {args.shot_epochs} epochs, SGD lr {args.shot_lr}, batch
{args.shot_batch_size}, beta 0.3, checkpoint chosen by the information-maximisation validator (no labels).
Clean error of the source model on the subset: {clean_err:.2f}%. Whole run: {total / 60:.0f} min
({args.jobs} processes of {args.threads} thread(s) on a CPU shared with other jobs).

Reading the table: with one gradient step per batch, episodic TENT predicts each batch before its
update, from the reset weights, so its predictions are those of test-batch normalisation; its
only difference from `adabn` (continual statistics) is per-batch against cumulative statistics.
Continual TENT carries its updates along a stream of only {-(-n_test // args.tta_batch_size)} batches here
(the paper's has 50 of 200 images), so it has little room to move away from episodic TENT.

Speed ({r['name']}): {r['value']:.2f} ({r['detail']}).

Command: `TRANSFERKIT_DATA_DIR=/work/shared/data python benchmarks/tta_cifar10c.py {' '.join(sys.argv[1:])}`
"""


if __name__ == "__main__":
    main()
