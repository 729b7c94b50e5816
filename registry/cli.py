"""`taskvec registry ...` and `taskvec db ...`: thin wrappers over registry functions."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Index compatible T5 checkpoints from the Hub or a local folder.", no_args_is_help=True
)
db_app = typer.Typer(help="The taskvec database (schema migrations).", no_args_is_help=True)
