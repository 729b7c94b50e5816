"""What an export owns in its `--out`: the files it wrote, recorded in `.taskvec-export.json`.

An export writes its folder beside `out` and renames it into place. A non-empty `out` takes `force`,
except an earlier export of the same model (rerunning an export rebuilds it in place). Over an earlier
export it replaces exactly what that export wrote (so nothing stale survives: a TIES re-export drops the old `mergekit.yaml`),
and it never deletes anything else: files the earlier export did not write, or that changed since it wrote
them, make the export refuse, naming them. With `force` they are moved, never deleted, into a sibling
folder `<out>.kept` (`<out>.kept-2`, ... when taken), so the export folder ends up clean and nothing of the
user's is lost. A folder without a manifest (not an export, or one from before exports recorded their
files) is treated the same way: every entry in it is the user's.

The manifest maps each file the export wrote to its sha256; it is hidden, so the content sha of a folder
(`registry.sources.local.content_sha`, which skips dot files) is the same with or without it, and it is
deterministic, so `merge --recipe` rebuilds stay byte-identical.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from registry.errors import ModelError
from registry.sources.local import file_sha256

MANIFEST_FILE = ".taskvec-export.json"
_FORMAT = "taskvec-export/1"
FILE_MODE = 0o644
DIR_MODE = 0o755
_NAMED = 5  # entries named in a refusal; the rest are counted


@dataclass(frozen=True)
class Contents:
    """What an existing `--out` holds, judged against the manifest of the export that wrote it.

    Attributes:
        is_export: the folder carries a readable manifest.
        owned: paths (relative, POSIX) the earlier export wrote and that are unchanged since.
        foreign: entries it did not write, or changed since (relative; folders end with `/`).
        changed: the entries of `foreign` that the export wrote but that were changed since.
    """

    is_export: bool
    owned: frozenset[str]
    foreign: tuple[str, ...]
    changed: frozenset[str]


def seal(folder: Path) -> None:
    """Give a freshly written export folder its modes (files 0644, folders 0755) and its manifest.

    `tempfile.mkdtemp` makes the folder 0700 and some writers leave files 0600; an export is meant to be
    shared, published or served, so its modes are set here, not inherited.
    """
    files: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            path.chmod(DIR_MODE)
        elif path.is_file() and not path.is_symlink():
            path.chmod(FILE_MODE)
            files[path.relative_to(folder).as_posix()] = file_sha256(path)
    manifest = folder / MANIFEST_FILE
    manifest.write_text(json.dumps({"format": _FORMAT, "files": files}, indent=2, sort_keys=True) + "\n")
    manifest.chmod(FILE_MODE)
    folder.chmod(DIR_MODE)


def _recorded(out: Path) -> dict[str, str] | None:
    """The manifest's {relative path: sha256}, or None when there is no readable taskvec manifest."""
    try:
        data = json.loads((out / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("files"), dict):
        return None
    files = {}
    for name, sha in data["files"].items():
        rel = PurePosixPath(str(name))
        # only plain relative paths inside the folder can be owned
        if rel.is_absolute() or ".." in rel.parts or not rel.parts or not isinstance(sha, str):
            continue
        files[rel.as_posix()] = sha
    return files


def _unowned(folder: Path, owned: frozenset[str], rel: str = "") -> list[str]:
    """Entries under `folder/rel` not in `owned`: a folder none of whose files are owned is one entry."""
    found = []
    for entry in sorted(os.scandir(folder / rel) if rel else os.scandir(folder), key=lambda e: e.name):
        name = f"{rel}{entry.name}"
        if entry.is_dir(follow_symlinks=False):
            if any(o.startswith(f"{name}/") for o in owned):
                found += _unowned(folder, owned, f"{name}/")
            else:
                found.append(f"{name}/")
        elif name not in owned:
            found.append(name)
    return found


def inspect(out: Path) -> Contents:
    """Judge an existing `out` against its manifest (a missing folder holds nothing).

    Raises:
        ModelError: if `out` exists and is not a folder.
    """
    if not out.exists() and not out.is_symlink():
        return Contents(is_export=False, owned=frozenset(), foreign=(), changed=frozenset())
    if not out.is_dir():
        raise ModelError(f"{out}: exists and is not a folder; choose another --out")
    recorded = _recorded(out)
    owned, changed = set(), set()
    for name, sha in (recorded or {}).items():
        path = out / name
        if path.is_symlink() or not path.is_file():
            continue
        (owned if file_sha256(path) == sha else changed).add(name)
    if recorded is not None:
        owned.add(MANIFEST_FILE)
    owned_set = frozenset(owned)
    return Contents(
        is_export=recorded is not None,
        owned=owned_set,
        foreign=tuple(_unowned(out, owned_set)),
        changed=frozenset(changed),
    )


def kept_dir(out: Path) -> Path:
    """The sibling folder that `force` moves the user's entries to: `<out>.kept`, else `.kept-2`, ..."""
    candidate, n = out.with_name(f"{out.name}.kept"), 1
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = out.with_name(f"{out.name}.kept-{n}")
    return candidate


def describe(contents: Contents) -> str:
    """`3 entries (NOTES.txt, README.md (changed since the export), extra/)`: the first few, then a count."""
    names = [f"{n} (changed since the export)" if n in contents.changed else n for n in contents.foreign]
    count = len(names)
    shown = ", ".join(names[:_NAMED]) + (f", and {count - _NAMED} more" if count > _NAMED else "")
    return f"{count} {'entry' if count == 1 else 'entries'} ({shown})"


def refuse_foreign(out: Path, contents: Contents, *, force: bool) -> None:
    """Raise unless `out` holds nothing but what an earlier export wrote (or `force` is given).

    Raises:
        ModelError: naming the entries the export did not write.
    """
    if not contents.foreign or force:
        return
    hint = f"or pass --force to move them to {kept_dir(out).name} beside it (nothing is deleted)"
    if contents.is_export:
        raise ModelError(
            f"{out}: holds {describe(contents)} that the earlier export did not write; "
            f"move them, choose another --out, {hint}"
        )
    raise ModelError(
        f"{out}: not empty and not a taskvec export, holds {describe(contents)}; choose another --out, {hint}"
    )


def refuse_other_model(out: Path, contents: Contents, *, same: Callable[[Path], bool]) -> None:
    """Raise if `out` is an earlier export of another model (`same(out)` false): replacing it takes `force`.

    An earlier export of the same model (same references, coefficients, method and options) is rebuilt in
    place without `force`, so rerunning an export is harmless; any other would silently replace a model.

    Raises:
        ModelError: one line naming `out`.
    """
    if not contents.is_export or not (contents.owned - {MANIFEST_FILE}) or same(out):
        return
    raise ModelError(
        f"{out}: not empty, holds an earlier export of another model; choose another --out, "
        "or pass --force to replace it"
    )


def _move_aside(old: Path, entries: list[str], *, out: Path) -> Path:
    kept = kept_dir(out)
    kept.mkdir()
    for rel in entries:
        dest = kept / rel.rstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(old / rel.rstrip("/"), dest)
    return kept


def install(
    tmp: Path, out: Path, *, force: bool = False, notify: Callable[[str], None] | None = None
) -> None:
    """Rename the finished folder `tmp` to `out`, replacing only what an earlier export there wrote.

    The earlier folder is renamed aside first, so `out` is at every moment either the old export or the
    new one; its entries that no export wrote are moved to `kept_dir(out)` (only reached with `force`, or
    for an entry that appeared after the check), everything else of it is deleted.

    Raises:
        ModelError: if `out` is not a folder, or holds entries the export did not write and not `force`.
    """
    contents = inspect(out)
    refuse_foreign(out, contents, force=force)
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, old)
    os.replace(tmp, out)
    # judged again on the renamed folder: an entry added since the check is moved aside, not deleted
    leftovers = _unowned(old, contents.owned)
    if leftovers:
        kept = _move_aside(old, leftovers, out=out)
        if notify is not None:
            moved = Contents(
                is_export=False, owned=frozenset(), foreign=tuple(leftovers), changed=contents.changed
            )
            notify(f"moved {describe(moved)} that the export did not write from {out} to {kept}")
    shutil.rmtree(old, ignore_errors=True)
