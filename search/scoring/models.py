"""Load a T5 model and its tokenizer from a folder or Hub repo, never executing checkpoint code."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from registry.constants import CONFIG_NAME
from registry.errors import ModelError
from registry.pins import resolve_model_dir


def load_seq2seq(
    path_or_repo: str | Path, *, revision: str | None = None, dtype: torch.dtype = torch.float32
):
    """Load `(model, tokenizer)` in eval mode on the CPU.

    Weights load from safetensors (pickles only through transformers' `weights_only=True` path);
    `trust_remote_code` is never set.

    Raises:
        ModelError: if the folder is missing, its config is malformed, or it is not a T5 model.
    """
    folder = resolve_model_dir(path_or_repo, revision=revision)
    config_path = folder / CONFIG_NAME
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"{path_or_repo}: no {CONFIG_NAME}") from exc
    except json.JSONDecodeError as exc:
        raise ModelError(f"{config_path}: malformed JSON ({exc.msg} at line {exc.lineno})") from exc
    if config.get("model_type") != "t5":
        raise ModelError(f"{path_or_repo}: model_type is {config.get('model_type')!r}, not 't5'")
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(folder, dtype=dtype, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{path_or_repo}: cannot load model: {str(exc).splitlines()[0]}") from exc
    model.eval()
    return model, tokenizer
