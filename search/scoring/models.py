"""Load a T5 model and its tokenizer from a folder or Hub repo, never executing checkpoint code."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from registry.compat import check_folder
from registry.constants import CONFIG_NAME
from registry.errors import ModelError
from registry.pins import resolve_model_dir
from registry.progress import ENV_HUB_BARS_OFF, ENV_TRANSFORMERS_VERBOSITY


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _quiet_transformers() -> None:
    """transformers' "Loading weights" bar (and the Hub's download bars) off, its notices to errors only:
    the stages draw their own bars. Where a variable is set (by the user, or by the CLI's `main`),
    transformers read it at import and it decides."""
    if ENV_HUB_BARS_OFF not in os.environ:
        hf_logging.disable_progress_bar()
    if ENV_TRANSFORMERS_VERBOSITY not in os.environ:
        hf_logging.set_verbosity_error()


def load_seq2seq(
    path_or_repo: str | Path,
    *,
    revision: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
):
    """Load `(model, tokenizer)` in eval mode on `device` (the CPU by default).

    The weights keep `dtype` (fp32: composition keeps fp32 master weights on every device; a scorer's
    `--dtype` is autocast, not a cast of the weights). They are read on the CPU and then moved, so a
    folder's checks and errors read the same whatever the device.

    The folder first passes the registry's checks (`registry.compat.check_folder`: links inside the repo,
    config types and bounds, T5, safetensors headers that fit their files and the config, pickles read with
    `weights_only=True`), so nothing is allocated for a folder the registry would refuse, and the refusal
    reads as the registry's. Weights load from safetensors; pickle-only weights through transformers'
    `weights_only=True` path; `trust_remote_code` is never set.

    Raises:
        ModelError: one line naming the folder and the reason.
    """
    _quiet_transformers()
    folder = resolve_model_dir(path_or_repo, revision=revision)
    check_folder(folder)
    try:
        # transformers validates every config field (types it declares): a bad one is the folder's fault
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except (StrictDataclassError, OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"{folder / CONFIG_NAME}: {_first_line(exc)}") from exc
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(
            folder, config=config, dtype=dtype, trust_remote_code=False
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(f"{folder}: cannot load model: {_first_line(exc)}") from exc
    model.eval()
    target = torch.device(device)
    if target.type != "cpu":
        try:
            model.to(target)
        except torch.OutOfMemoryError as exc:
            raise ModelError(f"{folder}: does not fit in the memory of {target}: {_first_line(exc)}") from exc
    return model, tokenizer
