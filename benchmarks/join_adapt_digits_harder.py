"""Join runs of ``adapt_digits.py --tasks mnist-mnistbg`` (each its own ``--methods``, the same seeds and source
stage) into ``results/adapt_digits_harder.{json,md}``, beside the run before the colour recipe and the recipe choice.

    python benchmarks/join_adapt_digits_harder.py RUN1.json RUN2.json RUN3.json --before BEFORE.json

RUN1 gives the header; every run must have source-only rows with the same per-seed accuracies (the same
source models), else the join stops. The committed table joined
``--methods source-only dann adamatch`` / ``source-only cdan mcc`` / ``source-only dan deep-coral adda``;
BEFORE is ``adapt_digits_harder.json`` of commit 1a219c4 (shift/zoom only). The recipe-choice numbers are the
printed results of ``adapt_digits.py --tasks mnist-uspsbg --methods source-only --seeds 0`` with the options
in ``CHOICE``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RESULTS, commit, markdown_table

CHOICE = [  # MNIST -> USPS over CIFAR-10 crops, source-only, seed 0, IM-selected, full test set
    {"recipe": "shift 2 px + zoom 0.85-1.15 (the M<->U recipe)", "acc": 38.42},
    {"recipe": "+ random colours", "acc": 70.25},
    {"recipe": "+ per-image standardisation in LeNet", "acc": 27.70},
    {"recipe": "+ standardisation + random colours", "acc": 68.01},
    {"recipe": "DTN (batch norm) + standardisation + random colours", "acc": 63.08},
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="results JSONs of adapt_digits.py --tasks mnist-mnistbg")
    ap.add_argument("--before", required=True, help="the results JSON of the run before the colour recipe")
    a = ap.parse_args()
    loaded = [json.loads(Path(p).read_text()) for p in a.runs]
    A, others = loaded[0], loaded[1:]
    C = json.loads(Path(a.before).read_text())

    def source_seeds(d: dict[str, Any]) -> list[float]:
        return next(r["seeds"] for r in d["rows"] if r["method"] == "source-only" and "oracle" not in r["selection"])

    if any(source_seeds(d) != source_seeds(A) for d in others):
        raise SystemExit("the runs' source-only stages differ: they are not the same source models and cannot be joined")
    order = ["source-only", "dan", "deep-coral", "dann", "adda", "cdan", "mcc", "adamatch"]

    def pick(key: str) -> list[dict[str, Any]]:
        rows = A[key] + [r for d in others for r in d[key] if not r["method"].startswith("source-only")]
        return sorted(rows, key=lambda r: order.index(r["method"].split(" ")[0]))

    rows, vc = pick("rows"), pick("validator_comparison")
    runs = A["runs"] + [r for d in others for r in d["runs"] if r["method"] != "source-only"]
    commands = " ; ".join(d["command"] for d in loaded)
    before = {r["method"]: r for r in C["rows"] if "oracle" not in r["selection"]}
    out = {**A, "commit": commit(), "rows": rows, "validator_comparison": vc, "runs": runs,
           "command": commands + " (same source models; the runs were joined by rows: python " + " ".join(sys.argv) + ")",
           "total_wall_s": sum(d["total_wall_s"] for d in loaded),
           "recipe_choice": {"pair": "M->Ubg: MNIST -> USPS digits (28x28) over colour CIFAR-10 crops, in no table",
                             "how": "source-only, seed 0, IM-selected, full M->Ubg test set; the best recipe is frozen",
                             "runs": CHOICE, "command": "python benchmarks/adapt_digits.py --tasks mnist-uspsbg --methods source-only "
                                                       "--seeds 0 --augment-colour {off,on} [--standardize] [--arch dtn]"},
           "before_colour_recipe": {"commit": C["commit"], "command": C["command"], "rows": C["rows"]},
           "published_other_data": {"source": "Ganin & Lempitsky 2015, MNIST -> MNIST-M (BSDS500 backgrounds, their own network)",
                                    "source-only": 52.25, "dann": 76.66}}
    (RESULTS / "adapt_digits_harder.json").write_text(json.dumps(out, indent=2) + "\n")
    head = Path(a.runs[0]).with_suffix(".md").read_text().split("\n\n")[0]
    pub = {("M->Mbg", "source-only"): "52.25 (MNIST-M)", ("M->Mbg", "dann"): "76.66 (MNIST-M)"}
    text = [head, "", markdown_table(rows, pub),
            f"{len(loaded)} runs of `benchmarks/adapt_digits.py --tasks mnist-mnistbg` (the commands are at the end), joined by rows "
            "with `benchmarks/join_adapt_digits_harder.py`: their source-only stages are the same models (identical accuracies on "
            "every seed, checked when joining), and each method adapts a copy of them.", "",
            "Published: Ganin & Lempitsky 2015 on MNIST -> MNIST-M with their own network. Our target is built the same way "
            "(|background - digit|) but over CIFAR-10 crops, not BSDS500: a comparable shift, not the same data.",
            "", "## Before and after the colour recipe (issue 16)", "",
            f"| method | before: shift/zoom only (commit {C['commit'][:7]}) | after: + random colours of source batches | paired difference per seed |",
            "|---|---|---|---|"]
    for m in ("source-only", "dann", "adamatch"):
        now = next(r for r in rows if r["method"] == m and "oracle" not in r["selection"])
        was = before[m]
        diffs = [x - y for x, y in zip(now["seeds"], was["seeds"], strict=True)]
        text.append(f"| {m} | {was['mean']:.2f} ± {was['std']:.2f} | {now['mean']:.2f} ± {now['std']:.2f} | "
                    f"{', '.join(f'{d:+.2f}' for d in diffs)} |")
    text += ["", "Same seeds, steps, LeNet and selection (IM); the only change is the colour augmentation, which "
             "`benchmarks/adapt_digits.py` now applies when the target is in colour (`--augment-colour auto`, the default; the "
             "MNIST <-> USPS tables are grey and unchanged). The first run was started when `--augment-colour` was an on/off "
             "flag; today's default, `auto`, does the same on this pair.", "",
             "## How the recipe was chosen (never on this pair)", "",
             "On MNIST -> USPS digits over colour CIFAR-10 crops (`--tasks mnist-uspsbg`, a pair in no table), source-only LeNet, "
             "seed 0, IM-selected, full test set; the best was frozen before M->Mbg was run:", "",
             "| recipe | M->Ubg accuracy |", "|---|---|"]
    text += [f"| {c['recipe']} | {c['acc']:.2f} |" for c in CHOICE]
    text += ["", "## Checkpoint selection by each validator (same runs)", "", markdown_table(vc),
             f"Total wall time {out['total_wall_s']:.0f} s ({len(loaded)} runs: {commands}); machine in the JSON."]
    (RESULTS / "adapt_digits_harder.md").write_text("\n".join(text) + "\n")
    print(f"wrote {RESULTS / 'adapt_digits_harder.md'}")


if __name__ == "__main__":
    main()
