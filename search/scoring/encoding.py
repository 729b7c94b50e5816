"""What a scorer computes once per split and tokenizer: the tokenized inputs, label word ids, batches.

The model's weights change between calls (compositions being tried); none of this depends on them, so a
split is tokenized once per (split, tokenizer, truncation) and the result shared by every scorer over it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from registry.errors import ModelError
from search.tasks.data import Split
from search.tasks.glue import TaskSpec, get_task

DEFAULT_MAX_INPUT_LENGTH = 512
_CACHE_SIZE = 16


@dataclass(frozen=True, eq=False)
class _Encoded:
    """A split's inputs tokenized once: right-padded ids (n, max_len) and the true lengths."""

    ids: np.ndarray
    lengths: np.ndarray


_ENCODED: OrderedDict[tuple[str, str, int], _Encoded] = OrderedDict()


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of what decides a tokenization: the class, the vocabulary and the special tokens.

    Args:
        tokenizer: a transformers tokenizer.

    Returns:
        A hex digest (cached on the tokenizer object).
    """
    cached = getattr(tokenizer, "_taskvec_fingerprint", None)
    if cached is not None:
        return cached
    payload = {
        "class": type(tokenizer).__name__,
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    with contextlib.suppress(AttributeError):  # some tokenizers forbid new attributes; then recompute
        tokenizer._taskvec_fingerprint = digest
    return digest


def encode_split(split: Split, tokenizer, *, max_length: int = DEFAULT_MAX_INPUT_LENGTH) -> _Encoded:
    """Tokenize a split's prompts once; cached by (split fingerprint, tokenizer fingerprint, max_length).

    Args:
        split: the examples.
        tokenizer: the model's tokenizer.
        max_length: inputs are truncated to this many tokens (EOS kept), as in T5.

    Returns:
        Right-padded input ids and lengths, in split order.
    """
    key = (split.fingerprint, tokenizer_fingerprint(tokenizer), max_length)
    hit = _ENCODED.get(key)
    if hit is not None:
        _ENCODED.move_to_end(key)
        return hit
    spec = get_task(split.task)
    texts = [spec.format_input(row) for row in split.examples.to_dict("records")]
    batch = tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]
    lengths = np.fromiter((len(x) for x in batch), dtype=np.int64, count=len(batch))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = np.full((len(batch), int(lengths.max(initial=1))), pad, dtype=np.int64)
    for i, row in enumerate(batch):
        ids[i, : len(row)] = row
    encoded = _Encoded(ids=ids, lengths=lengths)
    _ENCODED[key] = encoded
    while len(_ENCODED) > _CACHE_SIZE:
        _ENCODED.popitem(last=False)
    return encoded


def label_token_ids(spec: TaskSpec, tokenizer) -> list[list[int]]:
    """Token ids of each label word (in `spec.label_ids` order), each ending with EOS.

    Raises:
        ModelError: if a label word tokenizes to nothing or to the unknown token.
    """
    eos = tokenizer.eos_token_id
    out = []
    for label in spec.label_ids:
        word = spec.label_words[label]
        ids = list(tokenizer(word, add_special_tokens=True)["input_ids"])
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
        body = ids[:-1] if eos is not None else ids
        unk = tokenizer.unk_token_id
        if not body or (unk is not None and unk in body):
            raise ModelError(
                f"{getattr(tokenizer, 'name_or_path', 'tokenizer')}: label word {word!r} of task "
                f"{spec.name} does not tokenize (got ids {ids})"
            )
        out.append(ids)
    return out


def length_batches(lengths: np.ndarray, *, batch_tokens: int, max_batch: int) -> list[np.ndarray]:
    """Group example indices into batches sorted by length, each under a padded-token budget.

    Args:
        lengths: token count of each example.
        batch_tokens: max of batch size x longest length in the batch.
        max_batch: max examples per batch.

    Returns:
        Index arrays into `lengths`, longest examples first (a too-long example gets a batch of one).
    """
    order = np.argsort(-lengths, kind="stable")
    batches = []
    start = 0
    while start < len(order):
        longest = int(lengths[order[start]])
        size = max(1, min(max_batch, batch_tokens // max(longest, 1)))
        batches.append(order[start : start + size])
        start += size
    return batches
