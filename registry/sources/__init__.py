"""Where checkpoints come from: the Hugging Face Hub (`hub`) or a folder laid out like it (`local`)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from registry.errors import RegistryError

# Files a model folder needs to be loaded and scored; weights are never pickles when safetensors exist.
MODEL_FILE_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.txt", "README.md")


# --- sources of checkpoints: one interface for the Hub and a folder laid out like it -------------------

# Hub repo ids are `org/name` of letters, digits, `-`, `_`, `.`; anything else (`..`, `/`-prefixed,
# backslashes) could escape a folder or a URL path, so it is refused before it is used.
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_FILENAME_PART = re.compile(r"[A-Za-z0-9._-]+")


def validate_repo_id(repo_id: str) -> str:
    """Return `repo_id` if it is a safe `org/name` id.

    Raises:
        RegistryError: if the id is malformed or could traverse paths (`..`, absolute, backslashes).
    """
    if not isinstance(repo_id, str) or not _REPO_ID.fullmatch(repo_id) or ".." in repo_id:
        raise RegistryError(f"{repo_id!r}: invalid repo id (expected org/name without '..')")
    return repo_id


def validate_filename(repo_id: str, filename: str) -> str:
    """Return `filename` if it is a relative path inside a repo with no `..` or empty parts.

    Raises:
        RegistryError: if the name could escape the repo.
    """
    parts = filename.split("/")
    if not filename or any(p in ("", ".", "..") or not _FILENAME_PART.fullmatch(p) for p in parts):
        raise RegistryError(f"{repo_id}: unsafe file name {filename!r} in the repo")
    return filename


@dataclass(frozen=True)
class CardClaims:
    """What a model card's YAML front matter claims; recorded, never trusted alone."""

    base_model: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    license: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class RepoInfo:
    """One repo pinned to a revision: its files (name -> size in bytes) and Hub metadata."""

    repo_id: str
    revision: str
    files: Mapping[str, int | None]
    card: CardClaims = field(default_factory=CardClaims)
    tags: tuple[str, ...] = ()
    downloads: int | None = None
    likes: int | None = None
    last_modified: datetime | None = None

    @property
    def size(self) -> int | None:
        """Total bytes of the repo's files when every size is known."""
        sizes = list(self.files.values())
        return sum(sizes) if sizes and all(s is not None for s in sizes) else None


class Source(Protocol):
    """Where checkpoints come from. Reads are pinned to a revision; `bytes_read` counts what came in."""

    name: str
    bytes_read: int

    def list_repos(
        self, *, search: str | None = None, filters: tuple[str, ...] = (), limit: int | None = None
    ) -> Iterator[str]: ...

    def repo_info(self, repo_id: str, *, revision: str | None = None) -> RepoInfo: ...

    def read_file(self, repo_id: str, revision: str, filename: str) -> bytes: ...

    def read_range(self, repo_id: str, revision: str, filename: str, start: int, length: int) -> bytes: ...

    def file_path(self, repo_id: str, revision: str, filename: str) -> Path: ...

    def model_dir(self, repo_id: str, revision: str) -> Path: ...


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
        from registry.sources.hub import HubSource

        url = str(source) if str(source) != "hub" else endpoint
        return HubSource(endpoint=url, cache_dir=cache_dir)
    from registry.sources.local import LocalSource

    return LocalSource(Path(source))
