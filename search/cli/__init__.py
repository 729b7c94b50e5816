"""The `taskvec` command line: one module per command group, options in `_options`, tables in `_render`.

Start-up: every module here imports only typer, rich and the registry's light modules at its top; each
command imports the search stage it runs inside its body, because those stages import torch (with
transformers, optuna and sklearn): `taskvec --help` takes 0.22 s, where `import search.study` alone takes
4.6 to 9 s (2-core dev box, median wall). Option defaults are read from their owners as late
(`_options.Default`).
"""

from search.cli.app import app, main

__all__ = ["app", "main"]
