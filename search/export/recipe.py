"""The recipe: everything that fixes a merged model, pinned, as YAML that rebuilds it byte for byte.

`Recipe` = base and target (repo@revision), ingredients (repo@revision, lambda), method and options. A Hub
repo is pinned by its commit sha, a local folder by its content sha (`registry.sources.local.content_sha`),
checked again when a recipe is replayed. `parse_addition`/`parse_options` read `taskvec merge`'s
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
    """A checkpoint pinned to a revision: a Hub repo id (or a local folder's path) and its sha."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    repo_id: str = Field(min_length=1)
    revision: str = Field(min_length=1)


class Ingredient(Ref):
    """A candidate and its coefficient lambda (negative: forgetting, analogies)."""

    coefficient: float


class Recipe(BaseModel):
    """Everything that fixes a merged model: theta_T + method({tau_i = theta_i - theta_base}, {lambda_i})."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base: Ref
    target: Ref
    ingredients: tuple[Ingredient, ...] = ()
    method: str = "task_arithmetic"
    method_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        get_method(value)
        return value

    def to_yaml(self) -> str:
        """The recipe as YAML (stable key order, so the same recipe gives the same bytes)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

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
