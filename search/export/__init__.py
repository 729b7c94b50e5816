"""Export: merged model folders with their recipe, rebuilt from a recipe or a leaderboard row."""

from search.export.card import mergekit_yaml, model_card
from search.export.folder import export_merged, merge, reproduce
from search.export.ownership import MANIFEST_FILE
from search.export.recipe import Ingredient, Recipe, Ref, parse_addition, parse_options
from search.export.trial import export_trial, recipe_for

__all__ = [
    "MANIFEST_FILE",
    "Ingredient",
    "Recipe",
    "Ref",
    "export_merged",
    "export_trial",
    "merge",
    "mergekit_yaml",
    "model_card",
    "parse_addition",
    "parse_options",
    "recipe_for",
    "reproduce",
]
