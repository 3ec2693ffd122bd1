"""``rank``, ``gap`` and ``report``: decide before training, look after it."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import click

from ..analysis import (
    SCORE_NAMES,
    SCORE_TITLES,
    forward_features,
    mmd_median,
    proxy_a_distance,
    rank_models,
    tsne_embed,
    write_report,
)
from ..analysis.domain_gap import check_sample_count
from ..analysis.rank import fit_input
from ..data import few_labels, pair_shapes
from ..engine import resolve_device
from ..errors import TransferkitError
from ..io import write_json
from .common import config_option, data_options, echo_table, guard_output, load, pass_params

device_option = click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)


@click.command("rank")
@config_option
@click.option("--models", "models_opt", multiple=True, help="Candidate source models: run folders, .safetensors checkpoints, or pretrained names (efficientnet-lite0, timm:NAME=FILE) (list them after --models, or repeat it).")
@click.argument("more_models", nargs=-1, metavar="[MODEL]...")
@click.option("--data", required=True, help="Labelled target data (the set you would fine-tune on).")
@click.option("--split", default="train", show_default=True, help="Split of a named dataset.")
@click.option("--labels-per-class", type=click.IntRange(1), default=None, help="Score on only N labelled examples per class (seeded), as you would have them.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--sort-by", type=click.Choice(SCORE_NAMES), default="logme", show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=512, show_default=True)
@click.option("--output", default=None, help="Also write the table to this JSON file.")
@click.option("--plot", default=None, help="Also draw the scores as bars into this PNG.")
@click.option("--overwrite", is_flag=True, default=False, help="Replace --output/--plot if they exist.")
@device_option
@data_options
@pass_params
def rank_cmd(p: dict[str, Any]) -> None:
    """Rank pretrained models for a target task: LogME, LEEP, NCE, H-score (higher is better).

    One forward pass of the labelled target data through each model; no training.

    \b
    Example:
      transferkit rank --models runs/lenet-mnist runs/mlp-mnist --data digits --image-size 28
    """
    models = [*p["models_opt"], *p["more_models"]]
    if not models:
        raise TransferkitError("rank needs candidate models: --models RUN_OR_CHECKPOINT [MORE ...]")
    out = guard_output(p["output"], p["overwrite"]) if p["output"] else None
    plot = guard_output(p["plot"], p["overwrite"]) if p["plot"] else None
    data = load(p["data"], p, split=p["split"])
    data.require_labels("rank")
    if p["labels_per_class"]:
        data, _ = few_labels(data, p["labels_per_class"], p["seed"])
    rows = rank_models(models, data, p["sort_by"], p["batch_size"], resolve_device(p["device"]))
    cols = ["rank", "model", "arch", "parameters", *(SCORE_TITLES[s] for s in SCORE_NAMES)]
    shown = [{**r, **{SCORE_TITLES[s]: f"{r[s]:.4f}" for s in SCORE_NAMES}} for r in rows]
    print(f"transferability to {data.name} ({len(data)} labelled examples, {data.num_classes} classes); sorted by {SCORE_TITLES[p['sort_by']]}")
    print(echo_table(shown, cols))
    if out is not None:
        write_json(out, {"data": data.name, "n": len(data), "sort_by": p["sort_by"], "rows": rows})
        print(f"wrote {out}")
    if plot is not None:
        from ..analysis import plots

        plots.save_figure(plots.score_bars(rows, list(SCORE_NAMES), SCORE_TITLES), plot)
        print(f"wrote {plot}")


@click.command("gap")
@config_option
@click.option("--source", required=True, help="Source domain data.")
@click.option("--target", required=True, help="Target domain data (labels, if any, only mark classes in the plot).")
@click.option("--features-from", default=None, help="Measure in the feature space of this run folder / checkpoint (default: raw inputs).")
@click.option("--split", default="train", show_default=True, help="Split of named datasets.")
@click.option("--max-samples", type=click.IntRange(10), default=2000, show_default=True, help="Samples per domain for A-distance and MMD.")
@click.option("--tsne-points", type=click.IntRange(0), default=400, show_default=True, help="Points per domain in the t-SNE plot (0: no plot).")
@click.option("--plot", default="gap_tsne.png", show_default=True, help="Where to write the t-SNE plot.")
@click.option("--output", default=None, help="Also write the numbers to this JSON file.")
@click.option("--overwrite", is_flag=True, default=False, help="Replace --plot/--output if they exist.")
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@data_options
@pass_params
def gap_cmd(p: dict[str, Any]) -> None:
    """How far apart are two domains: proxy A-distance, MMD (median heuristic) and a t-SNE map.

    \b
    Example:
      transferkit gap --source mnist5k --target digits --image-size 16 --plot gap.png
    """
    plot = guard_output(p["plot"], p["overwrite"]) if p["tsne_points"] > 0 else None
    out = guard_output(p["output"], p["overwrite"]) if p["output"] else None
    src, tgt = load(p["source"], p, split=p["split"]), load(p["target"], p, split=p["split"])
    check_sample_count(len(src), len(tgt), f"gap ({src.name}: {len(src)}, {tgt.name}: {len(tgt)})")
    device = resolve_device(p["device"])
    space = "inputs"
    if p["features_from"]:
        from ..models import load_model

        model = load_model(p["features_from"]).to(device)
        src, tgt = fit_input(src, model.spec["input_shape"]), fit_input(tgt, model.spec["input_shape"])
        fs, _ = forward_features(model, src.x)
        ft, _ = forward_features(model, tgt.x)
        space = f"features of {p['features_from']}"
    else:
        src, tgt = pair_shapes(src, tgt, None, None)
        fs, ft = src.x.reshape(len(src), -1), tgt.x.reshape(len(tgt), -1)
    a = proxy_a_distance(fs, ft, p["max_samples"], p["seed"])
    m = mmd_median(fs, ft, p["max_samples"], p["seed"])
    print(f"domain gap {src.name} -> {tgt.name} in {space} ({fs.shape[1]} dims)")
    print(f"  proxy A-distance  {a.distance:.3f}   (domain-classifier error {a.error * 100:.1f}%, {a.n_per_domain} per domain; 0 = same, 2 = separable)")
    if a.error > 0.5:
        warnings.warn(f"the domain classifier's held-out error is {a.error * 100:.1f}%, worse than chance: it over-fitted, or "
                      "the domains are indistinguishable to it; the A-distance is clipped to 0 and says little here "
                      "(try more samples with --max-samples, or compare features with --features-from)", UserWarning, stacklevel=1)
    print(f"  MMD^2 (unbiased)  {m.mmd2:.4f}  MMD {m.mmd:.4f}   (Gaussian kernel, median-heuristic sigma^2 = {m.sigma2:.4g})")
    if plot is not None:
        from ..analysis import plots

        emb = tsne_embed([fs, ft], [src.y, tgt.y], [f"source: {src.name}", f"target: {tgt.name}"],
                         src.classes or tgt.classes, p["tsne_points"], seed=p["seed"])
        title = f"t-SNE of {space}: A-distance {a.distance:.2f}, MMD² {m.mmd2:.3f}"
        plots.save_figure(plots.tsne_figure(emb, title), plot)
        print(f"wrote {plot}")
    if out is not None:
        write_json(out, {"source": src.name, "target": tgt.name, "space": space, "a_distance": a.distance,
                         "domain_error": a.error, "mmd2": m.mmd2, "mmd": m.mmd, "sigma2": m.sigma2, "n_per_domain": a.n_per_domain})
        print(f"wrote {out}")


@click.command("report")
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@click.option("--output", default=None, help="HTML file (default: RUN/report.html for one run, report.html for several); the Markdown twin goes beside it.")
@click.option("--title", default=None, help="Page title.")
@click.option("--no-markdown", is_flag=True, default=False, help="Write only the HTML file.")
@click.option("--no-confusion", is_flag=True, default=False, help="Skip the confusion matrices (no model evaluation).")
@click.option("--no-tsne", is_flag=True, default=False, help="Skip the t-SNE maps of adaptation runs.")
@click.option("--tsne-points", type=click.IntRange(10), default=300, show_default=True, help="Points per domain in t-SNE maps.")
@click.option("--overwrite", is_flag=True, default=False, help="Replace an existing report.")
@device_option
@pass_params
def report_cmd(p: dict[str, Any]) -> None:
    """One self-contained HTML report (and a Markdown twin) of one or more runs.

    Learning curves, final metrics, confusion matrix, t-SNE before/after
    adaptation, the resolved config, and a mean ± std table across runs.

    \b
    Example:
      transferkit report runs/ft-seed0 runs/ft-seed1 runs/ft-seed2 --output report.html
    """
    runs = list(p["runs"])
    output = p["output"] or str(Path(runs[0]) / "report.html" if len(runs) == 1 else "report.html")
    device = resolve_device(p["device"])
    res = write_report(runs, output, not p["no_markdown"], p["overwrite"], p["title"], not p["no_confusion"],
                       not p["no_tsne"], device, p["tsne_points"])
    for sec in res.sections:
        for n in sec.notes:
            print(f"note: {sec.run.name}: {n}", file=sys.stderr)
    print(f"wrote {res.html}" + (f" and {res.markdown} (+{len(res.assets)} images)" if res.markdown else ""))


COMMANDS = [rank_cmd, gap_cmd, report_cmd]
