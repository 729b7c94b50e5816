"""`--config run.yaml`: a command's options from a YAML file, validated with pydantic; flags override it.

One file serves `screen` and `search` alike: a top-level key sets that option of every command that has it
(`task`, `target`, `data`, `search-size`, ...), and a section named after a command (`search:`, `screen:`)
holds options of that command only. Keys are the flags without their dashes, `top-k` or `top_k`.

The file becomes click's `default_map`, so the usual precedence holds: a flag on the command line, then an
environment variable (`TASKVEC_DATA`), then the file, then the built-in default. A key no command knows, or a
value of the wrong type, is one line naming the file and the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from search.errors import SearchError

# Keys of the file that are not options of a command: its sections.
_SECTIONS = ("screen", "search")
# Options a file may not set: the file itself, and output switches that belong to one invocation.
_NOT_IN_FILE = frozenset({"config_file", "as_json", "as_csv"})


def _key(name: str) -> str:
    return name.lstrip("-").replace("-", "_")


def option_keys(command: Any) -> dict[str, Any]:
    """File key -> the option it sets: each long flag (`top_k` for `--top-k`) and the parameter's name."""
    keys: dict[str, Any] = {}
    for param in command.params:
        if param.param_type_name != "option" or param.name in _NOT_IN_FILE:
            continue
        keys[param.name] = param
        for flag in param.opts:
            if flag.startswith("--"):
                keys[_key(flag)] = param
    return keys


def _python_type(param: Any) -> Any:
    """The type pydantic checks a file value against: the option's own annotation (typer's descriptor)."""
    kind = param.type_descriptor.annotation
    return kind if param.multiple else kind | None


def _comma_joined(value: Any) -> Any:
    """A YAML list given for a comma-separated option (`tasks: [mrpc, rte]`, `lambdas: [0.1, 0.5]`)."""
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return ",".join(str(v) for v in value)
    return value


def _validate(
    path: Path, *, where: str, values: dict[str, Any], keys: dict[str, Any], shown: dict[str, str]
) -> dict:
    """Values keyed by parameter name, checked with a pydantic model of the command's options.

    Args:
        path: the file (for messages).
        where: the command.
        values: file key (normalised) -> value.
        keys: file key -> the option it sets (`option_keys`).
        shown: file key -> as the file spells it, with its section (`search.top-k`).
    """
    # Lazy: pydantic costs ~0.3 s to import and only a command given --config needs it (`--help` must not).
    from pydantic import BeforeValidator, ConfigDict, Field, ValidationError, create_model

    fields: dict[str, Any] = {}
    for i, (key, param) in enumerate(keys.items()):
        kind = _python_type(param)
        if kind == str | None:
            kind = Annotated[kind, BeforeValidator(_comma_joined)]
        # Field names of our own, the file's key as alias: a key may shadow a BaseModel attribute.
        bounds = {"ge": param.min, "le": param.max} if not param.multiple else {}
        bounds = {k: v for k, v in bounds.items() if v is not None}
        fields[f"option_{i}"] = (kind, Field(default=None, alias=key, **bounds))
    model = create_model(f"taskvec {where}", __config__=ConfigDict(extra="forbid"), **fields)
    attribute = {key: f"option_{i}" for i, key in enumerate(keys)}
    try:
        checked = model.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else ""
        raise SearchError(f"{path}: {shown.get(key, key)}: {error['msg']}") from exc
    out: dict[str, Any] = {}
    for key in values:
        name = keys[key].name
        if name in out:
            raise SearchError(f"{path}: {shown[key]} sets --{name.replace('_', '-')} a second time")
        out[name] = getattr(checked, attribute[key])
    return out


def read_file(path: Path) -> dict[str, Any]:
    """The YAML mapping in `path`.

    Raises:
        SearchError: unreadable file, bad YAML, or not a mapping (one line naming the file).
    """
    import yaml  # lazy with pydantic above: only --config reads YAML

    try:
        data = yaml.safe_load(Path(path).expanduser().read_text())
    except OSError as exc:
        raise SearchError(f"{path}: cannot read the config file ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise SearchError(f"{path}: not valid YAML{at} ({getattr(exc, 'problem', None) or exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SearchError(f"{path}: a config file is a mapping of option: value, not a {type(data).__name__}")
    return {str(k): v for k, v in data.items()}


def file_defaults(path: Path, *, command: Any, others: dict[str, Any]) -> dict[str, Any]:
    """The options `path` sets for `command`, by parameter name.

    Args:
        path: the YAML file.
        command: the command run (`search`, `screen`).
        others: every command that takes `--config`, by name (a top-level key must be one's option).

    Raises:
        SearchError: an unknown key, a wrong type, a section that is not a mapping (one line each).
    """
    data = read_file(path)
    mine = option_keys(command)
    known = {key for other in others.values() for key in option_keys(other)}
    top: dict[str, Any] = {}
    shown: dict[str, str] = {}
    for key, value in data.items():
        if key in _SECTIONS:
            continue
        norm = _key(key)
        if norm not in known:
            raise SearchError(f"{path}: unknown key {key!r} (not an option of taskvec {' or '.join(others)})")
        if norm in top:
            raise SearchError(f"{path}: {key!r} repeats {shown[norm]!r}")
        if norm in mine:
            top[norm], shown[norm] = value, key
    values = _validate(path, where=command.name or "", values=top, keys=mine, shown=shown)
    section = data.get(command.name or "")
    if section is not None:
        if not isinstance(section, dict):
            raise SearchError(f"{path}: {command.name}: expected a mapping of option: value")
        inner = {_key(str(k)): v for k, v in section.items()}
        shown = {_key(str(k)): f"{command.name}.{k}" for k in section}
        unknown = [k for k in inner if k not in mine]
        if unknown:
            raise SearchError(f"{path}: unknown key {shown[unknown[0]]!r} for taskvec {command.name}")
        values.update(_validate(path, where=command.name or "", values=inner, keys=mine, shown=shown))
    return values


def load_config_file(ctx: typer.Context, _param: Any, value: Path | None) -> Path | None:
    """The eager `--config` callback: the file's options become the command's defaults (flags win)."""
    if value is None:
        return None
    root = ctx.find_root().command
    commands = getattr(root, "commands", {}) or {ctx.command.name: ctx.command}
    others = {
        name: cmd
        for name, cmd in commands.items()
        if any(p.name == "config_file" for p in getattr(cmd, "params", ()))
    }
    ctx.default_map = {**(ctx.default_map or {}), **file_defaults(value, command=ctx.command, others=others)}
    return value


# SearchConfig field -> the `search` option that sets it (a printed config is a file `--config` reads back).
_SEARCH_OPTIONS = {
    "task": "task",
    "target": "target",
    "objective": "objective",
    "references": "reference",
    "controls": "control",
    "data_dir": "data",
    "top_k": "top-k",
    "min_gain": "min-gain",
    "n_trials": "trials",
    "timeout_s": "timeout",
    "method": "method",
    "method_options": "option",
    "sampler": "sampler",
    "study_name": "study",
    "storage": "storage",
    "db_url": "db",
    "pruning": "pruning",
    "pruner": "pruner",
    "seed": "seed",
    "heldout_top_n": "heldout-top",
    "search_size": "search-size",
    "search_from": "search-from",
    "lambda_max": "lambda-max",
    "heartbeat_interval": "heartbeat",
    "grace_period": "grace",
    "vector_cache": "cache-dir",
    "device": "device",
    "dtype": "dtype",
}


def _as_option(field: str, value: Any) -> Any:
    if field == "references":
        return [f"{t}={r}" for t, r in (value or {}).items()]
    if field == "method_options":
        return [f"{k}={v}" for k, v in (value or {}).items()]
    if field == "timeout_s" and value is not None:
        return f"{float(value):g}s"
    if field == "vector_cache" and value is not None:
        return str(Path(value).parent)  # --cache-dir holds the vectors/ folder
    return value


def render_config(record: dict[str, Any], *, study: str) -> str:
    """A stored search's resolved settings as a `--config` file (settings with no flag as comments)."""
    import yaml  # lazy: see `read_file`

    options = {
        _SEARCH_OPTIONS[k]: _as_option(k, v)
        for k, v in record.items()
        if k in _SEARCH_OPTIONS and v is not None and v != [] and v != {}
    }
    rest = {k: v for k, v in record.items() if k not in _SEARCH_OPTIONS}
    lines = [f"# study {study}: the settings it was created with (taskvec search --config FILE reads them)"]
    lines.append(yaml.safe_dump({"search": options}, sort_keys=False, default_flow_style=False).rstrip())
    if rest:
        lines.append("# not options of the command (library settings, and what the search decided):")
        dumped = yaml.safe_dump(rest, sort_keys=False, default_flow_style=False).rstrip()
        lines.extend(f"# {line}" for line in dumped.splitlines())
    return "\n".join(lines) + "\n"


def study_config(*, study: str | None, storage: str | None) -> str:
    """`taskvec leaderboard --study S --config`: the stored settings of study S, as a `--config` file.

    Raises:
        SearchError: no --study, no such study, or a study from before settings were stored.
    """
    if not study:
        raise SearchError("--config prints one study's settings: give --study NAME")
    # Lazy: the study stage imports torch and optuna (seconds); only this option needs them.
    from registry.locks import sqlite_file
    from search.study import SearchConfig, open_storage
    from search.study.context import stored_config
    from search.study.storage import find_study, storage_url

    config = SearchConfig(task="", target="", storage=storage)
    url = storage_url(config)
    file = sqlite_file(url) if url.startswith("sqlite") else None
    missing = file is not None and not file.is_file()  # read-only: never creates a storage
    found = None if missing else find_study(open_storage(config), study)
    if found is None:
        raise SearchError(
            f"no study named {study!r} in the Optuna storage (give --storage, or TASKVEC_STORAGE)"
        )
    record = stored_config(found)
    if record is None:
        raise SearchError(f"study {study!r} was created before taskvec stored a study's settings")
    return render_config(record, study=study)
