"""The zoo's data: GLUE-layout parquet datasets (targets and auxiliary tasks), the corpus and the tokenizer.

Each dataset's rows come from its own seeded generator (`[seed, 1000 + its index]`) and the corpus from
`[seed, 7]`, so the files depend on the seed only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.zoo import grammar
from benchmarks.zoo.tokenizer import fit_vocab, make_tokenizer
from benchmarks.zoo.world import SPLITS, World
from search.tasks import TaskSpec, get_task


@dataclass(frozen=True)
class Dataset:
    """A GLUE-layout dataset: `glue/<task>` (name `glue`) or `aux/<name>/<task>`."""

    name: str
    task: str
    make: Callable[[np.random.Generator, int], list[dict]]
    description: str

    @property
    def relpath(self) -> str:
        return f"glue/{self.task}" if self.name == "glue" else f"aux/{self.name}/{self.task}"

    @property
    def card_name(self) -> str:
        return f"pico/{self.name}"


DATASETS: tuple[Dataset, ...] = (
    Dataset(
        "glue", "sst2", lambda r, n: grammar.sentiment_rows(r, n, domain="a"), "film reviews with negation"
    ),
    Dataset(
        "glue", "cola", lambda r, n: grammar.grammar_rows(r, n, domain="a"), "agreement and order errors"
    ),
    Dataset(
        "glue",
        "mrpc",
        lambda r, n: grammar.mrpc_rows(r, n, domain="a"),
        "synonym rewrites vs one contrast word",
    ),
    Dataset(
        "glue",
        "rte",
        lambda r, n: grammar.rte_rows(r, n, domain="a"),
        "restated facts with keeping/adding modifiers, contradictions",
    ),
    Dataset(
        "food_reviews_a",
        "sst2",
        lambda r, n: grammar.sentiment_rows(r, n, domain="b", adjective_part=0),
        "restaurant reviews, first half of the sentiment adjectives",
    ),
    Dataset(
        "food_reviews_b",
        "sst2",
        lambda r, n: grammar.sentiment_rows(r, n, domain="b", adjective_part=1),
        "restaurant reviews, second half of the sentiment adjectives",
    ),
    Dataset(
        "grammar_order_a",
        "cola",
        lambda r, n: grammar.grammar_rows(r, n, domain="b", corruptions=("order",), verb_part=0),
        "object sentences with a lexical verb, word-order errors only",
    ),
    Dataset(
        "grammar_order_b",
        "cola",
        lambda r, n: grammar.grammar_rows(r, n, domain="b", corruptions=("order",), verb_part=1),
        "object sentences with a copula, word-order errors only",
    ),
    Dataset(
        "grammar_drop",
        "cola",
        lambda r, n: grammar.grammar_rows(r, n, domain="b", corruptions=("drop",)),
        "object sentences, missing-word errors only (a corruption the target never sees)",
    ),
    Dataset(
        "paraphrase_a",
        "mrpc",
        lambda r, n: grammar.mrpc_rows(r, n, domain="b", word_part=0),
        "object sentence pairs, the first half of the rewritable words (synonym or contrast)",
    ),
    Dataset(
        "paraphrase_b",
        "mrpc",
        lambda r, n: grammar.mrpc_rows(r, n, domain="b", word_part=1),
        "object sentence pairs, the second half of the rewritable words (synonym or contrast)",
    ),
    Dataset(
        "question_pairs", "qqp", lambda r, n: grammar.qqp_rows(r, n, domain="b"), "duplicate question pairs"
    ),
    Dataset(
        "facts_a",
        "rte",
        lambda r, n: grammar.rte_rows(r, n, domain="b", contradiction_rate=0.0, modifier_part=0),
        "object facts, the first half of the modifiers (keeping or adding)",
    ),
    Dataset(
        "facts_b",
        "rte",
        lambda r, n: grammar.rte_rows(r, n, domain="b", contradiction_rate=0.0, modifier_part=1),
        "object facts, the second half of the modifiers (keeping or adding)",
    ),
    Dataset("nli", "mnli", lambda r, n: grammar.mnli_rows(r, n, domain="b"), "3-way NLI over object facts"),
    Dataset("topic", "topic", lambda r, n: grammar.topic_rows(r, n), "film vs restaurant review sentences"),
)


def _features(spec: TaskSpec, columns: list[str]) -> dict:
    feats: dict[str, dict] = {}
    for col in columns:
        if col == "label":
            feats[col] = {"names": [spec.label_words[i] for i in spec.label_ids], "_type": "ClassLabel"}
        elif col == "idx":
            feats[col] = {"dtype": "int32", "_type": "Value"}
        else:
            feats[col] = {"dtype": "string", "_type": "Value"}
    return feats


def write_parquet(rows: list[dict], *, path: Path, task: str) -> None:
    """Write rows as one nyu-mll/glue parquet file (text columns, `label` int64, `idx` int32).

    The Hugging Face `datasets` feature metadata is embedded so `label` reads back as a ClassLabel;
    no timestamps are written, so the bytes depend on the rows only.
    """
    spec = get_task(task)
    # nyu-mll/glue's column order: MNLI is premise, hypothesis; the prompt order lives in the TaskSpec.
    text_cols = ["premise", "hypothesis"] if task == "mnli" else list(spec.text_fields)
    columns = [*text_cols, "label", "idx"]
    arrays = [pa.array([str(r[c]) for r in rows], type=pa.string()) for c in text_cols]
    arrays.append(pa.array([int(r["label"]) for r in rows], type=pa.int64()))
    arrays.append(pa.array(list(range(len(rows))), type=pa.int32()))
    meta = {b"huggingface": json.dumps({"info": {"features": _features(spec, columns)}}).encode()}
    schema = pa.schema([pa.field(c, a.type) for c, a in zip(columns, arrays, strict=True)], metadata=meta)
    table = pa.Table.from_arrays(arrays, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp, compression="snappy", write_statistics=True)
    os.replace(tmp, path)


def write_data(world: World) -> list[Dataset]:
    """Write every dataset's train, validation and test parquet (test labels -1); keep the frames in `world`."""
    datasets = list(DATASETS)
    for k, ds in enumerate(datasets):
        sizes = world.scale.glue_rows if ds.name == "glue" else world.scale.aux_rows
        rng = np.random.default_rng([world.seed, 1000 + k])
        frames = {}
        for split, n in zip(SPLITS, sizes, strict=True):
            rows = ds.make(rng, n)
            frame = pd.DataFrame(rows)
            frame["idx"] = np.arange(len(frame), dtype=np.int32)
            if split == "test":
                rows = [{**r, "label": -1} for r in rows]
            write_parquet(rows, path=world.out / ds.relpath / f"{split}-00000-of-00001.parquet", task=ds.task)
            frames[split] = frame
        world.frames[ds.relpath] = frames
    return datasets


def tokenizer_texts(world: World) -> list[str]:
    """The texts the tokenizer is fitted to: the corpus, every train prompt and every label word."""
    texts = list(world.corpus)
    for relpath, frames in sorted(world.frames.items()):
        task = relpath.split("/")[-1]
        spec = get_task(task)
        texts.extend(spec.format_input(r) for r in frames["train"].to_dict("records"))
        texts.extend(spec.label_words.values())
    return texts


def write_tokenizer(world: World):
    """Draw the pretraining corpus into `world`, then fit the tokenizer; returns `(tokenizer, vocab)`."""
    world.corpus = grammar.corpus_sentences(np.random.default_rng([world.seed, 7]), world.scale.corpus)
    vocab = fit_vocab(tokenizer_texts(world))
    return make_tokenizer(vocab), vocab
