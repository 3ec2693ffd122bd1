"""Fine-tuning benchmark: MNIST -> USPS and USPS -> MNIST with 10 labels per target class.

Protocol: a LeNet source model is trained on the full source training set
(once per task, seed 0, to fit a 2-core CPU budget; ``--source-per-seed``
trains one per seed); then each strategy trains on 10 labelled images per class of
the target training set (seeded draw) and is tested on the full target test
set. No validation labels exist in this setting, so the checkpoint is the last
one (``selection: last``). Domains are paired at 28x28 grey (USPS is
upsampled). It also measures the cached-feature linear probe against the same
probe re-running the frozen backbone every step, in the same process.

    TRANSFERKIT_DATA_DIR=../shared/data python benchmarks/finetune_digits.py
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from bench_common import markdown_table, ratio, row, write_results
from transferkit.data import few_labels, load_data
from transferkit.engine import TrainConfig, evaluate, seed_everything
from transferkit.finetune import FinetuneSpec, finetune
from transferkit.models import create_model

STRATEGIES = {
    "scratch": None,
    "linear-probe": FinetuneSpec(strategy="linear-probe"),
    "partial": FinetuneSpec(strategy="partial", freeze=1),
    "full": FinetuneSpec(strategy="full"),
    "l2sp": FinetuneSpec(strategy="full", regularizers=["l2sp"]),
    "lwf": FinetuneSpec(strategy="full", regularizers=["lwf"]),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--labels-per-class", type=int, default=10)
    ap.add_argument("--source-epochs", type=int, default=2)
    ap.add_argument("--target-epochs", type=int, default=50)
    ap.add_argument("--tasks", default="mnist->usps,usps->mnist")
    ap.add_argument("--source-per-seed", action="store_true", help="train a new source model for every seed")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 gives stable timings on a shared CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    data = {name: (load_data(name, "train", image_size=28), load_data(name, "test", image_size=28)) for name in ("mnist", "usps")}
    rows, ratios = [], []
    for task in args.tasks.split(","):
        s_name, t_name = task.split("->")
        (src, _), (tgt, tgt_test) = data[s_name], data[t_name]
        accs: dict[str, list[float]] = {k: [] for k in STRATEGIES}
        walls: dict[str, float] = {k: 0.0 for k in STRATEGIES}
        src_wall = 0.0
        zero_shot: list[float] = []
        source = None
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            if source is None or args.source_per_seed:
                seed_everything(seed)
                source = create_model("lenet", 10, src.input_shape)
                finetune(source, src, None, FinetuneSpec(), TrainConfig(epochs=args.source_epochs, seed=seed), batch_size=128, verbose=False, callbacks=[])
                src_wall += time.perf_counter() - t0
            zero_shot.append(evaluate(source, tgt_test)["acc"])
            print(f"{task} seed {seed}: source model {evaluate(source, data[s_name][1])['acc']:.2f}% on {s_name} test, "
                  f"{zero_shot[-1]:.2f}% on {t_name} test before transfer ({time.perf_counter() - t0:.0f}s)", flush=True)
            labelled, _ = few_labels(tgt, args.labels_per_class, seed)
            for name, spec in STRATEGIES.items():
                t1 = time.perf_counter()
                seed_everything(seed)
                model = create_model("lenet", 10, src.input_shape) if spec is None else copy.deepcopy(source)
                finetune(model, labelled, None, copy.deepcopy(spec) if spec else FinetuneSpec(),
                         TrainConfig(epochs=args.target_epochs, seed=seed), batch_size=32, verbose=False, callbacks=[])
                accs[name].append(evaluate(model, tgt_test)["acc"])
                walls[name] += time.perf_counter() - t1
            print("   " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in accs.items()), flush=True)
        for name, vals in accs.items():
            rows.append(row(task, name, vals, walls[name] / args.seeds, "last"))
        rows.append(row(task, "source only (no transfer)", zero_shot, src_wall, "last"))

    # speed: cached features vs frozen backbone re-run every step, same probe, same data order
    src, _ = data["mnist"]
    tgt, tgt_test = data["usps"]
    seed_everything(0)
    source = create_model("lenet", 10, src.input_shape)
    for per_class in (args.labels_per_class, 100, None):
        labelled = few_labels(tgt, per_class, 0)[0] if per_class else tgt
        times, probe_accs = {}, {}
        for cached in (True, False):
            model = copy.deepcopy(source)
            t0 = time.perf_counter()
            finetune(model, labelled, None, FinetuneSpec(strategy="linear-probe", cache_features=cached),
                     TrainConfig(epochs=args.target_epochs), batch_size=32, verbose=False, callbacks=[])
            times[cached] = time.perf_counter() - t0
            probe_accs[cached] = evaluate(model, tgt_test)["acc"]
        ratios.append(ratio(
            f"linear probe speed-up from cached features ({f'{per_class} labels/class' if per_class else 'full USPS train'})",
            times[False] / times[True],
            f"{args.target_epochs} epochs, batch 32, {len(labelled)} images: re-running the frozen LeNet every step "
            f"{times[False]:.2f}s vs cached features {times[True]:.2f}s; test accuracy {probe_accs[True]:.2f} vs {probe_accs[False]:.2f}",
        ))
        print(ratios[-1], flush=True)

    path = write_results("finetune_digits", rows, ratios, {
        "protocol": f"LeNet, 28x28; source trained {args.source_epochs} epochs (Adam 1e-3, batch 128) "
                    f"{'per seed' if args.source_per_seed else 'once per task (seed 0)'}; "
                    f"{args.labels_per_class} labels/class on target, {args.target_epochs} epochs Adam 1e-3 batch 32; "
                    f"tested on the full target test set; {args.seeds} seeds; checkpoint = last epoch (no target validation labels)",
    })
    md = path.with_suffix(".md")
    md.write_text("# Fine-tuning: MNIST <-> USPS, 10 labels per class\n\n" + markdown_table(rows) +
                  "\n" + "\n".join(f"- {r['name']}: **{r['value']:.1f}x** ({r['detail']})" for r in ratios) + "\n")
    print(md.read_text())


if __name__ == "__main__":
    main()
