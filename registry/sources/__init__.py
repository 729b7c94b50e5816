"""Where checkpoints come from: the Hugging Face Hub (`hub`) or a folder laid out like it (`local`)."""

from __future__ import annotations

from pathlib import Path

from registry.sources.hub import HubSource
from registry.sources.interface import (
    MODEL_FILE_PATTERNS,
    CardClaims,
    RepoInfo,
    Source,
    validate_filename,
    validate_repo_id,
)
from registry.sources.local import LocalSource

__all__ = [
    "MODEL_FILE_PATTERNS",
    "CardClaims",
    "HubSource",
    "LocalSource",
    "RepoInfo",
    "Source",
    "open_source",
    "validate_filename",
    "validate_repo_id",
]


def open_source(source: str | Path, *, endpoint: str | None = None, cache_dir: Path | None = None) -> Source:
    """The source named by `source`: `hub` (the Hugging Face Hub, or `endpoint`) or a folder like the Hub's.

    Args:
        source: `hub`, a Hub endpoint URL (as rows from a mirror record it), or a folder holding
            `<org>/<name>/` repos (e.g. a zoo's `hub/`).
        endpoint: Hub URL for `hub` (default: `HF_ENDPOINT` or huggingface.co).
        cache_dir: where Hub downloads go (default: the huggingface_hub cache).

    Returns:
        A `Source`; `source.model_dir(repo_id, revision)` is the folder with the pinned weights.

    Raises:
        RegistryError: if a folder source does not exist.
    """
    if str(source) == "hub" or str(source).startswith(("http://", "https://")):
        url = str(source) if str(source) != "hub" else endpoint
        return HubSource(endpoint=url, cache_dir=cache_dir)
    return LocalSource(Path(source))
