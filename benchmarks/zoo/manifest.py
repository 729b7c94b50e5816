"""The zoo's manifest `zoo.json`: every repo with its role, data, seed and the verdict the registry should give."""

from __future__ import annotations

import json
import os
from pathlib import Path

from benchmarks.zoo.data import Dataset
from benchmarks.zoo.finetunes import MULTITASK
from benchmarks.zoo.numerics import kernels_fingerprint
from benchmarks.zoo.world import BASE_REPO, ZOO_VERSION, World
from search.errors import DataError


def write_manifest(world: World, *, scale_name: str, datasets: list[Dataset]) -> None:
    """Write `zoo.json` (repos sorted by id, so the file does not depend on which process finished first)."""
    manifest = {
        "seed": world.seed,
        "scale": scale_name,
        "version": ZOO_VERSION,
        # Which float kernels trained it: another machine with another fingerprint builds another zoo.
        "kernels": kernels_fingerprint(),
        "base": BASE_REPO,
        "targets": {t: f"pico/t5-pico-{t}" for t in ("cola", "sst2", "mrpc", "rte")},
        # The multi-task stage's fine-tunes, one per task (role `multitask`, not single-task candidates).
        "multitask": dict(MULTITASK),
        "datasets": {
            f"{d.name}/{d.task}": {"path": d.relpath, "task": d.task, "description": d.description}
            for d in datasets
        },
        "repos": dict(sorted(world.manifest.items())),
    }
    path = world.out / "zoo.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def load_manifest(zoo: Path) -> dict:
    """The `zoo.json` of a built zoo.

    Raises:
        DataError: if it is missing or malformed.
    """
    path = Path(zoo) / "zoo.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataError(
            f"{path}: no zoo manifest (build it with `python -m benchmarks.zoo build --out {zoo}`)"
        ) from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON ({exc.msg})") from exc
