"""Options shared by the commands, each defined once, and defaults read from the objects that own them.

An option alias (`Annotated`, as huggingface_hub's CLI does) fixes an option's flag, type and help; the
command's signature gives its default, read from the config or function it is passed to
(`top_k: TopKOpt = SEARCH.top_k`), so no default is restated here. Those owners import torch, so a default
is looked up only when a command runs or shows its help (see `search.cli`).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from registry.constants import ENV_DATA, ENV_DEVICE
from search.cli._config import load_config_file


class Default:
    """The default of parameter `name` of `owner` ("module:attribute": a dataclass or a function).

    Click calls a callable default when the option is left out, and typer's help shows `str()` of one
    that is not a plain function: both look the owner up then, never when the app is built.
    """

    def __init__(self, owner: str, name: str, *, convert: Callable[[Any], Any] | None = None) -> None:
        self.owner, self.name, self.convert = owner, name, convert

    def map(self, convert: Callable[[Any], Any]) -> Default:
        """The same default as the option takes it (e.g. a tuple of numbers as comma-separated text)."""
        return Default(self.owner, self.name, convert=convert)

    def __call__(self) -> Any:
        module, _, attribute = self.owner.partition(":")
        obj = getattr(importlib.import_module(module), attribute)
        if dataclasses.is_dataclass(obj):
            field = {f.name: f for f in dataclasses.fields(obj)}[self.name]
            has_factory = field.default_factory is not dataclasses.MISSING
            value = field.default_factory() if has_factory else field.default
        else:
            value = inspect.signature(obj).parameters[self.name].default
        return value if self.convert is None else self.convert(value)

    def __str__(self) -> str:  # the help's "[default: ...]"; None (not given) shows nothing
        value = self()
        return "" if value is None else str(value)

    def __bool__(self) -> bool:  # the help of an on/off flag shows the side the default is on
        return bool(self())

    def __repr__(self) -> str:
        return f"Default({self.owner!r}, {self.name!r})"


class Defaults:
    """`Defaults("search.study:SearchConfig").top_k` is `Default("search.study:SearchConfig", "top_k")`."""

    def __init__(self, owner: str) -> None:
        self._owner = owner

    def __getattr__(self, name: str) -> Default:
        if name.startswith("_"):
            raise AttributeError(name)
        return Default(self._owner, name)


SEARCH = Defaults("search.study:SearchConfig")
SCREEN = Defaults("search.screen:screen")
HELPFUL = Defaults("search.screen:helpful_for")
FINETUNE = Defaults("search.finetune:finetune")
EVALUATE = Defaults("search.scoring.evaluate:evaluate")
MERGE = Defaults("search.export:merge")
REFRESH = Defaults("search.leaderboard:refresh_heldout")
EXPORT = Defaults("search.export:export_trial")

# --- where things are ------------------------------------------------------------------------------------

DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="taskvec database URL (default: TASKVEC_DB, else SQLite under TASKVEC_HOME)."),
]
StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage", help="Optuna storage URL (default: TASKVEC_STORAGE, else SQLite under TASKVEC_HOME)."
    ),
]
# The environment is read by click (flag > TASKVEC_DATA > --config file > default), and `search` without any
# of them reuses the folder its screenings were made on.
DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        envvar=ENV_DATA,
        show_envvar=True,
        help="Local GLUE parquet folder (default: the Hub; search: where its screenings were made).",
    ),
]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir", help="Folder of taskvec's caches (task vectors in DIR/vectors; default: TASKVEC_HOME)."
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        is_eager=True,  # read before the other options, whose defaults it sets (flags still win)
        callback=load_config_file,
        help="YAML file of this command's options (keys as the flags: top-k or top_k); flags override it.",
    ),
]
RevisionOpt = Annotated[
    str | None, typer.Option("--revision", help="Hub revision (branch, tag or commit) of the model.")
]
StudyOpt = Annotated[str, typer.Option("--study", help="Study name (as `taskvec search` printed it).")]

# --- what is scored --------------------------------------------------------------------------------------

TaskOpt = Annotated[str, typer.Option("--task", help="mrpc, rte, cola or sst2.")]
TargetOpt = Annotated[
    str,
    typer.Option(
        "--target",
        help="Target repo id as synced into the registry, or its folder (multi-task: usually the base).",
    ),
]
SearchSizeOpt = Annotated[
    int | None, typer.Option("--search-size", min=1, help="Examples in the search split.")
]
SearchFromOpt = Annotated[
    str,
    typer.Option(
        "--search-from",
        help="train: search split from GLUE train, held-out = validation; validation: search on one "
        "stratified half of validation, held-out = the other (for a target that may have seen train).",
    ),
]
MethodOpt = Annotated[str, typer.Option("--method", help="task_arithmetic | ties | dare.")]
MethodOptionOpt = Annotated[
    list[str],
    typer.Option("--option", help="Method option KEY=VALUE, repeatable (ties: density; dare: p, seed)."),
]

# --- where and how precisely models run (search.scoring.device) -----------------------------------------

DeviceOpt = Annotated[
    str | None,
    typer.Option(
        "--device",
        envvar=ENV_DEVICE,
        show_envvar=True,
        help="auto (CUDA when available, else the CPU), cpu, cuda, cuda:N or mps.",
    ),
]
DtypeOpt = Annotated[
    str,
    typer.Option(
        "--dtype",
        help="Scoring precision: auto (bf16 autocast on CUDA, fp32 elsewhere), fp32, bf16, fp16 (GPUs only); "
        "weights stay fp32.",
    ),
]

# --- output ----------------------------------------------------------------------------------------------

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
CsvOpt = Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")]
