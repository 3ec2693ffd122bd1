"""MAML inner loops on meta-VALIDATION alphabets: how the 20-way rows of ``meta_omniglot.py`` were chosen (issue 16).

The six meta-train alphabets of ``meta_omniglot.py`` (split seed 0) are split again: the last two in
sorted order (Sanskrit, Tagalog) validate, the other four train. The meta-test alphabets are never
loaded. Each argument after the ways and meta-iterations is one variant ``ORDER,LR,STEPS,HEAD``:
``fo``/``so``, the inner lr, the inner steps (training and test) and ``z`` (zero head) or ``n``.
Prints one JSON line per variant: accuracy on 200 validation episodes (5 queries per class).

    TRANSFERKIT_DATA_DIR=/work/shared/data python benchmarks/meta_omniglot_val.py 20 250 \\
        fo,0.03,1,n fo,0.1,1,z fo,0.4,1,z fo,0.1,5,n fo,0.1,5,z
"""

from __future__ import annotations

import json
import sys
import time

import torch

from transferkit.data import load_data
from transferkit.engine import TrainConfig, seed_everything
from transferkit.meta import EpisodeSampler, MetaSpec, build_learner, meta_train, split_classes
from transferkit.models import create_model


def main() -> None:
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    torch.set_num_threads(1)
    data = load_data("omniglot:small")
    train_ids = split_classes(data.classes, 0.0, 0.25, by_group=True, seed=0)["train"]
    names = [data.classes[i].split("/")[0] for i in train_ids]
    val_alphabets = set(sorted(set(names))[-2:])
    fit = [i for i, n in zip(train_ids, names, strict=True) if n not in val_alphabets]
    val = [i for i, n in zip(train_ids, names, strict=True) if n in val_alphabets]
    print(f"validation alphabets {sorted(val_alphabets)}: {len(fit)} training and {len(val)} validation characters", flush=True)
    ways, steps = int(sys.argv[1]), int(sys.argv[2])
    for variant in sys.argv[3:]:
        order, lr, inner, head = variant.split(",")
        seed_everything(0)
        spec = MetaSpec(method="maml", ways=ways, shots=1, queries=3, meta_batch=4 if ways == 20 else 8, inner_steps=int(inner),
                        inner_lr=float(lr), eval_inner_steps=int(inner), first_order=order == "fo", episodes_per_epoch=steps,
                        rotations=True, zero_head=head == "z")
        learner = build_learner(create_model("conv4", ways, data.input_shape), spec)
        t = time.perf_counter()
        meta_train(learner, EpisodeSampler(data, fit, ways, 1, 3, rotations=True), spec, TrainConfig(epochs=1, lr=1e-3, seed=0),
                   verbose=False, callbacks=[])
        result = learner.evaluate(EpisodeSampler(data, val, ways, 1, 5, rotations=True), 200, chunk=4, seed=123)
        print(json.dumps({"variant": variant, "ways": ways, "meta_iterations": steps, "val_acc": round(result["acc"], 2),
                          "train_s": round(time.perf_counter() - t)}), flush=True)


if __name__ == "__main__":
    main()
