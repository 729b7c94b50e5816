"""Check 1, `config.json` (a few KB): model type, architecture family, every shape-defining field."""

from __future__ import annotations

import json
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


def check_config(config: Mapping[str, object], base_shapes: Mapping[str, object]) -> dict[str, object]:
    """Check model type, architecture family and every shape-defining field against the base.

    Returns:
        The checkpoint's shape config.

    Raises:
        Reject: `not_t5` or `config_mismatch`.
    """
    model_type = config.get("model_type")
    if model_type != "t5":
        raise Reject(REASON_NOT_T5, f"model_type is {model_type!r}, not 't5'")
    archs = config.get("architectures")
    if isinstance(archs, list) and archs and not any(str(a).startswith(T5_ARCH_PREFIXES) for a in archs):
        raise Reject(REASON_NOT_T5, f"architectures {archs} are not T5")
    shapes = shape_config(config)
    diffs = [
        f"{k}={shapes[k]!r} (base {base_shapes[k]!r})" for k in SHAPE_FIELDS if shapes[k] != base_shapes[k]
    ]
    if diffs:
        raise Reject(REASON_CONFIG, ", ".join(diffs))
    return shapes
