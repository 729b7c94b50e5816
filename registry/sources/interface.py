"""What every source of checkpoints implements and returns (shared by `hub` and `local`)."""

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
    """One repo pinned to a revision: its files (name -> size in bytes) and Hub metadata.

    `unsafe_links` names the links of a folder that cannot be read as part of the repo (they point outside
    it, or nowhere) with why; the checks refuse a repo that has any (`registry.compat.check_links`).
    """

    repo_id: str
    revision: str
    files: Mapping[str, int | None]
    card: CardClaims = field(default_factory=CardClaims)
    tags: tuple[str, ...] = ()
    downloads: int | None = None
    likes: int | None = None
    last_modified: datetime | None = None
    unsafe_links: Mapping[str, str] = field(default_factory=dict)

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
