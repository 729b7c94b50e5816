"""Export: merged model folders with their recipe and card, rebuilt from a recipe or a leaderboard row,
published on the Hub."""

from search.export.card import mergekit_yaml, model_card
from search.export.folder import export_merged, merge, reproduce
from search.export.ownership import MANIFEST_FILE
from search.export.publish import Pushed, check_target, push_folder
from search.export.recipe import (
    Ingredient,
    Interval,
    Recipe,
    Ref,
    Result,
    TaskScores,
    parse_addition,
    parse_options,
)
from search.export.trial import export_trial, recipe_for, result_of

__all__ = [
    "MANIFEST_FILE",
    "Ingredient",
    "Interval",
    "Pushed",
    "Recipe",
    "Ref",
    "Result",
    "TaskScores",
    "check_target",
    "export_merged",
    "export_trial",
    "merge",
    "mergekit_yaml",
    "model_card",
    "parse_addition",
    "parse_options",
    "push_folder",
    "recipe_for",
    "reproduce",
    "result_of",
]
