"""A folder laid out like the Hub (`<root>/<org>/<name>/` repos, e.g. a zoo's `hub/`), pinned by content sha."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from registry.constants import CONFIG_NAME, MODEL_CARD
from registry.errors import RegistryError
from registry.sources.interface import CardClaims, RepoInfo, validate_filename, validate_repo_id

# Content shas are cached by each file's (real path, size, mtime) so repeated reads do not rehash the weights.
_FILE_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 hex of a file (through a link: of what it points to), cached by (real path, size, mtime)."""
    stat = path.stat()
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    cached = _FILE_SHA_CACHE.get(key)
    if cached is None:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        cached = _FILE_SHA_CACHE[key] = digest.hexdigest()
    return cached


@dataclass(frozen=True)
class FolderListing:
    """What a repo folder holds, links resolved.

    Attributes:
        files: relative path -> size of every regular file and of every link to one inside the repo (read
            and hashed through the link like any file), in content-sha order; hidden paths left out.
        unsafe: relative path -> why, for each link that points outside the repo or to nothing.
    """

    files: dict[str, int]
    unsafe: dict[str, str]


def link_roots(folder: Path) -> tuple[Path, ...]:
    """Where a repo folder's links may point: inside the folder, and for a Hugging Face cache snapshot
    (`models--org--name/snapshots/<rev>/`, whose files are all links into that repo's `blobs/`) there."""
    real = Path(folder).resolve()
    if real.parent.name == "snapshots" and real.parent.parent.name.startswith("models--"):
        return (real, real.parent.parent / "blobs")
    return (real,)


def _link_problem(path: Path, roots: tuple[Path, ...]) -> str | None:
    """Why the link `path` cannot be read as part of the repo, or None if it points inside it."""
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing target, or a loop of links
        return f"is a link to a missing file ({os.readlink(path)})"
    if not any(target.is_relative_to(root) for root in roots):
        return f"links outside the repo (to {target})"
    return None


def list_folder(folder: Path) -> FolderListing:
    """Every file of a repo folder, links resolved: those inside count as files, the others as unsafe."""
    folder = Path(folder)
    roots = link_roots(folder)
    files: dict[str, int] = {}
    unsafe: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):  # links to folders are listed, never entered
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in [*filenames, *(d for d in dirnames if (here / d).is_symlink())]:
            path = here / name
            rel = path.relative_to(folder).as_posix()
            if name.startswith("."):
                continue
            if path.is_symlink() and (why := _link_problem(path, roots)) is not None:
                unsafe[rel] = why
            elif path.is_file():
                files[rel] = path.stat().st_size
    # sorted by path parts, as `sorted(Path.rglob(...))` ordered them: content shas stay what they were
    return FolderListing(
        files=dict(sorted(files.items(), key=lambda item: item[0].split("/"))),
        unsafe=dict(sorted(unsafe.items())),
    )


def repo_files(folder: Path) -> dict[str, int]:
    """Relative path -> size of every file in a repo folder (`list_folder(folder).files`)."""
    return list_folder(folder).files


def content_sha(folder: Path) -> str:
    """The revision of a local repo: sha1 over its sorted (relative path, sha256 of the file) pairs.

    A link inside the repo is hashed as the file it points to, so retargeting it changes the revision; an
    unsafe link (outside the repo, or dangling) is hashed as what `list_folder` says of it.

    Args:
        folder: the repo folder.

    Returns:
        40 hex digits, like a git commit sha, stable across machines for the same files.
    """
    listing = list_folder(folder)
    digest = hashlib.sha1()
    for rel in listing.files:
        digest.update(rel.encode() + b"\0" + file_sha256(folder / rel).encode() + b"\n")
    for rel, why in listing.unsafe.items():
        digest.update(rel.encode() + b"\0link " + why.encode() + b"\n")
    return digest.hexdigest()


def confined_file(folder: Path, filename: str, *, label: str) -> Path:
    """`folder/filename` (a validated name) if it is a file that resolves inside the repo.

    Raises:
        RegistryError: if there is no such file, or it is reached through a link leading outside the repo.
    """
    path = folder / filename
    if not path.is_file():
        raise RegistryError(f"{label}: no file {filename}")
    real = path.resolve()
    if not any(real.is_relative_to(root) for root in link_roots(folder)):
        raise RegistryError(f"{label}: {filename} links outside the repo (to {real})")
    return path


def read_range_of(path: Path, start: int, length: int) -> bytes:
    """`length` bytes of a file from offset `start` (fewer if the file is shorter)."""
    with path.open("rb") as fh:
        fh.seek(start, os.SEEK_SET)
        return fh.read(length)


def parse_card(text: str) -> CardClaims:
    """The claims in a model card's YAML front matter (`base_model`, `datasets`, `license`, `tags`).

    A card without front matter, or with malformed YAML, claims nothing (cards are never trusted).
    """
    if not text.startswith("---"):
        return CardClaims()
    end = text.find("\n---", 3)
    if end < 0:
        return CardClaims()
    try:
        meta = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return CardClaims()
    return claims_from_meta(meta)


def claims_from_meta(meta: object) -> CardClaims:
    """Card claims from front-matter metadata (a dict; anything else claims nothing)."""
    if not isinstance(meta, dict):
        return CardClaims()

    def strings(value) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list):
            return tuple(str(v) for v in value if v is not None)
        return (str(value),)

    license_ = meta.get("license")
    return CardClaims(
        base_model=strings(meta.get("base_model")),
        datasets=strings(meta.get("datasets")),
        license=str(license_) if license_ is not None else None,
        tags=strings(meta.get("tags")),
    )


def card_tags(card: CardClaims, *, model_type: str | None = None) -> tuple[str, ...]:
    """Hub-style tags derived from a card, as the Hub's listing filters see them."""
    tags = list(card.tags)
    tags += [f"base_model:{b}" for b in card.base_model]
    tags += [f"base_model:finetune:{b}" for b in card.base_model]
    tags += [f"dataset:{d}" for d in card.datasets]
    if card.license:
        tags.append(f"license:{card.license}")
    if model_type:
        tags.append(model_type)
    return tuple(dict.fromkeys(tags))


def _model_type(folder: Path) -> str | None:
    try:
        value = json.loads((folder / CONFIG_NAME).read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _card(folder: Path) -> CardClaims:
    try:
        return parse_card((folder / MODEL_CARD).read_text(errors="replace"))
    except OSError:
        return CardClaims()


class _FileReads:
    """Reads through `file_path` (confined to the repo), counted in `bytes_read`: both local sources."""

    bytes_read: int

    def file_path(self, repo_id: str, revision: str, filename: str) -> Path:
        raise NotImplementedError

    def read_file(self, repo_id: str, revision: str, filename: str) -> bytes:
        """The whole file's bytes."""
        data = self.file_path(repo_id, revision, filename).read_bytes()
        self.bytes_read += len(data)
        return data

    def read_range(self, repo_id: str, revision: str, filename: str, start: int, length: int) -> bytes:
        """`length` bytes from offset `start` (fewer if the file is shorter)."""
        data = read_range_of(self.file_path(repo_id, revision, filename), start, length)
        self.bytes_read += len(data)
        return data


class LocalSource(_FileReads):
    """Repos in `<root>/<org>/<name>/`; the revision of each is its `content_sha`."""

    def __init__(self, root: Path) -> None:
        """Args:
            root: folder holding `<org>/<name>/` repo folders.

        Raises:
            RegistryError: if `root` is not a folder.
        """
        root = Path(root).expanduser()
        if not root.is_dir():
            raise RegistryError(f"{root}: no such source folder")
        self.root = root.resolve()
        self.name = str(self.root)
        self.bytes_read = 0

    def _folder(self, repo_id: str) -> Path:
        folder = self.root / validate_repo_id(repo_id)
        if not folder.is_dir():
            raise RegistryError(f"{repo_id}: repository not found in {self.root}")
        return folder

    def _pinned(self, repo_id: str, revision: str | None) -> Path:
        folder = self._folder(repo_id)
        if revision is not None and revision != "main":
            current = content_sha(folder)
            if revision != current:
                raise RegistryError(
                    f"{repo_id}: revision {revision[:12]} is not in {self.root} (the folder is at {current[:12]})"
                )
        return folder

    def list_repos(
        self, *, search: str | None = None, filters: tuple[str, ...] = (), limit: int | None = None
    ) -> Iterator[str]:
        """Repo ids under the root, sorted; `search` is a substring of the id, `filters` Hub-style tags."""
        count = 0
        for org in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for repo in sorted(p for p in org.iterdir() if p.is_dir() and not p.name.startswith(".")):
                repo_id = f"{org.name}/{repo.name}"
                if search and search.lower() not in repo_id.lower():
                    continue
                if filters:
                    card = _card(repo)
                    tags = set(card_tags(card, model_type=_model_type(repo)))
                    if not set(filters) <= tags:
                        continue
                if limit is not None and count >= limit:
                    return
                count += 1
                yield repo_id

    def repo_info(self, repo_id: str, *, revision: str | None = None) -> RepoInfo:
        """The repo's files, card claims and content sha.

        Raises:
            RegistryError: if the repo is missing or `revision` is not the folder's current content.
        """
        folder = self._pinned(repo_id, revision)
        listing = list_folder(folder)
        card = _card(folder)
        mtime = max((folder / f).stat().st_mtime for f in listing.files) if listing.files else None
        return RepoInfo(
            repo_id=repo_id,
            revision=content_sha(folder),
            files=listing.files,
            card=card,
            tags=card_tags(card, model_type=_model_type(folder)),
            last_modified=datetime.fromtimestamp(mtime, tz=UTC) if mtime else None,
            unsafe_links=listing.unsafe,
        )

    def file_path(self, repo_id: str, revision: str, filename: str) -> Path:
        """The file on disk (no copy); never through a link leading outside the repo."""
        return confined_file(self._folder(repo_id), validate_filename(repo_id, filename), label=repo_id)

    def model_dir(self, repo_id: str, revision: str) -> Path:
        """The repo folder, after checking it still holds `revision`.

        Raises:
            RegistryError: if the repo is missing or its content changed since `revision`.
        """
        return self._pinned(repo_id, revision)


def source_for_folder(folder: Path) -> tuple[LocalSource, str]:
    """A source and repo id for one model folder given by path (`.../<org>/<name>`).

    Raises:
        RegistryError: if the folder does not exist.
    """
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise RegistryError(f"{folder}: no such model folder")
    return LocalSource(folder.parent.parent), f"{folder.parent.name}/{folder.name}"


class FolderSource(_FileReads):
    """One model folder given by path, read as a source holding one repo whose id is the folder's path.

    The registry's checks run on it unchanged (`registry.compat.check_folder`). Its revision is left empty:
    the content sha would hash every weight, and no check needs it.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder).expanduser()
        self.name = str(self.folder)
        self.bytes_read = 0

    def list_repos(
        self, *, search: str | None = None, filters: tuple[str, ...] = (), limit: int | None = None
    ) -> Iterator[str]:
        """The one repo."""
        yield self.name

    def repo_info(self, repo_id: str | None = None, *, revision: str | None = None) -> RepoInfo:
        """The folder's files (links resolved, unsafe ones named) and card claims."""
        listing = list_folder(self.folder)
        return RepoInfo(
            repo_id=self.name,
            revision=revision or "",
            files=listing.files,
            card=_card(self.folder),
            unsafe_links=listing.unsafe,
        )

    def file_path(self, repo_id: str, revision: str, filename: str) -> Path:
        """The file on disk; never through a link leading outside the folder."""
        return confined_file(self.folder, validate_filename(self.name, filename), label=self.name)

    def model_dir(self, repo_id: str, revision: str) -> Path:
        """The folder itself."""
        return self.folder
