"""Few-shot Omniglot: ProtoNets and MAML (first and second order), plus the vmap speed-up.

Protocol (run with TRANSFERKIT_DATA_DIR=/work/shared/data):

- data: the two official *minimal* background sets (images_background_small1/2): 242 distinct
  characters from 8 alphabets, 20 drawings each, 28x28. This is ~15% of full Omniglot.
- classes split *by alphabet* (split seed 0): 6 alphabets meta-train, 2 meta-test; 90-degree
  rotations add classes (x4) on both sides. No meta-validation: the last model is evaluated.
- test: >= 600 episodes per setting (5-way 1-shot, 5-way 5-shot, 20-way 1-shot), Q test queries
  per class, mean accuracy with a 95% interval per seed; rows are mean ± std over seeds.
- budgets are flags (CPU is scarce); the defaults are the committed run. Meta-batches are computed
  with `tasks_as="auto"`: on CPU a loop over tasks with channels-last convolutions (faster than
  vmap there, see the speed test). ProtoNets: one model per seed trained on 60-way 1-shot episodes
  (5 queries, as in the ProtoNet paper), 3,000 meta-iterations, Adam 1e-3 with a cosine schedule,
  every training image randomly shifted (up to 3 px) and zoomed (0.8-1.2), evaluated in all three
  settings. MAML: one 5-way model per seed and order (trained 1-shot, 1,000 meta-iterations x 8
  tasks, evaluated at 1- and 5-shot) and one 20-way model per seed and order (500 x 4 tasks); 3
  queries per class, 1 inner step in training and at test (3 test steps overshot on a
  meta-validation alphabet after 300 meta-iterations: 58% with 1 step, 29% with 3). Inner lr 0.03
  (issue 16; was the paper's 0.4, which on this conv4 raises the support loss 1.72 -> 8.37 in one
  step at initialisation, so first order, which cannot learn around the overshoot, stayed at 43%):
  the largest of 0.4/0.2/0.1/0.07/0.05/0.03/0.02/0.01 whose single step lowers the mean query loss
  of 16 (5-way) and 8 (20-way) meta-TRAIN tasks at initialisation; no accuracy was used. 20-way
  models (issue 16): 5 inner steps of 0.1 (the MAML paper's 20-way inner loop) from a zero head
  (Kao et al. 2022), in training and at test, for both orders. One step of 0.03 barely adapts at
  20-way (support loss 3.00 -> 2.89), which left first order at chance; on meta-validation
  alphabets (4 of the 6 meta-train alphabets for training, 2 for validation, first order, 250 x 4,
  seed 0) 1 step of 0.03 gave 7.8%, 5 steps of 0.1 55.0%, and with a zero head 77.3%. Budgets are
  far below the papers' (MAML: 60k meta-iterations x 32 tasks). Recipe choices (augmentation,
  steps, test inner steps) were made on meta-validation alphabets split off meta-train, never on
  the meta-test alphabets: ProtoNets 1,500 iterations on 4 of the 6 meta-train alphabets scored
  96.64% (5-way 1-shot) / 88.73% (20-way 1-shot) on the other 2 without augmentation, 97.41 /
  91.11 with shift 2 and zoom 0.9-1.1, 97.47 / 91.37 with shift 3 and zoom 0.8-1.2.
- speed: the MAML (second-order) meta-gradient of a meta-batch of 16 tasks (5-way 1-shot, 5
  queries, conv4) with vmap over tasks (in one call, and in chunks of 4 tasks) vs a Python loop
  over tasks, same process; the gradients are compared (float32 and float64). The same on the
  sinusoid MLP. The loop is timed with contiguous and with channels-last weights.

Runs go to a pool of --jobs processes (one thread each) after the speed test, which runs alone.

    TRANSFERKIT_DATA_DIR=/work/shared/data python benchmarks/meta_omniglot.py
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RESULTS, markdown_table, ratio, row, write_results
from transferkit.data import load_data
from transferkit.data.transforms import Augment
from transferkit.engine import TrainConfig, seed_everything
from transferkit.meta import (
    EpisodeSampler,
    MetaSpec,
    SinusoidTasks,
    build_learner,
    meta_train,
    sinusoid_model,
    split_classes,
)
from transferkit.models import create_model

PUBLISHED = {  # full Omniglot (1,200 training characters), from the papers
    ("5-way 1-shot", "ProtoNets"): "98.8", ("5-way 5-shot", "ProtoNets"): "99.7", ("20-way 1-shot", "ProtoNets"): "96.0",
    ("5-way 1-shot", "MAML (2nd order)"): "98.7", ("5-way 5-shot", "MAML (2nd order)"): "99.9", ("20-way 1-shot", "MAML (2nd order)"): "95.8",
    ("5-way 1-shot", "MAML (1st order)"): "98.3", ("5-way 5-shot", "MAML (1st order)"): "99.2", ("20-way 1-shot", "MAML (1st order)"): "89.4",
}
SETTINGS = [("5-way 1-shot", 5, 1), ("5-way 5-shot", 5, 5), ("20-way 1-shot", 20, 1)]


def args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--test-episodes", type=int, default=600)
    ap.add_argument("--test-queries", type=int, default=5)
    ap.add_argument("--proto-steps", type=int, default=3000, help="ProtoNet meta-iterations per seed")
    ap.add_argument("--proto-ways", type=int, default=60, help="ways of the ProtoNet training episodes (1-shot)")
    ap.add_argument("--proto-queries", type=int, default=5)
    ap.add_argument("--proto-batch", type=int, default=1)
    ap.add_argument("--proto-schedule", default="cosine", choices=["none", "cosine", "step"])
    ap.add_argument("--maml-schedule", default="none", choices=["none", "cosine", "step"])
    ap.add_argument("--maml-orders", nargs="+", default=["2nd", "1st"], choices=["2nd", "1st"], help="orders of the 5-way models")
    ap.add_argument("--maml20-orders", nargs="+", default=["2nd", "1st"], choices=["2nd", "1st"], help="orders of the 20-way models")
    ap.add_argument("--maml20-batch", type=int, default=4)
    ap.add_argument("--maml-eval-steps", type=int, default=1, help="MAML inner steps at test time")
    ap.add_argument("--eval-chunk", type=int, default=1, help="ProtoNet test episodes sampled per call")
    ap.add_argument("--maml-eval-chunk", type=int, default=4, help="MAML test episodes sampled per call")
    ap.add_argument("--maml-steps", type=int, default=1000, help="5-way MAML meta-iterations per seed and order")
    ap.add_argument("--maml20-steps", type=int, default=500, help="20-way MAML meta-iterations per seed and order")
    ap.add_argument("--maml-batch", type=int, default=8)
    ap.add_argument("--maml-inner-lr", type=float, default=0.03,
                    help="MAML inner step size (training and test); chosen on meta-train tasks at initialisation, see the protocol")
    ap.add_argument("--maml20-inner-lr", type=float, default=0.1, help="20-way MAML inner step size (the MAML paper's 20-way value)")
    ap.add_argument("--maml20-inner-steps", type=int, default=5, help="20-way MAML inner steps, in training and at test (the paper's)")
    ap.add_argument("--maml20-zero-head", action=argparse.BooleanOptionalAction, default=True,
                    help="20-way MAML: every inner loop starts from a zero head (chosen on meta-validation alphabets, see the md)")
    ap.add_argument("--maml-global-pool", action="store_true",
                    help="MAML: average the last 2x2 conv4 map (64 features, as the MAML paper's Omniglot network) "
                         "instead of flattening it (256)")
    ap.add_argument("--maml-zero-head", action="store_true",
                    help="MAML: every inner loop starts from a zero head (the zeroing trick, Kao et al. 2022)")
    ap.add_argument("--methods", nargs="+", default=["protonet", "maml"], choices=["protonet", "maml"], help="which rows to run")
    ap.add_argument("--no-speed", action="store_true", help="skip the vmap / loop speed test")
    ap.add_argument("--maml-queries", type=int, default=3)
    ap.add_argument("--maml-settings", nargs="+", default=["5w1s", "5w5s", "20w1s"], choices=["5w1s", "5w5s", "20w1s"],
                    help="MAML settings to run (5w5s reuses the 5-way 1-shot model)")
    ap.add_argument("--speed-repeats", type=int, default=3)
    ap.add_argument("--speed-chunk", type=int, default=4, help="also time vmap over chunks of this many tasks")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (1 is fastest on a crowded shared CPU)")
    ap.add_argument("--name", default="meta_omniglot", help="results file stem under benchmarks/results/")
    ap.add_argument("--unit-cache", default=None, help="folder keeping each finished MAML run (resume after an interruption)")
    ap.add_argument("--jobs", type=int, default=2, help="meta-training runs in parallel processes (the speed test runs alone first)")
    ap.add_argument("--proto-augment-shift", type=float, default=3.0, help="ProtoNet training: random shift of up to N pixels")
    ap.add_argument("--proto-augment-scale", type=float, nargs=2, default=[0.8, 1.2], metavar=("LO", "HI"), help="ProtoNet training: random zoom")
    return ap.parse_args()


def inner_loop(a: argparse.Namespace, ways: int) -> tuple[float, int, int]:
    """(inner lr, inner steps in training, inner steps at test) of the ``ways``-way MAML models."""
    if ways == 20:
        return a.maml20_inner_lr, a.maml20_inner_steps, a.maml20_inner_steps
    return a.maml_inner_lr, 1, a.maml_eval_steps


def zero_head(a: argparse.Namespace, ways: int) -> bool:
    return a.maml20_zero_head if ways == 20 else a.maml_zero_head


def train_eval(method: str, data: Any, split: dict[str, list[int]], ways: int, shots: int, queries: int, steps: int,
               batch: int, seed: int, tests: list[tuple[str, int, int]], a: argparse.Namespace, first_order: bool = False,
               schedule: str = "none", augment: Augment | None = None) -> tuple[dict[str, dict[str, float]], float, float]:
    """Meta-train one model, evaluate it on the meta-test classes; returns (results, train seconds, total seconds)."""
    seed_everything(seed)
    lr, inner_steps, eval_steps = inner_loop(a, ways)
    spec = MetaSpec(method=method, ways=ways, shots=shots, queries=queries, meta_batch=batch, inner_steps=inner_steps,
                    inner_lr=lr, eval_inner_steps=eval_steps, first_order=first_order, episodes_per_epoch=steps,
                    rotations=True, zero_head=method == "maml" and zero_head(a, ways))
    pool = {"global_pool": True} if method == "maml" and a.maml_global_pool else {}
    learner = build_learner(create_model("conv4", ways, data.input_shape, **pool), spec)
    train_s = EpisodeSampler(data, split["train"], ways, shots, queries, rotations=True)
    t0 = time.perf_counter()
    meta_train(learner, train_s, spec, TrainConfig(epochs=1, lr=1e-3, seed=seed, schedule=schedule), verbose=False, callbacks=[],
               augment=augment)
    t_train = time.perf_counter() - t0
    out = {}
    for name, n, k in tests:
        test_s = EpisodeSampler(data, split["test"], n, k, a.test_queries, rotations=True)
        chunk = a.eval_chunk if method == "protonet" else a.maml_eval_chunk
        out[name] = learner.evaluate(test_s, a.test_episodes, chunk=chunk, seed=1000 + seed)
        print(f"  {method}{' FO' if first_order else ''} seed {seed} {name}: {out[name]['acc']:.2f} ± {out[name]['ci95']:.2f} "
              f"(trained {t_train:.0f}s)", flush=True)
    return out, t_train, time.perf_counter() - t0


def speed(a: argparse.Namespace, data: Any, split: dict[str, list[int]]) -> list[dict[str, Any]]:
    from transferkit.meta import MAML

    out = []
    ep = EpisodeSampler(data, split["train"], 5, 1, 5, rotations=True).sample(16, torch.Generator().manual_seed(0))
    cases = [("conv4 Omniglot 5-way 1-shot", lambda: create_model("conv4", 5, (1, 28, 28)), ep, "ce", 0.4)]
    sin = SinusoidTasks(10, 10).sample(16, torch.Generator().manual_seed(0))
    cases.append(("sinusoid MLP 40-40, K=10", sinusoid_model, sin, "mse", 0.01))
    for name, make, episode, loss, lr in cases:
        torch.manual_seed(0)
        model = make()
        learner = MAML(model, inner_lr=lr, loss=loss, ways=1 if loss == "mse" else 5)
        modes = {"vmap": (True, None), "loop": (False, None), "chunk": (True, a.speed_chunk), "loop_cl": (False, None)}
        times: dict[str, list[float]] = {m: [] for m in modes}
        grads = {}
        for _ in range(a.speed_repeats + 1):  # first round warms up
            for mode, (vec, chunk) in modes.items():
                learner.chunk_size = chunk
                model.to(memory_format=torch.channels_last if mode == "loop_cl" else torch.contiguous_format)
                model.zero_grad()
                t = time.perf_counter()
                learner.meta_loss(episode, vectorise=vec).backward()
                times[mode].append(time.perf_counter() - t)
                grads[mode] = torch.cat([p.grad.flatten() for p in model.parameters()])
        learner.chunk_size = None
        model.to(memory_format=torch.contiguous_format)
        diff32 = max(float((grads[m] - grads["loop"]).abs().max()) for m in ("vmap", "chunk", "loop_cl"))
        rel32 = diff32 / float(grads["loop"].abs().max())
        model64 = make().double()
        l64 = MAML(model64, inner_lr=lr, loss=loss, ways=1 if loss == "mse" else 5)
        e64 = type(episode)(*(t.double() if t.is_floating_point() else t for t in (episode.support_x, episode.support_y, episode.query_x, episode.query_y, episode.classes)))
        g64 = {}
        for mode, (vec, chunk) in modes.items():
            l64.chunk_size = chunk
            model64.zero_grad()
            l64.meta_loss(e64, vectorise=vec).backward()
            g64[mode] = torch.cat([p.grad.flatten() for p in model64.parameters()])
        diff64 = max(float((g64[m] - g64["loop"]).abs().max()) for m in ("vmap", "chunk"))
        tv, tl, tc, tcl = (statistics.median(times[m][1:]) for m in ("vmap", "loop", "chunk", "loop_cl"))
        detail = (f"MAML 2nd-order meta-gradient, meta-batch 16, {name}: loop {tl:.3f}s / vmap {tv:.3f}s / vmap in chunks "
                  f"of {a.speed_chunk} tasks {tc:.3f}s / loop with channels-last weights {tcl:.3f}s "
                  f"(median of {a.speed_repeats}, {torch.get_num_threads()} threads); "
                  f"max |grad diff| against the loop: float32 {diff32:.1e} (relative {rel32:.1e}), float64 {diff64:.1e}")
        print("  speed:", detail, flush=True)
        out.append(ratio(f"vmap speed-up over task loop ({name})", tl / tv, detail))
        out.append(ratio(f"vmap (chunks of {a.speed_chunk}) speed-up over task loop ({name})", tl / tc, detail))
        if "conv4" in name:  # what tasks_as="auto" runs on CPU, against vmap
            out.append(ratio(f"task loop with channels-last (auto on CPU) speed-up over vmap ({name})", tv / tcl, detail))
    return out


LR_GRID = (0.4, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01)


def inner_lr_check(data: Any, split: dict[str, list[int]], global_pool: bool, zero: dict[int, bool] | None = None,
                   grid: tuple[float, ...] = LR_GRID) -> list[dict[str, Any]]:
    """The inner step rule, measured at initialisation on meta-TRAIN tasks (no accuracy, no meta-test class).

    For each step size: the mean support loss before and after one inner step, and the cosine between the
    first-order and the exact (second-order) meta-gradient of one meta-batch (float64, seed 0). First-order
    MAML assumes ``d phi / d theta = I - alpha H ~ I``; when ``alpha H`` is not small the first-order direction
    stops being a descent direction of the MAML objective (cosine < 0). Recorded beside the results; the
    step itself still follows the protocol's rule (the largest that lowers the query loss at initialisation),
    because the step with an aligned first-order gradient at initialisation (0.01) trained first order worse
    on meta-validation alphabets (see the md).
    """
    from transferkit.meta import MAML

    out = []
    for ways, tasks in ((5, 8), (20, 4)):
        ep = EpisodeSampler(data, split["train"], ways, 1, 3, rotations=True).sample(tasks, torch.Generator().manual_seed(0))
        e64 = type(ep)(*(t.double() if t.is_floating_point() else t for t in
                         (ep.support_x, ep.support_y, ep.query_x, ep.query_y, ep.classes)))
        for lr in grid:
            grads, losses = {}, (0.0, 0.0)
            for first_order in (True, False):
                seed_everything(0)
                model = create_model("conv4", ways, data.input_shape, global_pool=global_pool).double()
                learner = MAML(model, inner_lr=lr, first_order=first_order, zero_head=(zero or {}).get(ways, False))
                learner.vectorise = False
                learner.train()
                learner.meta_loss(e64).backward()
                grads[first_order] = torch.cat([(q.grad if q.grad is not None else torch.zeros_like(q)).flatten()
                                                for q in model.parameters()])  # a zero head leaves the head unused
                if first_order:
                    losses = learner.support_loss_change(e64)
            cos = float(torch.nn.functional.cosine_similarity(grads[True], grads[False], dim=0))
            out.append({"ways": ways, "inner_lr": lr, "support_before": round(losses[0], 3), "support_after": round(losses[1], 3),
                        "cos_first_vs_second_order": round(cos, 3)})
            print(f"  inner lr {lr} {ways}-way: support {losses[0]:.2f} -> {losses[1]:.2f}, cos(FO, SO meta-gradient) {cos:+.2f}",
                  flush=True)
    return out


def inner_key(a: argparse.Namespace, ways: int) -> str:
    """The cache-key part of a 20-way inner loop that differs from the 5-way one (empty for the earlier settings)."""
    lr, steps, _ = inner_loop(a, ways)
    return f"-in{lr}x{steps}" if ways == 20 and (lr != a.maml_inner_lr or steps != 1) else ""


def run_unit(unit: dict[str, Any], a: argparse.Namespace) -> dict[str, Any]:
    """One meta-training run (a worker process, one thread): returns its per-setting results and times."""
    cache = None
    if a.unit_cache and unit["method"] == "maml":
        key = (f"maml-{'fo' if unit['first_order'] else 'so'}-{unit['ways']}w-seed{unit['seed']}-steps{unit['steps']}x{unit['batch']}"
               f"-lr{a.maml_inner_lr}{inner_key(a, unit['ways'])}-pool{int(a.maml_global_pool)}-zero{int(zero_head(a, unit['ways']))}-ep{a.test_episodes}.json")
        cache = Path(a.unit_cache) / key
        if cache.is_file():
            return {**unit, **json.loads(cache.read_text())}
    torch.set_num_threads(a.threads)
    data = load_data("omniglot:small")
    split = split_classes(data.classes, 0.0, 0.25, by_group=True, seed=0)
    res, tt, w = train_eval(unit["method"], data, split, unit["ways"], 1, unit["queries"], unit["steps"], unit["batch"],
                            unit["seed"], unit["tests"], a, unit["first_order"], unit["schedule"], unit.get("augment"))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"results": res, "train_s": tt, "wall_s": w}))
    return {**unit, "results": res, "train_s": tt, "wall_s": w}


def units(a: argparse.Namespace) -> list[dict[str, Any]]:
    """Every meta-training run of the benchmark, longest first (so the process pool finishes together)."""
    out = []
    aug = Augment(shift=a.proto_augment_shift, scale=tuple(a.proto_augment_scale) if a.proto_augment_scale else None)
    for seed in a.seeds if "protonet" in a.methods else []:
        out.append({"label": "ProtoNets", "method": "protonet", "ways": a.proto_ways, "queries": a.proto_queries, "steps": a.proto_steps,
                    "batch": a.proto_batch, "seed": seed, "tests": SETTINGS, "first_order": False, "schedule": a.proto_schedule,
                    "augment": aug if aug.active else None, "cost": a.proto_steps * a.proto_ways * 3})
    want = {"5-way 1-shot": "5w1s", "5-way 5-shot": "5w5s", "20-way 1-shot": "20w1s"}
    tests5 = [s for s in SETTINGS[:2] if want[s[0]] in a.maml_settings]
    for order in ("2nd", "1st") if "maml" in a.methods else ():
        fo = order == "1st"
        for seed in a.seeds:
            common = {"label": f"MAML ({order} order)", "method": "maml", "queries": a.maml_queries, "seed": seed, "first_order": fo,
                      "schedule": a.maml_schedule}
            if tests5 and order in a.maml_orders:
                out.append({**common, "ways": 5, "steps": a.maml_steps, "batch": a.maml_batch, "tests": tests5,
                            "cost": a.maml_steps * a.maml_batch * 5 * (2 if fo else 3)})
            if "20w1s" in a.maml_settings and order in a.maml20_orders:
                out.append({**common, "ways": 20, "steps": a.maml20_steps, "batch": a.maml20_batch, "tests": SETTINGS[2:],
                            "cost": a.maml20_steps * a.maml20_batch * 20 * (2 if fo else 3)})
    return sorted(out, key=lambda u: -u["cost"])


def inner_text(a: argparse.Namespace, ways: int) -> str:
    lr, steps, eval_steps = inner_loop(a, ways)
    return f"{steps} inner step{'s' if steps > 1 else ''} lr {lr} ({eval_steps} at test)"


def main() -> None:
    a = args()
    torch.set_num_threads(a.threads)
    t_all = time.perf_counter()
    data = load_data("omniglot:small")
    split = split_classes(data.classes, 0.0, 0.25, by_group=True, seed=0)
    alph = {k: sorted({data.classes[i].split("/")[0] for i in v}) for k, v in split.items()}
    print(f"omniglot:small {data.num_classes} characters; meta-train {alph['train']}, meta-test {alph['test']}", flush=True)
    ratios = [] if a.no_speed else speed(a, data, split)  # alone on the machine, before the pool starts
    lr_check = inner_lr_check(data, split, a.maml_global_pool, {w: zero_head(a, w) for w in (5, 20)}) if "maml" in a.methods else []
    with ProcessPoolExecutor(a.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = [f.result() for f in [pool.submit(run_unit, u, a) for u in units(a)]]
    rows: list[dict[str, Any]] = []
    details: list[dict[str, Any]] = []
    for label in ("ProtoNets", "MAML (2nd order)", "MAML (1st order)"):
        for name, _, _ in SETTINGS:
            runs = sorted((u for u in done if u["label"] == label and name in u["results"]), key=lambda u: u["seed"])
            if not runs:
                continue
            u0 = runs[0]
            accs = [u["results"][name]["acc"] for u in runs]
            rows.append(row(name, label, accs, statistics.fmean(u["wall_s"] for u in runs), "last"))
            if label == "ProtoNets":
                aug = u0["augment"]
                aug_text = "no augmentation" if aug is None else f"augmentation shift {aug.shift} px, zoom {aug.scale}"
                train = (f"one model per seed: {u0['ways']}-way 1-shot, {u0['queries']} queries/class, {u0['steps']} meta-iterations x "
                         f"{u0['batch']} task(s), Adam 1e-3, {u0['schedule']} lr schedule, {aug_text}")
            else:
                train = (f"conv4 {'averaged (64 features)' if a.maml_global_pool else 'flattened (256 features)'}"
                         f"{', zero head at every inner loop' if zero_head(a, u0['ways']) else ''}, "
                         f"{u0['ways']}-way 1-shot, {u0['steps']} meta-iterations x {u0['batch']} tasks, {u0['queries']} queries/class, "
                         f"{inner_text(a, u0['ways'])}, Adam 1e-3, {u0['schedule']} lr schedule")
            details.append({"task": name, "method": label, "ci95": [u["results"][name]["ci95"] for u in runs], "episodes": a.test_episodes,
                            "train_s_per_seed": round(statistics.fmean(u["train_s"] for u in runs), 1), "train": train})
    total = time.perf_counter() - t_all
    extra = {"protocol": __doc__.split("\n\n")[1], "details": details, "total_wall_s": round(total, 1), "inner_lr_check": lr_check,
             "budget": vars(a), "split": alph}
    path = write_results(a.name, rows, ratios, extra)
    table = markdown_table(rows, PUBLISHED)
    have = {(r["task"], r["method"]) for r in rows}
    missing = [f"{m} {t}" for m in ("MAML (2nd order)", "MAML (1st order)") for t, _, _ in SETTINGS if (t, m) not in have]
    notes = [
        "# Few-shot Omniglot (minimal background sets, split by alphabet)",
        "",
        f"Data: 242 characters / 8 alphabets (images_background_small1+2), meta-train alphabets {', '.join(alph['train'])}; "
        f"meta-test alphabets {', '.join(alph['test'])}; rotations as extra classes. "
        f"{a.test_episodes} test episodes per seed, {a.test_queries} queries per class; seeds {a.seeds}. "
        "Published numbers are for full Omniglot (1,200 training characters, 60k+ meta-iterations): "
        "not the same data or budget.",
        "",
        table,
        "Budgets: " + "; ".join(sorted({f"{d['method']}: {d['train']}" for d in details})) + ". Meta-batches and test "
        "episodes are computed with tasks_as=auto: on this CPU a Python loop over tasks with channels-last conv weights. "
        "Recipe choices were made on meta-validation alphabets (see the protocol in the JSON), not on the meta-test ones.",
        ("Not run (CPU budget): " + ", ".join(missing) + ".") if missing else "",
        "",
        "95% intervals per seed: " + "; ".join(f"{d['method']} {d['task']}: " + ", ".join(f"±{c:.2f}" for c in d["ci95"]) for d in details),
        "",
        "Inner step check at initialisation (meta-train tasks, seed 0, float64; conv4 "
        + ("averaged" if a.maml_global_pool else "flattened") + "): "
        + "; ".join(f"{c['ways']}-way lr {c['inner_lr']}: support {c['support_before']} -> {c['support_after']}, "
                    f"cos(FO, SO) {c['cos_first_vs_second_order']:+.2f}" for c in lr_check) + ".",
        "",
        "Speed (same run): " + " ".join(f"{r['name']}: {r['value']:.2f}x ({r['detail']})." for r in ratios),
        "",
        f"Total wall time {total:.0f}s.",
    ]
    (RESULTS / f"{a.name}.md").write_text("\n".join(notes) + "\n")
    print(table)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
