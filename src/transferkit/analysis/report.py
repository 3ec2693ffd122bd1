"""Reports: one self-contained HTML page (and a Markdown twin) for one or more run folders.

>>> from transferkit.analysis import write_report, compare_runs
>>> write_report(["runs/a", "runs/b"], "report.html")           # report.html + report.md + report_assets/
>>> compare_runs(["runs/a", "runs/b"])                           # mean and std per configuration

A run folder holds ``config.yaml`` (required), ``metrics.jsonl``,
``summary.json`` and ``checkpoints/``; an adaptation run also holds
``source_model.safetensors``. Whatever is missing is said in the report and
the section is left out; only a folder without ``config.yaml`` is refused.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from ..data import TensorData, load_data
from ..engine.evaluate import confusion_counts
from ..errors import TransferkitError
from ..io import load_yaml, read_jsonl, write_text
from .rank import fit_input, forward_features

EXPECTED = ("config.yaml", "metrics.jsonl", "summary.json", "checkpoints")
# where the data for a confusion matrix comes from, in order of preference: (config key, split)
EVAL_KEYS = (("test_data", "test"), ("target_test", "test"), ("target", "test"), ("val_data", "test"), ("data", "test"))


@dataclass
class Run:
    """What a run folder holds, read once."""

    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]
    missing: list[str]
    label: str | None = None

    @property
    def name(self) -> str:
        return self.label or self.path.name

    @property
    def is_adaptation(self) -> bool:
        return bool(self.config.get("source")) and bool(self.config.get("target"))


def read_run(path: str | Path) -> Run:
    """Read a run folder; raise a one-line error saying what is missing when it is not one."""
    p = Path(path)
    if not p.exists():
        raise TransferkitError(f"run folder {p} does not exist")
    if not p.is_dir():
        raise TransferkitError(f"{p} is a file, not a run folder (a run folder holds config.yaml, metrics.jsonl, summary.json)")
    missing = [n for n in EXPECTED if not (p / n).exists()]
    if "config.yaml" in missing:
        raise TransferkitError(
            f"{p} is not a transferkit run folder: missing {', '.join(missing)}; "
            "make runs with `transferkit train/finetune/adapt ... --run-dir DIR`"
        )
    config = load_yaml(p / "config.yaml")
    metrics = read_jsonl(p / "metrics.jsonl") if (p / "metrics.jsonl").exists() else []
    summary: dict[str, Any] = {}
    if (p / "summary.json").exists():
        try:
            summary = json.loads((p / "summary.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            missing.append("summary.json (unreadable)")
    return Run(p, config, metrics, summary if isinstance(summary, dict) else {}, missing)


def _as_run(r: Run | str | Path) -> Run:
    return r if isinstance(r, Run) else read_run(r)


# ------------------------------------------------------------------ comparison
def method_of(run: Run) -> str:
    """``family/method`` from summary.json, else ``command/strategy`` (or ``command/method``) from config.yaml."""
    s, c = run.summary, run.config
    if s.get("method"):
        return f"{s['family']}/{s['method']}" if s.get("family") else str(s["method"])
    cmd = s.get("command") or c.get("command") or "run"
    sub = c.get("method") or c.get("strategy")
    if sub and cmd != "train":
        return f"{cmd}/{sub}"
    return str(cmd)


def _short(spec: Any) -> str:
    return Path(str(spec)).name if spec else "?"


def task_of(run: Run) -> str:
    """``summary.task``, else ``source→target``, else the training data (``data``)."""
    s, c = run.summary, run.config
    if s.get("task"):
        return str(s["task"])
    if c.get("source") and c.get("target"):
        return f"{_short(c['source'])}→{_short(c['target'])}"
    task = _short(c.get("data"))
    if c.get("labels_per_class"):
        task += f" ({c['labels_per_class']}/class)"
    return task


def final_metric(run: Run) -> tuple[str, float] | None:
    """The headline number of a run: ``metrics[headline]`` of a versioned summary (docs/run-summary.md).

    Summaries written before the schema existed (no ``schema`` key) fall back to test accuracy,
    else target accuracy, else validation accuracy.
    """
    s = run.summary
    if isinstance(s.get("schema"), int):
        key, metrics = s.get("headline"), s.get("metrics") or {}
        if key and isinstance(metrics.get(key), (int, float)):
            return key.replace("_", " "), float(metrics[key])
        sel = s.get("selection") or {}
        if isinstance(sel.get("score"), (int, float)):
            return f"best {sel.get('by', 'score')}", float(sel["score"])
        return None
    for key, label in (("test", "test acc"), ("target_test", "test acc"), ("target", "target acc"), ("val", "val acc")):
        v = s.get(key)
        if isinstance(v, dict) and isinstance(v.get("acc"), (int, float)):
            return label, float(v["acc"])
        if isinstance(v, (int, float)) and key != "val":
            return label, float(v)
    if isinstance(s.get("best_score"), (int, float)):
        return f"best {s.get('select_by', 'score')}", float(s["best_score"])
    return None


# config keys that do not make two runs different configurations (seeds, where output goes, how it ran)
NOT_CONFIGURATION = frozenset({
    "seed", "split_seed", "run_dir", "resume", "overwrite", "config", "quiet", "device", "nproc", "output",
    "data_dir", "deterministic", "no_latency", "on_bad_file", "export_formats", "export_tolerance", "test_episodes",
})


def configuration_of(run: Run) -> dict[str, str]:
    """The resolved config.yaml without seeds, paths of outputs and run-time switches: runs with the
    same configuration are repeats (seeds) of one experiment."""
    return {k: json.dumps(v, sort_keys=True, default=str) for k, v in run.config.items() if k not in NOT_CONFIGURATION}


def compare_runs(runs: Sequence[Run | str | Path]) -> list[dict[str, Any]]:
    """One row per configuration (method, task, metric and the other options): mean, std (sample,
    0 for one run), n and the run names. Only runs that differ in seed alone are averaged; rows of
    the same method and task say what else differs (e.g. ``train [arch=resnet8]``)."""
    groups: dict[tuple[str, str, str, tuple[tuple[str, str], ...]], list[tuple[str, float]]] = {}
    for r in map(_as_run, runs):
        fm = final_metric(r)
        if fm is None:
            continue
        conf = tuple(sorted(configuration_of(r).items()))
        groups.setdefault((method_of(r), task_of(r), fm[0], conf), []).append((r.name, fm[1]))
    rows: list[dict[str, Any]] = []
    for (method, task, metric, conf), vals in groups.items():
        siblings = [dict(c) for (m, t, k, c) in groups if (m, t, k) == (method, task, metric)]
        mine = dict(conf)
        differ = sorted({key for other in siblings for key in set(other) | set(mine) if other.get(key) != mine.get(key)})
        label = method + (" [" + ", ".join(f"{k}={_shown(mine.get(k))}" for k in differ) + "]" if differ else "")
        xs = [v for _, v in vals]
        rows.append({"method": label, "task": task, "metric": metric, "mean": statistics.fmean(xs),
                     "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs), "runs": [n for n, _ in vals]})
    rows.sort(key=lambda r: (r["task"], -r["mean"]))
    return rows


def _shown(value: str | None) -> str:
    if value is None:
        return "-"
    v = json.loads(value)
    return ",".join(map(str, v)) if isinstance(v, list) else str(v)


def comparison_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`compare_runs` as a Markdown table."""
    lines = ["| task | method | metric | mean ± std | n |", "|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['method']} | {r['metric']} | {r['mean']:.2f} ± {r['std']:.2f} | {r['n']} |" for r in rows]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------- figures
@dataclass
class Figure:
    key: str
    title: str
    png: bytes
    caption: str = ""


@dataclass
class Section:
    run: Run
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


def _load_cfg_data(run: Run, key: str, split: str) -> TensorData:
    from ..data.text import text_options

    c = run.config
    ch = c.get("channels")
    text = text_options({**c, "model_from": str(run.path)}, quiet=True)  # text data: tokenised as the run's model was
    return load_data(str(c[key]), split, c.get("data_dir"), c.get("image_size"), int(ch) if ch else None, text=text)


def _first_error_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _confusion(run: Run, section: Section, device: str | torch.device, max_eval: int) -> None:
    from ..models import load_model
    from . import plots

    if "checkpoints" in run.missing:
        section.notes.append("confusion matrix: no checkpoints/ folder, so no model to evaluate")
        return
    keys = [(k, sp) for k, sp in EVAL_KEYS if run.config.get(k)]
    if not keys:
        section.notes.append("confusion matrix: config.yaml names no data (test_data, target_test, target or data)")
        return
    try:
        model = load_model(run.path).to(device)
        key, split = keys[0]
        data = fit_input(_load_cfg_data(run, key, split), model.spec["input_shape"])
        y = data.require_labels("a confusion matrix")
        if len(data) > max_eval:
            data = data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:max_eval])
            y = data.require_labels("a confusion matrix")
        if int(y.max()) >= model.num_classes:
            raise TransferkitError(f"{data.name} has labels up to {int(y.max())} but the model has {model.num_classes} classes")
        _, logits = forward_features(model, data.x)
        pred = logits.argmax(1)
        cm = confusion_counts(y, pred, model.num_classes).numpy()
        acc = float((pred == y.cpu()).float().mean() * 100)
    except (TransferkitError, OSError, KeyError, RuntimeError, ValueError) as exc:
        section.notes.append(f"confusion matrix skipped: {_first_error_line(exc)}")
        return
    title = f"{data.name}: accuracy {acc:.2f}% (n={len(y)})"
    section.figures.append(Figure("confusion", "Confusion matrix", plots.png_bytes(plots.confusion_figure(cm, model.classes, title)),
                                  f"best checkpoint on {data.name} (config key {key}); rows: true class, colour: row-normalised"))


def _adaptation_tsne(run: Run, section: Section, device: str | torch.device, max_points: int, seed: int) -> None:
    from ..models import load_model
    from . import plots
    from .tsne import tsne_embed

    c = run.config
    if "checkpoints" in run.missing:
        section.notes.append("t-SNE: no checkpoints/ folder, so no adapted model")
        return
    src_file = run.path / "source_model.safetensors"
    try:
        adapted = load_model(run.path).to(device)
        shape = adapted.spec["input_shape"]
        source = fit_input(_load_cfg_data(run, "source", "train"), shape)
        tkey = "target_test" if c.get("target_test") else "target"
        target = fit_input(_load_cfg_data(run, tkey, "test"), shape)

        def embed(model: Any) -> Any:
            idx_s = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed))[:max_points]
            idx_t = torch.randperm(len(target), generator=torch.Generator().manual_seed(seed + 1))[:max_points]
            fs, _ = forward_features(model, source.x[idx_s])
            ft, _ = forward_features(model, target.x[idx_t])
            ys = source.y[idx_s] if source.y is not None else None
            yt = target.y[idx_t] if target.y is not None else None  # labels colour markers only, never training
            return tsne_embed([fs, ft], [ys, yt], [f"source ({source.name})", f"target ({target.name})"],
                              adapted.classes, max_per_domain=max_points, seed=seed)

        after = embed(adapted)
        if src_file.is_file():
            before = embed(load_model(src_file).to(device))
            fig = plots.tsne_pair_figure(before, after, ("before adaptation (source-only model)", "after adaptation"))
            cap = "features of the source-only model (source_model.safetensors) and of the adapted model"
        else:
            section.notes.append("t-SNE before adaptation skipped: no source_model.safetensors in the run folder")
            fig = plots.tsne_figure(after, "after adaptation")
            cap = "features of the adapted model"
    except (TransferkitError, OSError, KeyError, RuntimeError, ValueError) as exc:
        section.notes.append(f"t-SNE skipped: {_first_error_line(exc)}")
        return
    section.figures.append(Figure("tsne", "t-SNE of features, source and target", plots.png_bytes(fig),
                                  f"{cap}; colour = domain, marker = class; up to {max_points} points per domain"))


def run_section(
    run: Run | str | Path, confusion: bool = True, tsne: bool = True, device: str | torch.device = "cpu",
    max_eval: int = 10000, tsne_points: int = 300, seed: int = 0,
) -> Section:
    """The figures and notes of one run's part of the report."""
    from . import plots

    run = _as_run(run)
    sec = Section(run)
    for m in run.missing:
        if m != "checkpoints":
            sec.notes.append(f"{m} is missing from the run folder")
    if run.metrics:
        sec.figures.append(Figure("curves", "Learning curves", plots.png_bytes(plots.learning_curves(run.metrics)),
                                  f"{len(run.metrics)} epochs from metrics.jsonl"))
    elif "metrics.jsonl" not in run.missing:
        sec.notes.append("metrics.jsonl holds no epochs yet")
    if confusion:
        _confusion(run, sec, device, max_eval)
    if tsne and run.is_adaptation:
        _adaptation_tsne(run, sec, device, tsne_points, seed)
    return sec


# -------------------------------------------------------------------- output
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em} h3{margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em} th,td{border:1px solid #ccc;padding:.3em .7em;text-align:left}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #eee} figure{margin:1em 0} figcaption{color:#555;font-size:.9em}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em} .note{color:#8a5300;background:#fff8e6;padding:.3em .6em;border-left:3px solid #f0b400;margin:.3em 0}
.muted{color:#666;font-size:.9em}
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if not math.isfinite(v) or abs(v) < 1e4 else f"{v:.4e}"
    return str(v)


def _headline(run: Run) -> list[tuple[str, str]]:
    s = run.summary
    out = [("method", method_of(run)), ("task", task_of(run))]
    fm = final_metric(run)
    if fm:
        out.append((fm[0], f"{fm[1]:.2f}"))
    if isinstance(s.get("schema"), int):  # the versioned summary (docs/run-summary.md)
        sel = s.get("selection") or {}
        if isinstance(sel.get("epoch"), int):
            out.append(("best epoch", str(sel["epoch"] + 1)))
        if sel.get("by"):
            out.append(("select by", str(sel["by"])))
        for k in ("epochs_run", "steps", "stopped_early", "wall_s", "parameters"):
            if k in s:
                out.append((k.replace("_", " "), _fmt(s[k])))
        for k, v in (s.get("metrics") or {}).items():
            if isinstance(v, (int, float)) and fm is not None and k.replace("_", " ") != fm[0]:
                out.append((k.replace("_", " "), _fmt(v)))
        return out
    for k in ("best_epoch", "epochs_run", "select_by", "best_score", "stopped_early", "wall_s", "parameters"):
        if k in s:
            v = s[k] + 1 if k == "best_epoch" and isinstance(s[k], int) else s[k]
            out.append((k.replace("_", " "), _fmt(v)))
    for k, v in s.items():
        if isinstance(v, dict) and isinstance(v.get("acc"), (int, float)) and k not in ("val", "test"):
            out.append((f"{k} acc", f"{v['acc']:.2f}"))
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "run"


def _html(sections: Sequence[Section], comparison: list[dict[str, Any]], title: str) -> str:
    e = html.escape
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>",
           f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{CSS}</style></head><body>",
           f"<h1>{e(title)}</h1><p class='muted'>{len(sections)} run(s): {e(', '.join(s.run.name for s in sections))}</p>"]
    if comparison:
        out.append("<h2>Comparison across runs</h2><table><tr><th>task</th><th>method</th><th>metric</th><th>mean ± std</th><th>n</th><th>runs</th></tr>")
        for r in comparison:
            out.append(f"<tr><td>{e(r['task'])}</td><td>{e(r['method'])}</td><td>{e(r['metric'])}</td>"
                       f"<td class='num'>{r['mean']:.2f} ± {r['std']:.2f}</td><td class='num'>{r['n']}</td><td>{e(', '.join(r['runs']))}</td></tr>")
        out.append("</table>")
    for sec in sections:
        run = sec.run
        out.append(f"<h2 id='{e(_slug(run.name))}'>Run {e(run.name)}</h2><p class='muted'>{e(str(run.path))}</p>")
        out.append("<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _headline(run)) + "</table>")
        out += [f"<div class='note'>{e(n)}</div>" for n in sec.notes]
        for f in sec.figures:
            b64 = base64.b64encode(f.png).decode("ascii")
            out.append(f"<h3>{e(f.title)}</h3><figure><img alt='{e(f.title)} of {e(run.name)}' src='data:image/png;base64,{b64}'>"
                       f"<figcaption>{e(f.caption)}</figcaption></figure>")
        out.append("<h3>Resolved configuration</h3><details open><summary>config.yaml</summary>"
                   f"<pre>{e(yaml.safe_dump(run.config, sort_keys=False))}</pre></details>")
    out.append("<p class='muted'>Made by <code>transferkit report</code>.</p></body></html>")
    return "\n".join(out)


def _markdown(sections: Sequence[Section], comparison: list[dict[str, Any]], title: str, assets: dict[tuple[int, str], str]) -> str:
    out = [f"# {title}", ""]
    if comparison:
        out += ["## Comparison across runs", "", comparison_markdown(comparison)]
    for i, sec in enumerate(sections):
        run = sec.run
        out += [f"## Run {run.name}", "", f"`{run.path}`", "", "| | |", "|---|---|"]
        out += [f"| {k} | {v} |" for k, v in _headline(run)]
        out.append("")
        out += [f"> note: {n}" for n in sec.notes]
        if sec.notes:
            out.append("")
        for f in sec.figures:
            out += [f"### {f.title}", "", f"![{f.title}]({assets[(i, f.key)]})", "", f"*{f.caption}*", ""]
        out += ["### Resolved configuration", "", "```yaml", yaml.safe_dump(run.config, sort_keys=False).rstrip(), "```", ""]
    return "\n".join(out)


@dataclass
class ReportFiles:
    html: Path
    markdown: Path | None
    assets: list[Path]
    sections: list[Section]
    comparison: list[dict[str, Any]]


def write_report(
    runs: Sequence[Run | str | Path], output: str | Path, markdown: bool = True, overwrite: bool = False,
    title: str | None = None, confusion: bool = True, tsne: bool = True, device: str | torch.device = "cpu",
    tsne_points: int = 300, seed: int = 0,
) -> ReportFiles:
    """Write ``output`` (HTML, images embedded) and, with ``markdown``, ``<stem>.md`` + ``<stem>_assets/*.png``."""
    if not runs:
        raise TransferkitError("report needs at least one run folder")
    out = Path(output)
    if out.suffix.lower() not in (".html", ".htm"):
        raise TransferkitError(f"report output {out} must end in .html (the Markdown twin is written beside it)")
    md = out.with_suffix(".md") if markdown else None
    assets_dir = out.parent / f"{out.stem}_assets"
    for p in (out, md):
        if p is not None and p.exists() and not overwrite:
            raise TransferkitError(f"{p} already exists; pass --overwrite to replace it or choose another --output")
    loaded = [_as_run(r) for r in runs]  # fail fast on a bad folder, before any slow work
    names = [r.name for r in loaded]
    if len(set(names)) < len(names):  # runs/a/seed0 and runs/b/seed0: tell them apart by their parent
        for r in loaded:
            if names.count(r.path.name) > 1:
                r.label = f"{r.path.resolve().parent.name}/{r.path.name}"
        names = [r.name for r in loaded]
    sections = [run_section(r, confusion, tsne, device, tsne_points=tsne_points, seed=seed) for r in loaded]
    comparison = compare_runs(loaded)
    title = title or ("Report: " + ", ".join(names) if len(names) <= 3 else f"Report: {len(names)} runs")
    write_text(out, _html(sections, comparison, title))
    written: list[Path] = []
    if md is not None:
        assets: dict[tuple[int, str], str] = {}
        for i, sec in enumerate(sections):
            for f in sec.figures:
                p = assets_dir / f"{i:02d}_{_slug(sec.run.name)}_{f.key}.png"
                write_bytes(p, f.png)
                written.append(p)
                assets[(i, f.key)] = f"{assets_dir.name}/{p.name}"
        write_text(md, _markdown(sections, comparison, title, assets))
    return ReportFiles(out, md, written, sections, comparison)


def write_bytes(path: Path, data: bytes) -> Path:
    from ..io import atomic_write

    return atomic_write(path, lambda p: p.write_bytes(data))
