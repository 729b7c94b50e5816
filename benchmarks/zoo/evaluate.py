"""A minimal honest check of zoo models: rank classification on the first decoder step, and the zoo report.

For each example, the label whose word's first token gets the highest logit at the first decoder step
is the prediction (label words of a task start with distinct pieces in the zoo's vocabulary). This is
what the zoo's tests and report use; `search.scoring.scorer` is the product's scorer.

The report (`zoo_report`) measures on the held-out split (GLUE validation) what composition can reach
in the zoo: per task the best single candidate, the best pair, and "every helper added at its best
single lambda"; and for the multi-task stage each fine-tune alone against their naive sum.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from search.tasks import get_task

GRID = (0.25, 0.5, 1.0)
PAIR_POOL = 2  # pairs are searched over the helpers plus this many best single candidates

State = dict[str, torch.Tensor]


@torch.no_grad()
def rank_predictions(model, tokenizer, *, task: str, frame: pd.DataFrame, batch_size: int = 256) -> list[int]:
    """Predicted GLUE label ids of `frame`'s rows.

    Args:
        model: a T5 seq2seq model.
        tokenizer: its tokenizer.
        task: task name of `search.tasks.glue`.
        frame: rows with the task's text columns.
        batch_size: examples per forward pass.

    Returns:
        One label id per row.
    """
    spec = get_task(task)
    labels = list(spec.label_ids)
    first = [tokenizer(spec.label_words[lab], add_special_tokens=False)["input_ids"][0] for lab in labels]
    prompts = [spec.format_input(row) for row in frame.to_dict("records")]
    start = model.config.decoder_start_token_id
    preds: list[int] = []
    model.eval()
    for i in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True)
        dec = torch.full((enc["input_ids"].shape[0], 1), start, dtype=torch.long)
        logits = model(**enc, decoder_input_ids=dec).logits[:, 0, :]
        best = logits[:, first].argmax(dim=-1)
        preds.extend(labels[int(j)] for j in best)
    return preds


def rank_score(model, tokenizer, *, task: str, frame: pd.DataFrame) -> float:
    """The task's paper metric x100 of rank-classification predictions on `frame`."""
    spec = get_task(task)
    preds = rank_predictions(model, tokenizer, task=task, frame=frame)
    return spec.compute_metrics(frame["label"].tolist(), preds)["score"]


class ZooScorer:
    """Scores weight states of one zoo on its tasks' held-out splits (task vectors in fp32, naively)."""

    def __init__(self, zoo: Path) -> None:
        self.zoo = Path(zoo)
        self.manifest = json.loads((self.zoo / "zoo.json").read_text())
        hub = self.zoo / "hub" / self.manifest["base"]
        self.tokenizer = AutoTokenizer.from_pretrained(hub)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(hub)
        self.base = self.weights(self.manifest["base"])
        self._frames: dict[str, pd.DataFrame] = {}
        self._encoded: dict[str, tuple[dict, list[int]]] = {}
        self._taus: dict[str, State] = {}

    def weights(self, repo: str) -> State:
        """`repo`'s tensors."""
        return load_file(str(self.zoo / "hub" / repo / "model.safetensors"))

    def tau(self, repo: str) -> State:
        """`repo`'s task vector (cached)."""
        if repo not in self._taus:
            w = self.weights(repo)
            self._taus[repo] = {k: w[k] - self.base[k] for k in self.base}
        return self._taus[repo]

    def frame(self, task: str) -> pd.DataFrame:
        """The held-out split (GLUE validation) of `task`."""
        if task not in self._frames:
            path = self.zoo / "glue" / task / "validation-00000-of-00001.parquet"
            self._frames[task] = pd.read_parquet(path)
        return self._frames[task]

    def compose(self, start: State, parts: dict[str, float]) -> State:
        """`start + sum lambda * tau(repo)` over `parts` (repo -> lambda)."""
        taus = [(self.tau(r), lam) for r, lam in parts.items()]
        return {k: v + sum(lam * t[k] for t, lam in taus) for k, v in start.items()}

    @torch.no_grad()
    def score(self, state: State, task: str) -> float:
        """Held-out score of `state` on `task` (rank classification as `rank_score`), rounded to 0.01."""
        spec = get_task(task)
        if task not in self._encoded:
            # Tokenize once per task: the report scores hundreds of compositions on the same rows.
            prompts = [spec.format_input(row) for row in self.frame(task).to_dict("records")]
            first = [
                self.tokenizer(spec.label_words[lab], add_special_tokens=False)["input_ids"][0]
                for lab in spec.label_ids
            ]
            self._encoded[task] = (dict(self.tokenizer(prompts, return_tensors="pt", padding=True)), first)
        enc, first = self._encoded[task]
        self.model.load_state_dict(state, strict=False)
        self.model.tie_weights()
        self.model.eval()
        start = self.model.config.decoder_start_token_id
        dec = torch.full((enc["input_ids"].shape[0], 1), start, dtype=torch.long)
        best = self.model(**enc, decoder_input_ids=dec).logits[:, 0, first].argmax(dim=-1)
        preds = [spec.label_ids[int(j)] for j in best]
        return round(spec.compute_metrics(self.frame(task)["label"].tolist(), preds)["score"], 2)


def _task_entry(sc: ZooScorer, task: str, *, lambdas: tuple[float, ...], pool: int) -> dict:
    repos = sc.manifest["repos"]
    target = sc.weights(sc.manifest["targets"][task])
    candidates = sorted(r for r, i in repos.items() if i["role"] == "candidate")
    helpers = [r for r in candidates if task in repos[r].get("helps", [])]
    singles = {r: {lam: sc.score(sc.compose(target, {r: lam}), task) for lam in lambdas} for r in candidates}
    best_lam = {r: max(lambdas, key=lambda lam, r=r: singles[r][lam]) for r in candidates}
    ranked = sorted(candidates, key=lambda r: (-singles[r][best_lam[r]], r))
    best = ranked[0]
    pool_repos = list(dict.fromkeys([*helpers, *ranked[:pool]]))
    best_pair = {"repos": [], "lambdas": [], "score": float("-inf")}
    for a, b in itertools.combinations(sorted(pool_repos), 2):
        for la, lb in itertools.product(lambdas, lambdas):
            s = sc.score(sc.compose(target, {a: la, b: lb}), task)
            if s > best_pair["score"]:
                best_pair = {"repos": [a, b], "lambdas": [la, lb], "score": s}
    add_all = {r: best_lam[r] for r in helpers}
    return {
        "base": sc.score(sc.base, task),
        "target": sc.score(target, task),
        "candidates": singles,
        "helpers": helpers,
        "best_single": {"repo": best, "lambda": best_lam[best], "score": singles[best][best_lam[best]]},
        "best_pair": best_pair,
        "add_all": {"lambdas": add_all, "score": sc.score(sc.compose(target, add_all), task)},
    }


def _multitask_entry(sc: ZooScorer) -> dict:
    mapping = sc.manifest.get("multitask") or {}
    if not mapping:
        return {}
    naive = sc.compose(sc.base, {repo: 1.0 for repo in mapping.values()})
    out = {}
    for task, repo in mapping.items():
        out[task] = {
            "repo": repo,
            "base": sc.score(sc.base, task),
            "alone": sc.score(sc.weights(repo), task),
            "naive_sum": sc.score(naive, task),
        }
    return out


def zoo_report(*, zoo: Path, lambdas: tuple[float, ...] = GRID, pool: int = PAIR_POOL) -> dict:
    """Held-out scores of what composition reaches in the zoo.

    Args:
        zoo: a built zoo folder.
        lambdas: the coefficient grid of singles and pairs.
        pool: besides the task's helpers, this many best single candidates enter the pair search.

    Returns:
        `{"tasks": {task: {"base", "target", "candidates": {repo: {lambda: s}}, "helpers",
        "best_single": {repo, lambda, score}, "best_pair": {repos, lambdas, score},
        "add_all": {lambdas, score}}}, "multitask": {task: {repo, base, alone, naive_sum}}}`.
    """
    sc = ZooScorer(zoo)
    tasks = {t: _task_entry(sc, t, lambdas=lambdas, pool=pool) for t in sc.manifest["targets"]}
    return {"tasks": tasks, "multitask": _multitask_entry(sc)}
