"""`python -m benchmarks.zoo build --out DIR [--seed 0] [--scale full|tiny]`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import typer

from benchmarks.zoo.build import build
from benchmarks.zoo.evaluate import zoo_report
from registry.errors import TaskvecError

app = typer.Typer(help="Build the offline pico zoo.", no_args_is_help=True, add_completion=False)


@app.callback()
def _root() -> None:
    """Subcommands of the pico zoo builder."""


@app.command("build")
def build_cmd(
    out: Path = typer.Option(..., "--out", help="Output folder."),
    seed: int = typer.Option(0, "--seed", help="Master seed (same seed, byte-identical files)."),
    scale: str = typer.Option("full", "--scale", help="full (demo) or tiny (tests)."),
    workers: int | None = typer.Option(None, "--workers", help="Fine-tuning processes (default 2)."),
) -> None:
    """Build (or reuse) a zoo under OUT and print where it is."""
    started = time.perf_counter()
    try:
        build(out=out, seed=seed, scale=scale, workers=workers)
    except TaskvecError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    typer.echo(f"zoo ready at {out} ({time.perf_counter() - started:.1f}s)")


@app.command("report")
def report_cmd(
    zoo: Path = typer.Option(..., "--zoo", help="A built zoo folder."),
) -> None:
    """Validation scores: base vs each target, and target + lambda * tau per candidate (last line JSON)."""
    torch.set_num_threads(1)
    report = zoo_report(zoo=zoo)
    for task, entry in report.items():
        typer.echo(f"{task}: base {entry['base']:.1f}  target {entry['target']:.1f}")
        for repo, scores in entry["candidates"].items():
            mark = "*" if repo in entry["helpers"] else " "
            cells = "  ".join(f"l={lam}: {s:.1f}" for lam, s in scores.items())
            typer.echo(f"  {mark} + {repo:40s} {cells}")
        cells = "  ".join(f"l={lam}: {s:.1f}" for lam, s in entry["helpers_sum"].items())
        typer.echo(f"  * + all helpers together{'':18s}{cells}")
    typer.echo(json.dumps(report))


if __name__ == "__main__":
    app()
