"""What every step of a zoo build shares: the builder's constants, the build scales, and the world in progress."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ZOO_VERSION = 8  # bump when outputs change: caches of older builders are rebuilt
STAMP = ".complete"
BASE_REPO = "pico/t5-pico"
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Scale:
    """Sizes of one build scale."""

    glue_rows: tuple[int, int, int]  # train, validation, test
    aux_rows: tuple[int, int, int]
    corpus: int
    pretrain_steps: int
    target_steps: int
    candidate_steps: int
    decoy_steps: int


SCALES = {
    "full": Scale((2000, 600, 300), (3000, 300, 100), 20000, 1500, 300, 300, 60),
    "tiny": Scale((800, 200, 50), (1500, 100, 20), 8000, 800, 300, 250, 20),
}


@dataclass
class World:
    """A build in progress: where it goes, its seed and scale, and what the steps have made so far."""

    out: Path
    seed: int
    scale: Scale
    frames: dict[str, dict] = field(default_factory=dict)  # relpath -> {split: DataFrame}
    corpus: list[str] = field(default_factory=list)
    manifest: dict[str, dict[str, Any]] = field(default_factory=dict)

    def repo_dir(self, repo: str) -> Path:
        """The folder of `repo` in the zoo's Hub-like `hub/`."""
        return self.out / "hub" / repo

    def record(self, repo: str, **info: Any) -> None:
        """Add `repo`'s manifest entry (its path first, then `info` in the order given)."""
        self.manifest[repo] = {"path": f"hub/{repo}", **info}
