"""A minimal honest check of zoo models: rank classification on the first decoder step.

For each example, the label whose word's first token gets the highest logit at the first decoder step
is the prediction (label words of a task start with distinct pieces in the zoo's vocabulary). This is
what the zoo's tests and build summary use; `search.scoring` is the product's scorer.
"""

from __future__ import annotations

import pandas as pd
import torch

from search.glue import get_task


@torch.no_grad()
def rank_predictions(model, tokenizer, *, task: str, frame: pd.DataFrame, batch_size: int = 256) -> list[int]:
    """Predicted GLUE label ids of `frame`'s rows.

    Args:
        model: a T5 seq2seq model.
        tokenizer: its tokenizer.
        task: task name of `search.glue`.
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
