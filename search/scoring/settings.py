"""What besides the weights and the data decides a score: stored with every screening and leaderboard row.

One type, written and read in one place, so a row rebuilt later (held-out refresh, export's re-scoring)
scores exactly as the row was scored; a missing key is an error, never a guessed default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from search.errors import SearchError
from search.scoring.device import dtype_name

HUB_DATA = "hub"


@dataclass(frozen=True)
class ScorerSettings:
    """Scorer settings of a row or a study.

    Attributes:
        mode: `rank` or `generate`.
        order_seed: seed of the fixed order whose prefixes are scored.
        max_input_length: input truncation.
        autocast: autocast dtype name (`bfloat16`), or None for the model's own dtype.
        label_words: the task's label words in label-id order; task -> words for several tasks.
        split_seed: seed of the stratified search split.
        data: the GLUE folder the splits came from, or `hub`.
        search_size: examples in the search split; task -> size for several tasks.
        harm_margin: screening's early-stop margin (screenings only).
        search_from: where the search split was carved from, `train` or `validation` (then the held-out
            split is validation's other half); rows and studies from before it read as `train`.
        device: the device type scored on (`cpu`, `cuda`, `mps`; the index does not change a score);
            rows and studies from before it were scored on the CPU and read as `cpu`.
    """

    mode: str
    order_seed: int
    max_input_length: int
    autocast: str | None
    label_words: list[str] | dict[str, list[str]]
    split_seed: int
    data: str
    search_size: int | dict[str, int]
    harm_margin: float | None = None
    search_from: str = "train"
    device: str = "cpu"

    @property
    def data_dir(self) -> Path | None:
        """The local GLUE folder, or None for the Hub."""
        return None if self.data in (None, HUB_DATA) else Path(self.data)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype as torch's (`bfloat16` -> `torch.bfloat16`), or None.

        Raises:
            SearchError: for a name that is not a torch floating-point dtype.
        """
        if self.autocast is None:
            return None
        dtype = getattr(torch, self.autocast, None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise SearchError(f"scorer settings: autocast {self.autocast!r} is not a torch float dtype")
        return dtype

    def scorer_kwargs(self) -> dict[str, Any]:
        """The `Scorer` keyword arguments these settings fix (see `Scorer.from_settings`)."""
        return {
            "mode": self.mode,
            "order_seed": self.order_seed,
            "max_input_length": self.max_input_length,
            "autocast_dtype": self.autocast_dtype,
        }

    def to_dict(self) -> dict[str, Any]:
        """The stored form (keys of unused options left out, as rows always stored them)."""
        out = asdict(self)
        if out["harm_margin"] is None:
            del out["harm_margin"]
        if out["search_from"] == "train":  # the stored form of every row written before it existed
            del out["search_from"]
        if out["device"] == "cpu":  # likewise: absent is the CPU, where every earlier row was scored
            del out["device"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "row") -> ScorerSettings:
        """Read the stored form.

        Raises:
            SearchError: if a key is missing (a row written by something else).
        """
        required = [f for f in cls.__dataclass_fields__ if f not in ("harm_margin", "search_from", "device")]
        missing = [k for k in required if k not in (data or {})]
        if missing:
            raise SearchError(f"{where}: scorer settings lack {', '.join(missing)}; cannot rescore it")
        return cls(
            **{k: data[k] for k in required},
            harm_margin=data.get("harm_margin"),
            search_from=data.get("search_from", "train"),
            device=data.get("device", "cpu"),
        )

    @property
    def dtype_name(self) -> str:
        """The `--dtype` name these settings score with (`fp32`, `bf16`, `fp16`)."""
        return dtype_name(self.autocast_dtype)

    @staticmethod
    def data_name(data_dir: Path | None) -> str:
        """The stored name of a data source."""
        return str(data_dir) if data_dir is not None else HUB_DATA
