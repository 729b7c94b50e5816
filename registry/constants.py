"""One place for taskvec's constants and environment variables (read at call time, not import time)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "TASKVEC_HOME"
ENV_DB = "TASKVEC_DB"
ENV_DATA = "TASKVEC_DATA"
ENV_STORAGE = "TASKVEC_STORAGE"
ENV_DEBUG = "TASKVEC_DEBUG"
# Where models run (`--device`): auto, cpu, cuda, cuda:N or mps (search.scoring.device).
ENV_DEVICE = "TASKVEC_DEVICE"
# 0 turns off the composer's compiled kernel for 16-bit vectors on the CPU (search.vectors.fused).
ENV_FUSED = "TASKVEC_FUSED"
# huggingface_hub's own switches, honoured before any request is made (see registry.sources.hub).
ENV_HF_OFFLINE = "HF_HUB_OFFLINE"
ENV_HF_ENDPOINT = "HF_ENDPOINT"

DEFAULT_HOME = Path("~/.cache/taskvec")
VECTORS_DIR = "vectors"
OPTUNA_DB = "optuna.db"

# Seconds to wait for the Hub to accept a connection: an unreachable Hub is one line at once, not minutes of
# TCP timeouts or retries (huggingface_hub's own client has no timeout at all).
HUB_CONNECT_TIMEOUT_S = 3.0

# Alembic keeps its revision in a table of our own: Optuna's RDB storage owns `alembic_version`.
ALEMBIC_VERSION_TABLE = "taskvec_alembic_version"

# Hub weight file names, in the order we trust them (safetensors first; pickles never executed).
SAFETENSORS_SINGLE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_SINGLE = "pytorch_model.bin"
PYTORCH_INDEX = "pytorch_model.bin.index.json"
CONFIG_NAME = "config.json"
MODEL_CARD = "README.md"

# Tied-embedding names in T5: all alias `shared.weight` when `tie_word_embeddings` is true.
T5_SHARED = "shared.weight"
T5_TIED_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight")


def home() -> Path:
    """Root folder for taskvec's own files (database, vector cache)."""
    return Path(os.environ.get(ENV_HOME) or DEFAULT_HOME).expanduser()


def default_db_url() -> str:
    """The database URL: `TASKVEC_DB`, else a SQLite file under `TASKVEC_HOME`."""
    url = os.environ.get(ENV_DB)
    if url:
        return url
    return f"sqlite:///{home() / 'taskvec.db'}"


def data_dir() -> Path | None:
    """The GLUE folder the model commands read when given no `--data`: `TASKVEC_DATA`, else None (the Hub)."""
    value = os.environ.get(ENV_DATA)
    return Path(value).expanduser() if value else None


def default_storage_url() -> str:
    """Optuna's storage URL: `TASKVEC_STORAGE`, else a SQLite file under `TASKVEC_HOME`."""
    return os.environ.get(ENV_STORAGE) or f"sqlite:///{home() / OPTUNA_DB}"


def vector_cache_dir(cache_dir: Path | None = None) -> Path:
    """Where precomputed task vectors are cached, keyed by (base sha, candidate sha).

    Args:
        cache_dir: the `--cache-dir` given to a command (taskvec's caches live in it); None: `TASKVEC_HOME`.
    """
    return (Path(cache_dir).expanduser() if cache_dir is not None else home()) / VECTORS_DIR


def hub_offline() -> bool:
    """Whether `HF_HUB_OFFLINE` asks for no Hub requests at all (huggingface_hub's own truthy values)."""
    return os.environ.get(ENV_HF_OFFLINE, "").strip().upper() in ("1", "ON", "YES", "TRUE")


# Lineage check (registry/compat/lineage.py): relative distance ||theta - theta_base|| / ||theta_base|| over a few
# probe tensors. Independent initialisations sit near sqrt(2) ~ 1.41 (two unrelated matrices of similar
# norm); fine-tunes sit far below. Calibrated on the tiny pico zoo (seed 0) with 16 KB windows: targets and
# candidates measured 0.026-0.066, the independently pretrained decoys (t5-pico-seed1 and the false-card
# fine-tune of it) 1.385. 0.5 leaves ~7.5x margin above the furthest fine-tune and ~2.8x below the
# nearest stranger.
LINEAGE_MAX_DISTANCE = 0.5
# Bytes read per probe tensor (a middle window of 4096 fp32 elements): five probes cost at most 80 KB per
# repo whatever the checkpoint's size, and 4096 elements already separate the two groups above.
LINEAGE_PROBE_MAX_BYTES = 16 * 1024
