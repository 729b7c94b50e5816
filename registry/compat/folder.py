"""The registry's checks on one model folder given by path, whoever names it.

`taskvec eval --model`, `merge --base/--target/--add`, export, screening and the study load folders through
`check_folder` (by way of `search.scoring.models.load_seq2seq` and `search.vectors.checkpoint.Checkpoint`),
so a folder the registry would refuse is refused the same way, with the same reason, before any weights
are allocated. It runs the checks of `check_repo` that need no base, on the same code:

1. links resolved, and required to stay inside the repo (`check_links`; `registry.sources.local.list_folder`);
2. `config.json` parses, is T5, and its shape fields have the right types and bounds (`check_t5_config`);
3. safetensors headers are sane and fit their files (`read_layout`), and the weights hold what the config
   describes (`check_layout_config`).

Pickle-only weights have no header to read: they are loaded as the registry's `--verify-pickles` loads
them (`load_pickled_state`: `weights_only=True`, so no code runs; memory-mapped for torch's zip format, so
no tensor bytes are read) and the loaded shapes are checked against the config the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.compat.config import architecture_of, check_t5_config, parse_config
from registry.compat.lineage import load_pickled_state
from registry.compat.tensors import SafetensorsLayout, check_layout_config, normalized_shapes, read_layout
from registry.compat.verdicts import REASON_MALFORMED, Reject
from registry.constants import CONFIG_NAME, PYTORCH_INDEX, PYTORCH_SINGLE
from registry.errors import ModelError, RegistryError
from registry.sources import RepoInfo
from registry.sources.local import FolderSource


@dataclass(frozen=True)
class FolderReport:
    """A model folder that passed `check_folder`, with what the checks read.

    Attributes:
        folder: the folder as given (not resolved).
        files: relative path -> size (links inside the repo resolved).
        config: `config.json`.
        shape_config: its shape-defining fields, T5Config's defaults filled in, types and bounds checked.
        architecture: the first of `architectures`, if any.
        layout: the safetensors tensors from the headers; None for pickle-only weights.
        pickled: for pickle-only weights, the state dict (all shards, memory-mapped where possible);
            None for safetensors.
    """

    folder: Path
    files: Mapping[str, int]
    config: Mapping[str, object]
    shape_config: Mapping[str, object]
    architecture: str | None
    layout: SafetensorsLayout | None
    pickled: Mapping[str, Any] | None = field(default=None, repr=False)

    @property
    def pickle(self) -> bool:
        """The weights are `pytorch_model.bin` (or its shards) only."""
        return self.layout is None


def check_links(info: RepoInfo) -> None:
    """Refuse a repo holding a link that points outside it or nowhere (loaders would follow it unchecked).

    Raises:
        Reject: `malformed`, naming the first such link and where it points.
    """
    for rel, why in info.unsafe_links.items():
        raise Reject(REASON_MALFORMED, f"{rel} {why}")


def check_folder(path: str | Path) -> FolderReport:
    """Run the registry's base-free checks on a model folder, reading small files and weight headers only
    (a pickle is unpickled with `weights_only=True`, memory-mapped where torch's format allows).

    Args:
        path: the model folder.

    Returns:
        What the checks read.

    Raises:
        ModelError: one line, `<folder>: <reason>`, the reason as the registry would record it
            (`malformed: ...`, `not_t5: ...`, `integrity: ...`, `tensor_mismatch: ...`).
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such model folder")
    source = FolderSource(folder)
    try:
        info = source.repo_info()
        check_links(info)
        if CONFIG_NAME not in info.files:
            raise Reject(REASON_MALFORMED, f"no {CONFIG_NAME} in the repo")
        config = parse_config(folder.name, source.read_file(info.repo_id, info.revision, CONFIG_NAME))
        shapes = check_t5_config(config)
        tied = bool(shapes["tie_word_embeddings"])
        layout, pickled = read_layout(source, info), None
        if layout is not None:
            check_layout_config(normalized_shapes(layout, tied=tied), shapes)
        elif PYTORCH_SINGLE not in info.files and PYTORCH_INDEX not in info.files:
            raise Reject(REASON_MALFORMED, "no weights (neither safetensors nor pytorch_model.bin)")
        else:
            pickled = load_pickled_state(source, info)
            check_layout_config(
                normalized_shapes({k: tuple(t.shape) for k, t in pickled.items()}, tied=tied), shapes
            )
    except Reject as exc:
        raise ModelError(f"{folder}: {exc}") from exc
    except RegistryError as exc:  # the folder source's refusals already name the folder
        raise ModelError(str(exc)) from exc
    except OSError as exc:  # unreadable (permissions) or changed while read
        raise ModelError(f"{folder}: cannot read {exc.filename or 'a file'} ({exc.strerror or exc})") from exc
    return FolderReport(
        folder=folder,
        files=dict(info.files),
        config=config,
        shape_config=shapes,
        architecture=architecture_of(config),
        layout=layout,
        pickled=pickled,
    )
