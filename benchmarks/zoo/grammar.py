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
    ADDING,
    ADVERBS,
    AGENTS,
    CATEGORIES,
    COPULAS,
    INTENSIFIERS,
    KEEPING,
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

SLOTS = {"adj": PARA_ADJS, "verb": PARA_VERBS, "time": PARA_TIMES}


def _slot_words(part: int | None) -> dict[str, tuple[str, ...]]:
    """Each rewritable slot's base words, or one half (0 or 1) of them."""
    return {k: tuple(v) if part is None else half(tuple(v), part) for k, v in SLOTS.items()}


def paraphrase_pairs(
    rng: np.random.Generator,
    n: int,
    *,
    domain: str,
    positive_rate: float = 0.5,
    word_part: int | None = None,
) -> list[tuple[str, str, int]]:
    """Sentence pairs: a paraphrase (1) rewrites slots with synonyms, a non-paraphrase (0) one with its contrast.

    The first sentence uses base words only; the second rewrites one to three of its adjective, verb
    and time slots (and may move the time first). In a non-paraphrase exactly one rewritten slot takes
    the word's contrast (`bought` -> `stole`) and the others synonyms, so word overlap alone does not
    decide the label. `word_part` restricts every slot to one half (0 or 1) of its base words.
    """
    pools = _slot_words(word_part)
    out: list[tuple[str, str, int]] = []
    for _ in range(n):
        c = {k: _pick(rng, v) for k, v in pools.items()}
        subj = _pick(rng, _words(PARA_SUBJECTS, domain))
        obj = _pick(rng, _words(PARA_OBJECTS, domain))
        label = int(rng.random() < positive_rate)
        rewrite = [k for k in SLOTS if rng.random() < 0.6] or [_pick(rng, tuple(SLOTS))]
        contrast = None if label else rewrite[int(rng.integers(len(rewrite)))]
        other = dict(c)
        for k in rewrite:
            synonym, opposite = SLOTS[k][c[k]]
            other[k] = opposite if k == contrast else synonym
        time_first = bool(rng.random() < 0.5)
        flip = bool(rng.random() < 0.4)
        out.append((_render(c, subj, obj, time_first), _render(other, subj, obj, time_first != flip), label))
    return out


def _render(c: dict[str, str], subj: str, obj: str, time_first: bool) -> str:
    core = f"the {c['adj']} {subj} {c['verb']} the {obj}"
    return f"{c['time']} , {core}" if time_first else f"{core} {c['time']}"


def mrpc_rows(rng: np.random.Generator, n: int, *, domain: str, word_part: int | None = None) -> list[Row]:
    """MRPC-like rows (`sentence1`, `sentence2`, `label` 1 equivalent / 0 not)."""
    return [
        {"sentence1": a, "sentence2": b, "label": y}
        for a, b, y in paraphrase_pairs(rng, n, domain=domain, word_part=word_part)
    ]


def qqp_rows(rng: np.random.Generator, n: int, *, domain: str) -> list[Row]:
    """QQP-like question pairs (`question1`, `question2`, `label` 1 duplicate / 0 not)."""
    rows = []
    for a, b, y in paraphrase_pairs(rng, n, domain=domain):
        rows.append({"question1": f"did {a} ?", "question2": f"did {b} ?", "label": y})
    return rows


# --- entailment (rte, mnli) -------------------------------------------------------------------------------


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
    contradiction_rate: float = 0.3,
    modifier_part: int | None = None,
) -> list[Row]:
    """RTE-like rows: premise of 2-3 facts; hypothesis one of them with a modifier (0 entailment) or not (1).

    A hypothesis restates a premise fact with one modifier: one that keeps its meaning (`indeed`,
    entailment) or one that adds what the premise does not say (`always`, not entailment). A share
    `contradiction_rate` of the non-entailments instead swaps the fact's value (with a keeping
    modifier), which needs the premise. `modifier_part` restricts the modifiers to one half (0 or 1).
    """
    keeping = KEEPING if modifier_part is None else half(KEEPING, modifier_part)
    adding = ADDING if modifier_part is None else half(ADDING, modifier_part)
    rows: list[Row] = []
    for _ in range(n):
        facts = _facts(rng, domain, int(rng.integers(2, 4)))
        label = int(rng.integers(2))
        contradiction = bool(label) and bool(rng.random() < contradiction_rate)
        noun, cat, value = _hypothesis(rng, facts, "contradiction" if contradiction else "entailment", domain)
        modifier = _pick(rng, adding if label and not contradiction else keeping)
        rows.append(
            {
                "sentence1": _premise(facts),
                "sentence2": f"the {noun} is {modifier} {value}",
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
