"""Shared helpers for benchmark scripts: the results schema, timing, tables.

Results follow the schema every benchmark shares:
``{"benchmark", "commit", "machine", "command", "rows": [{"task", "method", "metric",
"mean", "std", "seeds", "selection", "wall_s"}], "ratios": [{"name", "value", "detail"}]}``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} threads), {dev}, Python {platform.python_version()}"


def row(task: str, method: str, values: list[float], wall_s: float, selection: str = "last", metric: str = "accuracy") -> dict[str, Any]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"task": task, "method": method, "metric": metric, "mean": round(mean, 3), "std": round(std, 3),
            "seeds": [round(v, 3) for v in values], "selection": selection, "wall_s": round(wall_s, 1)}


def ratio(name: str, value: float, detail: str) -> dict[str, Any]:
    return {"name": name, "value": round(float(value), 3), "detail": detail}


def write_results(name: str, rows: list[dict[str, Any]], ratios: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"benchmark": name, "commit": commit(), "machine": machine(),
           "command": "python " + " ".join(sys.argv), "rows": rows, "ratios": ratios, **(extra or {})}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    return path


def markdown_table(rows: list[dict[str, Any]], published: dict[tuple[str, str], str] | None = None) -> str:
    head = "| task | method | selection | mean ± std | seeds | wall s |" + (" published |" if published else "")
    sep = "|---|---|---|---|---|---|" + ("---|" if published else "")
    lines = [head, sep]
    for r in rows:
        seeds = ", ".join(f"{s:.2f}" for s in r["seeds"])
        line = f"| {r['task']} | {r['method']} | {r['selection']} | {r['mean']:.2f} ± {r['std']:.2f} | {seeds} | {r['wall_s']:.0f} |"
        if published:
            line += f" {published.get((r['task'], r['method']), '')} |"
        lines.append(line)
    return "\n".join(lines) + "\n"
