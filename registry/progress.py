"""Progress bars on stderr, so that stdout holds only a command's results (`taskvec screen > file`).

The one home of the bars every stage draws (sync, screen, search, eval, fine-tuning): registry is the
lowest stage, so search and benchmarks import it without breaking the stage order.
"""

from __future__ import annotations

import os

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# huggingface_hub's and transformers' own output, read by them at import: their tqdm bars ("Loading weights"
# on every model load, one per downloaded file) and notices would interleave with ours on stderr.
ENV_HUB_BARS_OFF = "HF_HUB_DISABLE_PROGRESS_BARS"
ENV_TRANSFORMERS_VERBOSITY = "TRANSFORMERS_VERBOSITY"
QUIET_LIBRARIES = {ENV_HUB_BARS_OFF: "1", ENV_TRANSFORMERS_VERBOSITY: "error"}

# rich estimates the speed (hence the ETA) from the last 30 s of updates by default: a trial or a candidate
# can take longer than that, which would leave the ETA unknown most of the time.
SPEED_WINDOW_S = 900.0


def quiet_libraries_by_default() -> None:
    """Silence the libraries' bars and notices for this process and its children, before they are imported;
    a variable the user set keeps its value (`TRANSFORMERS_VERBOSITY=info` to see transformers' notices)."""
    for name, value in QUIET_LIBRARIES.items():
        os.environ.setdefault(name, value)


def stderr_console() -> Console:
    """A console on stderr (resolved when it writes, so a redirected or captured stderr is honoured)."""
    return Console(stderr=True)


def counted_columns(
    description: str, *, eta: bool = False, extra: tuple[ProgressColumn, ...] = ()
) -> tuple[ProgressColumn, ...]:
    """`description`, a bar, done/total and the elapsed time; with `eta`, the time remaining too (it
    matters for long runs: a search under `--timeout 8h`, a Hub-scale screening); then `extra`."""
    columns = (TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    if eta:  # labelled: two bare times side by side would be ambiguous
        columns += (TextColumn("eta"), TimeRemainingColumn())
    return (*columns, *extra)


def progress_bar(*columns: ProgressColumn | str, enabled: bool = True, transient: bool = False) -> Progress:
    """A rich `Progress` drawn on stderr (`enabled=False`: draws nothing; no columns: rich's defaults)."""
    return Progress(
        *columns,
        console=stderr_console(),
        disable=not enabled,
        transient=transient,
        speed_estimate_period=SPEED_WINDOW_S,
    )
