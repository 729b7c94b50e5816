"""Export: merged model folders with their recipe, rebuilt from a recipe or a leaderboard row."""

from search.export.folder import (
    Ingredient,
    Recipe,
    Ref,
    export_merged,
    merge,
    parse_addition,
    parse_options,
    reproduce,
)
from search.export.trial import export_trial, recipe_for

__all__ = [
    "Ingredient",
    "Recipe",
    "Ref",
    "export_merged",
    "export_trial",
    "merge",
    "parse_addition",
    "parse_options",
    "recipe_for",
    "reproduce",
]
