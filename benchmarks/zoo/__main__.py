"""`python -m benchmarks.zoo build --out DIR [--seed 0] [--scale full|tiny]`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

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
) -> None:
    """Build (or reuse) a zoo under OUT and print where it is."""
    from benchmarks.zoo import build

    started = time.perf_counter()
    try:
        build(out=out, seed=seed, scale=scale)
    except TaskvecError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    typer.echo(f"zoo ready at {out} ({time.perf_counter() - started:.1f}s)")


if __name__ == "__main__":
    app()
