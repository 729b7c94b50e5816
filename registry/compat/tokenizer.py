"""Check 2, the tokenizer (small files): the same vocabulary as the base."""

from __future__ import annotations

import json
from collections.abc import Mapping

import sentencepiece as spm

from registry.compat.verdicts import REASON_TOKENIZER, Reject, json_fingerprint, sha256_hex
from registry.sources import RepoInfo, Source

# Files that define the vocabulary; tokenizer_config.json etc. carry settings, not the vocabulary.
VOCAB_FILES = ("tokenizer.json", "spiece.model", "vocab.json", "merges.txt", "vocab.txt", "added_tokens.json")


def vocab_files(source: Source, info: RepoInfo) -> dict[str, bytes]:
    """The repo's vocabulary files (name -> bytes), those of `VOCAB_FILES` it has."""
    return {
        name: source.read_file(info.repo_id, info.revision, name)
        for name in VOCAB_FILES
        if name in info.files
    }


def _json_vocab(raw: bytes) -> dict[str, int] | None:
    try:
        return {str(k): int(v) for k, v in json.loads(raw).items()}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError, ValueError):
        return None


def vocabs_from_files(files: Mapping[str, bytes]) -> dict[str, dict[str, int]]:
    """Token -> id maps, one per kind of vocabulary file present (`tokenizer.json`, `spiece.model`, ...).

    Kinds are kept apart because repos ship different subsets (a fine-tune with only `spiece.model` next to
    a base with `tokenizer.json` too) and the kinds differ in what they include (T5's extra ids live in
    tokenizer.json's added tokens, not in spiece.model). Unreadable files are left out.
    """
    added = _json_vocab(files["added_tokens.json"]) if "added_tokens.json" in files else {}
    vocabs: dict[str, dict[str, int]] = {}
    if "tokenizer.json" in files:
        try:
            tok = json.loads(files["tokenizer.json"])
            model_vocab = (tok.get("model") or {}).get("vocab")
            vocab: dict[str, int] = {}
            if isinstance(model_vocab, dict):
                vocab.update({str(k): int(v) for k, v in model_vocab.items()})
            elif isinstance(model_vocab, list):  # Unigram: [[piece, score], ...], id = position
                vocab.update({str(item[0]): i for i, item in enumerate(model_vocab)})
            for token in tok.get("added_tokens") or []:
                if isinstance(token, dict) and "content" in token and "id" in token:
                    vocab[str(token["content"])] = int(token["id"])
            if vocab:
                vocabs["tokenizer.json"] = vocab
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError, ValueError, IndexError):
            pass
    if "spiece.model" in files:
        proc = spm.SentencePieceProcessor()
        try:
            proc.LoadFromSerializedProto(files["spiece.model"])
            vocabs["spiece.model"] = {proc.IdToPiece(i): i for i in range(proc.GetPieceSize())} | (
                added or {}
            )
        except (RuntimeError, OSError, TypeError):
            pass
    if "vocab.json" in files and (vocab := _json_vocab(files["vocab.json"])) is not None:
        vocabs["vocab.json"] = vocab | (added or {})
    if "vocab.txt" in files:
        lines = files["vocab.txt"].decode(errors="replace").splitlines()
        vocabs["vocab.txt"] = {line: i for i, line in enumerate(lines)} | (added or {})
    return vocabs


def _same_vocab(
    here: Mapping[str, Mapping[str, int]], base: Mapping[str, Mapping[str, int]]
) -> tuple[bool, str]:
    """Compare the first kind both have; with no kind in common, compare the ids both define."""
    common = [kind for kind in here if kind in base]
    if common:
        mine, theirs = here[common[0]], base[common[0]]
    else:
        mine, theirs = next(iter(here.values())), next(iter(base.values()))
        limit = min(len(mine), len(theirs))
        mine = {t: i for t, i in mine.items() if i < limit}
        theirs = {t: i for t, i in theirs.items() if i < limit}
    if mine == theirs:
        return True, ""
    only_here = len(set(mine) - set(theirs))
    only_base = len(set(theirs) - set(mine))
    moved = sum(1 for t, i in mine.items() if t in theirs and theirs[t] != i)
    return False, (
        f"different vocabulary ({len(mine)} tokens vs base {len(theirs)}; {only_here} new, "
        f"{only_base} missing, {moved} with other ids)"
    )


def tokenizer_fingerprint(files: Mapping[str, bytes]) -> str | None:
    """sha256 over the vocabulary files' hashes (None when the repo ships no tokenizer)."""
    if not files:
        return None
    return json_fingerprint({name: sha256_hex(data) for name, data in sorted(files.items())})


def check_tokenizer(
    files: Mapping[str, bytes],
    *,
    base_fingerprint: str | None,
    base_vocabs: Mapping[str, Mapping[str, int]],
) -> str | None:
    """Same vocabulary as the base: equal file hashes, or, when the files differ, equal token -> id maps.

    A repo without tokenizer files inherits the base's (its vocab_size already matched in the config).

    Returns:
        The tokenizer fingerprint (None if the repo has no tokenizer files).

    Raises:
        Reject: `tokenizer_mismatch`.
    """
    fingerprint = tokenizer_fingerprint(files)
    if fingerprint is None or fingerprint == base_fingerprint or not base_vocabs:
        return fingerprint
    vocabs = vocabs_from_files(files)
    if not vocabs:
        raise Reject(REASON_TOKENIZER, f"cannot read a vocabulary from {sorted(files)}")
    same, detail = _same_vocab(vocabs, base_vocabs)
    if not same:
        raise Reject(REASON_TOKENIZER, detail)
    return fingerprint
