"""A real T5 tokenizer (Unigram, sentinels, `</s>` post-processing) fitted to the synthetic corpus.

The vocabulary is word-level: every word of the corpus becomes one `▁word` piece scored by its
log-frequency, and single characters are kept as low-scored fallback pieces so that any text still
tokenizes. Ids follow T5's layout: `<pad>`=0, `</s>`=1, `<unk>`=2, pieces, then `<extra_id_N>`
sentinels in reverse order at the end.
"""

from __future__ import annotations

import math
import string
from collections import Counter
from collections.abc import Iterable

import numpy as np
from transformers import T5Tokenizer

EXTRA_IDS = 100
_FALLBACK_CHARS = string.ascii_lowercase + string.digits + string.punctuation


def fit_vocab(texts: Iterable[str], *, permute_seed: int | None = None) -> list[tuple[str, float]]:
    """Unigram pieces and scores for a T5 tokenizer fitted to `texts`.

    Args:
        texts: the corpus (whitespace-separated words).
        permute_seed: if set, shuffle the order of the word pieces (same pieces and scores, other
            ids): a tokenizer with a different vocabulary layout, for the tokenizer-mismatch decoy.

    Returns:
        `(piece, score)` pairs in id order, sentinels included.
    """
    counts = Counter(word for text in texts for word in text.split())
    total = sum(counts.values())
    words = sorted(counts, key=lambda w: (-counts[w], w))
    pieces = [(f"▁{w}", math.log(counts[w] / total)) for w in words]
    if permute_seed is not None:
        order = np.random.default_rng(permute_seed).permutation(len(pieces))
        pieces = [pieces[int(i)] for i in order]
    floor = min(score for _, score in pieces) - 10.0
    known = {p for p, _ in pieces}
    fallback = [("▁", floor)] + [(c, floor - 1.0) for c in _FALLBACK_CHARS if c not in known]
    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    sentinels = [(f"<extra_id_{i}>", 0.0) for i in range(EXTRA_IDS - 1, -1, -1)]
    return specials + pieces + fallback + sentinels


def make_tokenizer(vocab: list[tuple[str, float]]):
    """A `transformers.T5Tokenizer` over `vocab` (from `fit_vocab`)."""
    return T5Tokenizer(vocab=vocab, extra_ids=EXTRA_IDS, model_max_length=512)
