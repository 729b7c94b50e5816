"""The recipe: everything that fixes a merged model, pinned, as YAML that rebuilds it byte for byte.

`Recipe` = base and target (repo@revision), ingredients (repo@revision, lambda), method and options. A Hub
repo is pinned by its commit sha, a local folder by its content sha (`registry.sources.local.content_sha`),
checked again when a recipe is replayed. Each reference also records its `source` (the Hub endpoint URL,
or the folder it was read from), so `taskvec merge --recipe` rebuilds without the database that found it.
An exported leaderboard row carries its `result` (task, study, trial, scores on both splits, the held-out
gain's interval): it fixes nothing in the weights, but the model card is written from it, so a rebuild
from the recipe alone writes the same card. `parse_addition`/`parse_options` read `taskvec merge`'s
`--add REPO=COEF` and `--option KEY=VALUE`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from registry.errors import ModelError
from search.vectors.methods import get_method

RECIPE_FILE = "recipe.yaml"


class Ref(BaseModel):
    """A checkpoint pinned to a revision: a Hub repo id (or a local folder's path), its sha and its source.

    `source` is a Hub endpoint URL (`https://huggingface.co`, a mirror) or the absolute path of the folder
    holding exactly that revision; None in recipes written before sources were recorded (those are found
    through the registry, then the Hub).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    repo_id: str = Field(min_length=1)
    revision: str = Field(min_length=1)
    source: str | None = Field(default=None, min_length=1)


class Ingredient(Ref):
    """A candidate and its coefficient lambda (negative: forgetting, analogies)."""

    coefficient: float


class Interval(BaseModel):
    """A gain's paired bootstrap interval, as a leaderboard row stores it (`gain_ci`), in points x100."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    gain: float
    lo: float
    hi: float
    level: float
    resamples: int
    method: str = "paired-bootstrap-percentile"
    n: dict[str, int] = Field(default_factory=dict)


class TaskScores(BaseModel):
    """One task's scores (its metric x100) on both splits, for the composition and for its target."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str
    metric: str  # the task's metric key: `accuracy`, `mcc` or `f1_acc` (`search.tasks.glue.METRIC_NAMES`)
    search: float | None = None
    heldout: float | None = None
    target_search: float | None = None
    target_heldout: float | None = None


class Result(BaseModel):
    """What the leaderboard knew of an exported row: where it came from and how it scored.

    Attributes:
        task: the row's task (`a,b` for a multi-task row).
        study, trial: the study and trial number (`taskvec export --study STUDY#TRIAL`).
        objective: how the tasks' scores were combined (`score` for a single task).
        data: where the splits came from: `hub` (GLUE on the Hub) or a GLUE-layout folder.
        search_split, heldout_split: what each split is, in words (`200 examples, a stratified sample of GLUE train`).
        score_search, score_heldout: the objective on each split (held-out None until scored).
        target_score_search, target_score_heldout: the target's, on the same examples.
        gain_ci: the held-out gain's paired bootstrap interval (None until held-out scoring stored it).
        tasks: every task's own scores.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str
    study: str
    trial: int
    objective: str = "score"
    data: str = "hub"
    search_split: str
    heldout_split: str
    score_search: float
    score_heldout: float | None = None
    target_score_search: float | None = None
    target_score_heldout: float | None = None
    gain_ci: Interval | None = None
    tasks: tuple[TaskScores, ...] = ()


class Recipe(BaseModel):
    """Everything that fixes a merged model: theta_T + method({tau_i = theta_i - theta_base}, {lambda_i}).

    `result` (an exported leaderboard row's provenance and scores) does not change the weights.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    base: Ref
    target: Ref
    ingredients: tuple[Ingredient, ...] = ()
    method: str = "task_arithmetic"
    method_options: dict[str, Any] = Field(default_factory=dict)
    result: Result | None = None

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        get_method(value)
        return value

    def to_yaml(self) -> str:
        """The recipe as YAML (stable key order, so the same recipe gives the same bytes; unset fields left out)."""
        data = self.model_dump(mode="json", exclude_none=True)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

    def same_model(self, other: Recipe) -> bool:
        """Whether both recipes give the same weights (sources and `result` aside)."""
        return self._weights_key() == other._weights_key()

    def _weights_key(self) -> tuple:
        keep = {"repo_id", "revision", "coefficient"}
        refs = [r.model_dump(include=keep) for r in (self.base, self.target, *self.ingredients)]
        return refs, self.method, self.method_options

    @classmethod
    def load(cls, path: Path) -> Recipe:
        """Read a `recipe.yaml`.

        Raises:
            ModelError: if the file is missing, not YAML, or not a valid recipe.
        """
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError as exc:
            raise ModelError(f"{path}: no such recipe file") from exc
        except yaml.YAMLError as exc:
            raise ModelError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "recipe"
            raise ModelError(f"{path}: invalid recipe ({where}: {first['msg']})") from exc


def parse_addition(text: str) -> tuple[str, float]:
    """`REPO_OR_PATH=COEF` -> (repo or path, coefficient); the last `=` splits, so paths may hold `=`.

    Raises:
        ModelError: if there is no `=` or the coefficient is not a finite number.
    """
    name, sep, coef = text.rpartition("=")
    if not sep or not name:
        raise ModelError(f"--add {text!r}: expected REPO_OR_PATH=COEF (e.g. org/model=0.5)")
    try:
        value = float(coef)
    except ValueError:
        raise ModelError(f"--add {text!r}: coefficient {coef!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ModelError(f"--add {text!r}: coefficient must be finite")
    return name, value


def parse_options(items: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` method options; values parsed as YAML scalars (numbers stay numbers).

    Raises:
        ModelError: for an item without `=`.
    """
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ModelError(f"--option {item!r}: expected KEY=VALUE (e.g. density=0.2)")
        options[key] = yaml.safe_load(value)
    return options
