"""A minimal honest check of zoo models: rank classification on the first decoder step.

For each example, the label whose word's first token gets the highest logit at the first decoder step
is the prediction (label words of a task start with distinct pieces in the zoo's vocabulary). This is
what the zoo's tests and build summary use; `search.scoring.scorer` is the product's scorer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from search.tasks import get_task


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


def zoo_report(*, zoo: Path, lambdas: tuple[float, ...] = (0.5, 1.0)) -> dict:
    """Validation scores of the zoo: base vs each target, and target + lambda * tau for each candidate.

    Task vectors are applied naively here (fp32 state-dict arithmetic on `model.safetensors`); the
    product's `search.vectors.taskvector` does the same with lazy loading and caching.

    Args:
        zoo: a built zoo folder.
        lambdas: coefficients to try per candidate.

    Returns:
        `{task: {"base": s, "target": s, "candidates": {repo: {lambda: s}}, "helpers_sum": {lambda: s}}}`.
    """
    manifest = json.loads((Path(zoo) / "zoo.json").read_text())
    repos = manifest["repos"]
    hub = Path(zoo) / "hub"

    def weights(repo: str) -> dict[str, torch.Tensor]:
        return load_file(str(hub / repo / "model.safetensors"))

    base = weights(manifest["base"])
    tokenizer = AutoTokenizer.from_pretrained(hub / manifest["base"])
    model = AutoModelForSeq2SeqLM.from_pretrained(hub / manifest["base"])

    def score(state: dict[str, torch.Tensor], task: str, frame: pd.DataFrame) -> float:
        model.load_state_dict(state, strict=False)
        model.tie_weights()
        return round(rank_score(model, tokenizer, task=task, frame=frame), 2)

    candidates = sorted(r for r, i in repos.items() if i["role"] == "candidate")
    taus = {}
    for repo in candidates:
        w = weights(repo)
        taus[repo] = {k: w[k] - base[k] for k in base}
    report: dict = {}
    for task, target_repo in manifest["targets"].items():
        frame = pd.read_parquet(Path(zoo) / "glue" / task / "validation-00000-of-00001.parquet")
        target = weights(target_repo)
        entry = {"base": score(base, task, frame), "target": score(target, task, frame), "candidates": {}}
        for repo in candidates:
            entry["candidates"][repo] = {
                lam: score({k: target[k] + lam * taus[repo][k] for k in target}, task, frame)
                for lam in lambdas
            }
        helpers = [r for r in candidates if task in repos[r].get("helps", [])]
        entry["helpers"] = helpers
        entry["helpers_sum"] = {
            lam: score({k: target[k] + lam * sum(taus[r][k] for r in helpers) for k in target}, task, frame)
            for lam in lambdas
        }
        report[task] = entry
    return report
