"""Check 1, `config.json` (a few KB): model type, architecture family, every shape-defining field."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from registry.compat.verdicts import REASON_CONFIG, REASON_MALFORMED, REASON_NOT_T5, Reject
from registry.constants import CONFIG_NAME

# Shape-defining T5 config fields and the defaults transformers' T5Config uses when a field is absent.
SHAPE_FIELDS: dict[str, object] = {
    "d_model": 512,
    "d_ff": 2048,
    "d_kv": 64,
    "num_heads": 8,
    "num_layers": 6,
    "num_decoder_layers": None,  # defaults to num_layers
    "vocab_size": 32128,
    "feed_forward_proj": "relu",
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "tie_word_embeddings": True,
}
# The fields two checkpoints must agree on to be combined (the keys of `shape_config`): anything that
# compares T5 architectures (merge, export) uses this list, so it refuses exactly what the registry refuses.
ARCHITECTURE_FIELDS: tuple[str, ...] = tuple(SHAPE_FIELDS)
T5_ARCH_PREFIXES = ("T5",)

# Inclusive bounds of the integer shape fields. A model is built from its config before any weight is read,
# so an absurd value (`num_layers: 1e9`) would allocate without bound: refuse it first. The limits sit far
# above every published T5 (T5-11B: d_model 1024, d_ff 65536, 128 heads, 24 layers; UL2: d_model 4096,
# 32 layers; mT5/ByT5 vocabularies 250k) and far below what would exhaust a machine on its own.
CONFIG_LIMITS: dict[str, tuple[int, int]] = {
    "d_model": (1, 65536),
    "d_ff": (1, 262144),
    "d_kv": (1, 4096),
    "num_heads": (1, 1024),
    "num_layers": (1, 512),
    "num_decoder_layers": (1, 512),
    "vocab_size": (1, 10_000_000),
    "relative_attention_num_buckets": (1, 4096),
    "relative_attention_max_distance": (1, 1_048_576),
}
# What transformers' T5Config accepts: an activation name, optionally `gated-` (e.g. `relu`, `gated-gelu`).
_FEED_FORWARD = re.compile(r"(gated-)?[A-Za-z0-9_]{1,40}")


def parse_config(repo_id: str, raw: bytes) -> dict:
    """`config.json` as a dict.

    Raises:
        Reject: `malformed` if the JSON is invalid or not an object.
    """
    try:
        config = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        msg = getattr(exc, "msg", str(exc))
        raise Reject(REASON_MALFORMED, f"{repo_id}/{CONFIG_NAME} is not valid JSON ({msg})") from exc
    if not isinstance(config, dict):
        raise Reject(REASON_MALFORMED, f"{repo_id}/{CONFIG_NAME} is not a JSON object")
    return config


def shape_config(config: Mapping[str, object]) -> dict[str, object]:
    """The shape-defining fields (`ARCHITECTURE_FIELDS`, in that order) with T5Config's defaults filled in."""
    shapes = {key: config.get(key, default) for key, default in SHAPE_FIELDS.items()}
    if shapes["num_decoder_layers"] is None:
        shapes["num_decoder_layers"] = shapes["num_layers"]
    return shapes


def architecture_of(config: Mapping[str, object]) -> str | None:
    """The first entry of `architectures`, if any."""
    archs = config.get("architectures")
    if isinstance(archs, list) and archs:
        return str(archs[0])
    return None


def _bad_value(key: str, value: object) -> str | None:
    """Why `value` cannot be the shape field `key` (wrong type or out of bounds), or None if it can."""
    if key in CONFIG_LIMITS:
        if key == "num_decoder_layers" and value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{key}={value!r} is a {type(value).__name__}, not an integer"
        low, high = CONFIG_LIMITS[key]
        if not low <= value <= high:
            return f"{key}={value} is out of range ({low}..{high})"
    elif key == "tie_word_embeddings" and not isinstance(value, bool):
        return f"{key}={value!r} is a {type(value).__name__}, not true or false"
    elif key == "feed_forward_proj" and not (isinstance(value, str) and _FEED_FORWARD.fullmatch(value)):
        return f"{key}={value!r} is not an activation name (e.g. 'relu', 'gated-gelu')"
    return None


def check_t5_config(config: Mapping[str, object]) -> dict[str, object]:
    """The checks that need no base: model type, architecture family, shape fields' types and bounds.

    Every loader runs these (the registry on a repo or a base, `registry.compat.check_folder` on a folder
    given by path), so a config is refused the same way whoever names it.

    Returns:
        The shape config (`shape_config`).

    Raises:
        Reject: `not_t5`, or `malformed` naming the first field of the wrong type or out of bounds.
    """
    model_type = config.get("model_type")
    if model_type != "t5":
        raise Reject(REASON_NOT_T5, f"model_type is {model_type!r}, not 't5'")
    archs = config.get("architectures")
    if archs is not None and not (isinstance(archs, list) and all(isinstance(a, str) for a in archs)):
        raise Reject(REASON_MALFORMED, f"{CONFIG_NAME}: architectures={archs!r} is not a list of names")
    if archs and not any(a.startswith(T5_ARCH_PREFIXES) for a in archs):
        raise Reject(REASON_NOT_T5, f"architectures {archs} are not T5")
    for key in SHAPE_FIELDS:
        if key in config and (why := _bad_value(key, config[key])) is not None:
            raise Reject(REASON_MALFORMED, f"{CONFIG_NAME}: {why}")
    return shape_config(config)


def check_config(config: Mapping[str, object], base_shapes: Mapping[str, object]) -> dict[str, object]:
    """Check model type, architecture family, field types and bounds, and every shape field against the base.

    Returns:
        The checkpoint's shape config.

    Raises:
        Reject: `not_t5`, `malformed` or `config_mismatch`.
    """
    shapes = check_t5_config(config)
    diffs = [
        f"{k}={shapes[k]!r} (base {base_shapes[k]!r})" for k in SHAPE_FIELDS if shapes[k] != base_shapes[k]
    ]
    if diffs:
        raise Reject(REASON_CONFIG, ", ".join(diffs))
    return shapes
