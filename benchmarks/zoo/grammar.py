"""A small synthetic English-like grammar and the task generators of the pico zoo.

Two domains share the function words and the sentiment/attribute vocabulary: domain `a` (films,
people and animals) is where the four GLUE-like target tasks live; domain `b` (restaurants, objects)
carries most auxiliary tasks. Each generator draws from a `numpy.random.Generator` only, so a seed
fixes every row. Auxiliary generators can be restricted to *part* of a target's phenomena (one kind of
sentence, half of the deciding words, one kind of corruption): partial, complementary helpers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from benchmarks.zoo.vocab import (
    ADVERBS,
    AGENTS,
    CATEGORIES,
    COPULAS,
    INTENSIFIERS,
    NEGATIVE,
    PARA_ADJS,
    PARA_OBJECTS,
    PARA_SUBJECTS,
    PARA_TIMES,
    PARA_VERBS,
    POSITIVE,
    PREPS,
    REVIEW_NOUNS,
    STATES,
    SYNONYMS,
    VERBS,
)

Row = dict[str, object]


def _pick(rng: np.random.Generator, seq: Sequence[str]) -> str:
    return seq[int(rng.integers(len(seq)))]


def _words(table: dict[str, tuple], domain: str) -> tuple:
    """The words of `domain` in `table`; a domain of several letters (`ab`) pools theirs."""
    return tuple(w for d in domain for w in table[d])


def half(seq: Sequence[str], part: int) -> tuple[str, ...]:
    """Every other item of `seq` starting at `part` (0 or 1): two disjoint, interleaved halves."""
    return tuple(seq[part::2])


# --- sentiment (sst2) -------------------------------------------------------------------------------------


def sentiment_rows(
    rng: np.random.Generator, n: int, *, domain: str, adjective_part: int | None = None
) -> list[Row]:
    """SST-2-like rows: polarity of an adjective, flipped by negation; `but` clauses count the last one.

    Args:
        rng: the random generator.
        n: number of rows.
        domain: `a` (films) or `b` (restaurants).
        adjective_part: restrict adjectives to one half (0 or 1) of each polarity list, or None for all.

    Returns:
        Rows with `sentence` and `label` (1 positive, 0 negative), balanced in expectation.
    """
    pos = POSITIVE if adjective_part is None else half(POSITIVE, adjective_part)
    neg = NEGATIVE if adjective_part is None else half(NEGATIVE, adjective_part)
    nouns = _words(REVIEW_NOUNS, domain)
    rows: list[Row] = []
    for _ in range(n):
        label = int(rng.integers(2))
        negated = bool(rng.random() < 0.4)
        # The adjective's polarity XOR negation gives the label.
        adj_positive = bool(label) != negated
        adj = _pick(rng, pos if adj_positive else neg)
        inten = f"{_pick(rng, INTENSIFIERS)} " if rng.random() < 0.4 else ""
        neg_word = f"{_pick(rng, ('not', 'never'))} " if negated else ""
        noun = _pick(rng, nouns)
        form = int(rng.integers(4))
        if form == 0:
            sentence = f"the {noun} was {neg_word}{inten}{adj}"
        elif form == 1:
            sentence = f"i thought the {noun} was {neg_word}{inten}{adj}"
        elif form == 2:
            # A contrast clause of the opposite polarity first: only the clause after `but` counts.
            other = _pick(rng, neg if label else pos)
            noun0 = _pick(rng, nouns)
            sentence = f"the {noun0} was {other} but the {noun} was {neg_word}{inten}{adj}"
        else:
            article = "an" if (inten or adj)[0] in "aeiou" else "a"
            sentence = f"it was {neg_word}{article} {inten}{adj} {noun}"
        rows.append({"sentence": sentence, "label": label})
    return rows


# --- grammaticality (cola) --------------------------------------------------------------------------------

CORRUPTIONS = ("agreement", "order", "drop")


def _grammatical(rng: np.random.Generator, domain: str, part: int | None = None) -> tuple[list[str], int]:
    """A grammatical sentence as words, and the index of its finite verb.

    `part` 0 builds only sentences with a lexical verb, 1 only copula sentences; None either.
    """
    sg, pl = _words(AGENTS, domain)[int(rng.integers(len(_words(AGENTS, domain))))]
    plural = bool(rng.random() < 0.5)
    words = ["the", pl if plural else sg]
    if rng.random() < 0.2:
        # An attractor noun of the other number between subject and verb makes agreement non-local.
        a_sg, a_pl = _words(AGENTS, domain)[int(rng.integers(len(_words(AGENTS, domain))))]
        words += [_pick(rng, PREPS), "the", a_sg if plural else a_pl]
    verb_at = len(words)
    lexical = bool(rng.random() < 0.5) if part is None else part == 0
    if lexical:
        v_sg, v_pl = VERBS[int(rng.integers(len(VERBS)))]
        words.append(v_pl if plural else v_sg)
        if rng.random() < 0.6:
            words.append(_pick(rng, ADVERBS))
    else:
        c_sg, c_pl = COPULAS[int(rng.integers(len(COPULAS)))]
        words.append(c_pl if plural else c_sg)
        if rng.random() < 0.3:
            words.append(_pick(rng, INTENSIFIERS))
        words.append(_pick(rng, STATES))
    return words, verb_at


def _corrupt(rng: np.random.Generator, words: list[str], verb_at: int, kind: str, domain: str) -> list[str]:
    words = list(words)
    if kind == "agreement":
        verb = words[verb_at]
        for sg, pl in (*VERBS, *COPULAS):
            if verb == sg:
                words[verb_at] = pl
                break
            if verb == pl:
                words[verb_at] = sg
                break
    elif kind == "order":
        # Swap two adjacent words that differ, anywhere in the sentence.
        for _ in range(10):
            i = int(rng.integers(len(words) - 1))
            if words[i] != words[i + 1]:
                words[i], words[i + 1] = words[i + 1], words[i]
                break
    elif kind == "drop":
        # Drop a word the sentence needs: a determiner or the verb.
        candidates = [i for i, w in enumerate(words) if w == "the"] + [verb_at]
        del words[candidates[int(rng.integers(len(candidates)))]]
    else:
        raise ValueError(f"unknown corruption {kind!r}")
    return words


def grammar_rows(
    rng: np.random.Generator,
    n: int,
    *,
    domain: str,
    corruptions: Sequence[str] = ("agreement", "order"),
    acceptable_rate: float = 0.6,
    verb_part: int | None = None,
) -> list[Row]:
    """CoLA-like rows: a grammatical sentence (label 1) or one corrupted by one of `corruptions` (0).

    `verb_part` restricts the sentences to one kind of verb: 0 lexical verbs, 1 copulas with a state.
    """
    rows: list[Row] = []
    for _ in range(n):
        words, verb_at = _grammatical(rng, domain, verb_part)
        label = int(rng.random() < acceptable_rate)
        if not label:
            words = _corrupt(rng, words, verb_at, _pick(rng, corruptions), domain)
        rows.append({"sentence": " ".join(words), "label": label})
    return rows


# --- paraphrase (mrpc, qqp) -------------------------------------------------------------------------------

PARAPHRASES = ("synonym", "reorder")


def _clause(rng: np.random.Generator, domain: str) -> dict[str, str]:
    return {
        "subj": _pick(rng, _words(PARA_SUBJECTS, domain)),
        "adj": _pick(rng, PARA_ADJS),
        "verb": _pick(rng, PARA_VERBS),
        "obj": _pick(rng, _words(PARA_OBJECTS, domain)),
        "time": _pick(rng, PARA_TIMES),
    }


def _render(c: dict[str, str], *, time_first: bool, synonyms: set[str]) -> str:
    def w(key: str) -> str:
        word = c[key]
        return SYNONYMS[word] if key in synonyms and word in SYNONYMS else word

    core = f"the {w('adj')} {c['subj']} {w('verb')} the {c['obj']}"
    return f"{w('time')} , {core}" if time_first else f"{core} {w('time')}"


def _content_change(rng: np.random.Generator, c: dict[str, str], domain: str) -> dict[str, str]:
    pools = {
        "subj": _words(PARA_SUBJECTS, domain),
        "adj": PARA_ADJS,
        "verb": PARA_VERBS,
        "obj": _words(PARA_OBJECTS, domain),
        "time": PARA_TIMES,
    }
    key = _pick(rng, tuple(pools))
    changed = dict(c)
    while changed[key] == c[key]:
        changed[key] = _pick(rng, pools[key])
    return changed


def paraphrase_pairs(
    rng: np.random.Generator,
    n: int,
    *,
    domain: str,
    kinds: Sequence[str] = PARAPHRASES,
    positive_rate: float = 0.6,
    synonym_part: int | None = None,
) -> list[tuple[str, str, int]]:
    """Sentence pairs: a paraphrase (1) by `kinds` (synonyms, clause reordering) or other content (0).

    Negatives change one content word and get the same surface rewrites, so word overlap alone does
    not decide the label. `synonym_part` allows only one half (0 or 1) of the synonym pairs.
    """
    allowed = set(SYNONYMS if synonym_part is None else half(tuple(SYNONYMS), synonym_part))
    out: list[tuple[str, str, int]] = []
    keys = ("adj", "verb", "time")
    for _ in range(n):
        c = _clause(rng, domain)
        if "reorder" not in kinds:
            # A synonym-only paraphrase needs a word that has a synonym.
            while not any(c[k] in allowed for k in keys):
                c = _clause(rng, domain)
        time_first = bool(rng.random() < 0.5)
        s1 = _render(c, time_first=time_first, synonyms=set())
        label = int(rng.random() < positive_rate)
        other = c if label else _content_change(rng, c, domain)
        # At least one rewrite of the allowed kinds, so positives are never identical copies.
        possible = [k for k in keys if other[k] in allowed] if "synonym" in kinds else []
        syn = {k for k in possible if rng.random() < 0.6}
        flip = "reorder" in kinds and bool(rng.random() < 0.6)
        if not syn and not flip:
            if possible:
                syn = {possible[int(rng.integers(len(possible)))]}
            else:
                flip = "reorder" in kinds
        s2 = _render(other, time_first=time_first != flip, synonyms=syn)
        out.append((s1, s2, label))
    return out


def mrpc_rows(
    rng: np.random.Generator,
    n: int,
    *,
    domain: str,
    kinds: Sequence[str] = PARAPHRASES,
    synonym_part: int | None = None,
) -> list[Row]:
    """MRPC-like rows (`sentence1`, `sentence2`, `label` 1 equivalent / 0 not)."""
    return [
        {"sentence1": a, "sentence2": b, "label": y}
        for a, b, y in paraphrase_pairs(rng, n, domain=domain, kinds=kinds, synonym_part=synonym_part)
    ]


def qqp_rows(rng: np.random.Generator, n: int, *, domain: str) -> list[Row]:
    """QQP-like question pairs (`question1`, `question2`, `label` 1 duplicate / 0 not)."""
    rows = []
    for a, b, y in paraphrase_pairs(rng, n, domain=domain, positive_rate=0.5):
        rows.append({"question1": f"did {a} ?", "question2": f"did {b} ?", "label": y})
    return rows


# --- entailment (rte, mnli) -------------------------------------------------------------------------------

NON_ENTAILMENT = ("contradiction", "new_fact")


def _values(part: int | None) -> dict[str, tuple[str, ...]]:
    """Each attribute category's values, or one half (0 or 1) of each."""
    return {c: v if part is None else half(v, part) for c, v in CATEGORIES.items()}


def _facts(
    rng: np.random.Generator, domain: str, k: int, values: dict[str, tuple[str, ...]] = CATEGORIES
) -> list[tuple[str, str, str]]:
    nouns = [sg for sg, _ in _words(AGENTS, domain)]
    chosen = rng.choice(len(nouns), size=k, replace=False)
    facts = []
    for i in chosen:
        cat = _pick(rng, tuple(values))
        facts.append((nouns[int(i)], cat, _pick(rng, values[cat])))
    return facts


def _say(fact: tuple[str, str, str]) -> str:
    return f"the {fact[0]} is {fact[2]}"


def _premise(facts: list[tuple[str, str, str]]) -> str:
    parts = [_say(f) for f in facts]
    return " and ".join(parts) if len(parts) <= 2 else " , ".join(parts[:-1]) + " and " + parts[-1]


def _hypothesis(
    rng: np.random.Generator,
    facts: list[tuple[str, str, str]],
    kind: str,
    domain: str,
    values: dict[str, tuple[str, ...]] = CATEGORIES,
) -> tuple[str, str, str]:
    if kind == "entailment":
        return facts[int(rng.integers(len(facts)))]
    if kind == "contradiction":
        noun, cat, value = facts[int(rng.integers(len(facts)))]
        other = value
        while other == value:
            other = _pick(rng, values[cat])
        return noun, cat, other
    if kind == "new_fact":
        # Either an entity the premise never mentions, or a known one with an attribute of another kind.
        if rng.random() < 0.5:
            mentioned = {f[0] for f in facts}
            noun = _pick(rng, tuple(sg for sg, _ in _words(AGENTS, domain) if sg not in mentioned))
            cat = _pick(rng, tuple(values))
            return noun, cat, _pick(rng, values[cat])
        noun, cat, _ = facts[int(rng.integers(len(facts)))]
        other_cat = _pick(rng, tuple(c for c in values if c != cat))
        return noun, other_cat, _pick(rng, values[other_cat])
    raise ValueError(f"unknown hypothesis kind {kind!r}")


def rte_rows(
    rng: np.random.Generator,
    n: int,
    *,
    domain: str,
    negatives: Sequence[str] = NON_ENTAILMENT,
    value_part: int | None = None,
) -> list[Row]:
    """RTE-like rows: premise of 2-3 facts; hypothesis one of them (0 entailment) or not (1).

    `value_part` restricts every attribute to one half (0 or 1) of its category's values.
    """
    values = _values(value_part)
    rows: list[Row] = []
    for _ in range(n):
        facts = _facts(rng, domain, int(rng.integers(2, 4)), values)
        label = int(rng.integers(2))
        kind = "entailment" if label == 0 else _pick(rng, negatives)
        rows.append(
            {
                "sentence1": _premise(facts),
                "sentence2": _say(_hypothesis(rng, facts, kind, domain, values)),
                "label": label,
            }
        )
    return rows


def mnli_rows(rng: np.random.Generator, n: int, *, domain: str) -> list[Row]:
    """3-way NLI rows (`premise`, `hypothesis`, label 0 entailment / 1 neutral / 2 contradiction)."""
    kinds = ("entailment", "new_fact", "contradiction")
    rows: list[Row] = []
    for _ in range(n):
        facts = _facts(rng, domain, int(rng.integers(2, 4)))
        label = int(rng.integers(3))
        rows.append(
            {
                "premise": _premise(facts),
                "hypothesis": _say(_hypothesis(rng, facts, kinds[label], domain)),
                "label": label,
            }
        )
    return rows


# --- unrelated ----------------------------------------------------------------------------------------------


def topic_rows(rng: np.random.Generator, n: int) -> list[Row]:
    """Topic rows: a review sentence of either domain; label 0 films (`cinema`) / 1 food (`dining`)."""
    rows: list[Row] = []
    for _ in range(n):
        label = int(rng.integers(2))
        (row,) = sentiment_rows(rng, 1, domain="ab"[label])
        rows.append({"sentence": row["sentence"], "label": label})
    return rows


def corpus_sentences(rng: np.random.Generator, n: int) -> list[str]:
    """Plain sentences of both domains and every construction, for span-corruption pretraining."""
    makers: tuple[Callable[[str], list[str]], ...] = (
        lambda d: [str(sentiment_rows(rng, 1, domain=d)[0]["sentence"])],
        lambda d: [" ".join(_grammatical(rng, d)[0])],
        lambda d: list(paraphrase_pairs(rng, 1, domain=d)[0][:2]),
        lambda d: [_premise(_facts(rng, d, int(rng.integers(1, 4))))],
    )
    out: list[str] = []
    while len(out) < n:
        domain = "ab"[int(rng.integers(2))]
        out.extend(makers[int(rng.integers(len(makers)))](domain))
    return out[:n]
