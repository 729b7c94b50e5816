"""`python -m benchmarks.zoo build --out DIR [--seed 0] [--scale full|tiny]`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import typer

from benchmarks.zoo.build import build, load_manifest
from benchmarks.zoo.evaluate import zoo_report
from benchmarks.zoo.numerics import kernels_fingerprint, reexec_pinned
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
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Build (or reuse) a zoo under OUT and print where it is."""
    started = time.perf_counter()
    try:
        build(out=out, seed=seed, scale=scale, workers=workers, progress=not quiet)
    except TaskvecError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:  # a folder that cannot be written: one line, as for the product's commands
        typer.echo(f"error: {exc.filename or out}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    typer.echo(f"zoo ready at {out} ({time.perf_counter() - started:.1f}s)")


@app.command("report")
def report_cmd(
    zoo: Path = typer.Option(..., "--zoo", help="A built zoo folder."),
) -> None:
    """Held-out scores: base, target, best single, best pair, all helpers added; multi-task (last line JSON)."""
    torch.set_num_threads(1)
    report = zoo_report(zoo=zoo)
    kernels = load_manifest(zoo).get("kernels", "not recorded")
    typer.echo(f"zoo built on float kernels {kernels} (this machine's: {kernels_fingerprint()})")
    report["kernels"] = kernels
    for task, e in report["tasks"].items():
        single, pair, add_all = e["best_single"], e["best_pair"], e["add_all"]
        typer.echo(f"{task}: base {e['base']:.1f}  target {e['target']:.1f}")
        typer.echo(f"  best single  {single['score']:5.1f}  {single['repo']} x{single['lambda']}")
        cells = " + ".join(f"{r} x{lam}" for r, lam in zip(pair["repos"], pair["lambdas"], strict=True))
        typer.echo(f"  best pair    {pair['score']:5.1f}  {cells}")
        cells = " + ".join(f"{r.split('/')[-1]} x{lam}" for r, lam in add_all["lambdas"].items())
        typer.echo(f"  all helpers  {add_all['score']:5.1f}  {cells}")
    for task, m in report["multitask"].items():
        typer.echo(
            f"multitask {task}: base {m['base']:.1f}  {m['repo']} alone {m['alone']:.1f}"
            f"  naive sum of all four {m['naive_sum']:.1f}"
        )
    typer.echo(json.dumps(report))


if __name__ == "__main__":
    reexec_pinned("benchmarks.zoo")  # the report's scores too, not only the build, are the same everywhere
    app()
