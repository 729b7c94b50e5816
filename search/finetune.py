"""Fine-tune a T5 checkpoint on a GLUE(-format) task in T5's text-to-text format.

Input is the task prompt (`TaskSpec.format_input`), output the label word followed by `</s>`, trained
with teacher forcing and AdamW. The same code makes the pico zoo's targets and candidates and, on the
real `google-t5/t5-base`, a user's target.

A target never trains on its search split (invariant 2): its training rows
(`search.tasks.provenance.training_rows`) leave out the search split screen and search carve from the
same train file (same size and seed rules), and the fine-tuned model records that split in its
config.json and card, so screen and search know it is clean. `include_search_split` trains on all of
train and records nothing.

Checkpoints are written deterministically (sorted tensors, fixed metadata) into a temporary folder renamed
into place, so an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
from safetensors.torch import save_file

from registry.constants import CONFIG_NAME, MODEL_CARD, SAFETENSORS_SINGLE, T5_TIED_ALIASES
from registry.errors import ModelError
from registry.progress import progress_bar
from search.errors import DataError, SearchError
from search.scoring.device import Placement, resolve
from search.scoring.models import load_seq2seq
from search.tasks.data import SearchSource
from search.tasks.data import read_task_frame as read_task_frame  # re-exported: the zoo and tests use them
from search.tasks.data import subsample as subsample
from search.tasks.glue import TaskSpec, get_task
from search.tasks.provenance import set_search_split_record, training_rows


@dataclass(frozen=True)
class TrainResult:
    """What a fine-tuning run did.

    Attributes:
        steps: optimizer steps taken.
        n_train: training examples used.
        first_loss: mean loss of the first 10 steps.
        last_loss: mean loss of the last 10 steps.
    """

    steps: int
    n_train: int
    first_loss: float
    last_loss: float


def task_pairs(spec: TaskSpec, frame: pd.DataFrame) -> list[tuple[str, str]]:
    """`(prompt, label word)` pairs; rows with a label outside the task's label ids are skipped."""
    pairs = []
    for row in frame.to_dict("records"):
        label = int(row["label"])
        if label in spec.label_words:
            pairs.append((spec.format_input(row), spec.target_text(label)))
    return pairs


def train_seq2seq(
    model,
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    *,
    steps: int,
    lr: float,
    batch_size: int = 32,
    seed: int = 0,
    weight_decay: float = 0.0,
    max_length: int = 128,
    on_step: Callable[[int, float], None] | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> TrainResult:
    """Train `model` in place on text-to-text pairs with AdamW (teacher forcing, epochs of a seeded order).

    Args:
        model: a seq2seq model (e.g. `T5ForConditionalGeneration`).
        tokenizer: its tokenizer.
        pairs: `(source text, target text)`.
        steps: optimizer steps.
        lr: AdamW learning rate (constant).
        batch_size: examples per step.
        seed: seeds the example order and dropout.
        weight_decay: AdamW weight decay.
        max_length: source/target truncation in tokens.
        on_step: called after each step with `(step, loss)` (progress bars).
        autocast_dtype: run forward passes under autocast (bf16 mixed precision: the weights, their
            gradients and AdamW's state stay fp32); None trains in the weights' dtype.

    Returns:
        A `TrainResult`.

    Raises:
        DataError: if `pairs` is empty.
    """
    if not pairs:
        raise DataError("no training examples")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    enc = tokenizer([s for s, _ in pairs], truncation=True, max_length=max_length)["input_ids"]
    dec = tokenizer([t for _, t in pairs], truncation=True, max_length=max_length)["input_ids"]
    pad = tokenizer.pad_token_id
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    device = next(model.parameters()).device  # batches go where the model is
    amp = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    losses: list[float] = []
    order: list[int] = []
    for step in range(steps):
        batch = []
        while len(batch) < batch_size:
            if not order:
                order = [int(i) for i in rng.permutation(len(pairs))]
            batch.append(order.pop())
        input_ids = _pad([enc[i] for i in batch], pad).to(device)
        labels = _pad([dec[i] for i in batch], -100).to(device)
        with amp:
            out = model(input_ids=input_ids, attention_mask=(input_ids != pad).long(), labels=labels)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
        if on_step is not None:
            on_step(step + 1, losses[-1])
    model.eval()
    return TrainResult(
        steps=steps,
        n_train=len(pairs),
        first_loss=float(np.mean(losses[:10])),
        last_loss=float(np.mean(losses[-10:])),
    )


def _pad(seqs: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    return torch.tensor([list(s) + [value] * (width - len(s)) for s in seqs], dtype=torch.long)


def model_card(
    *,
    title: str,
    base_model: str | None,
    datasets: Sequence[str],
    tags: Sequence[str] = (),
    description: str = "",
    details: Mapping[str, object] | None = None,
    license: str = "apache-2.0",
) -> str:
    """A Hub model card (`README.md`) with YAML front matter: base_model, datasets, license, tags.

    Returns:
        The card text (deterministic: no dates, no absolute paths).
    """
    front: dict[str, object] = {}
    if base_model:
        front["base_model"] = base_model
    front["datasets"] = list(datasets)
    front["license"] = license
    front["tags"] = ["t5", "text2text-generation", *tags]
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "", f"# {title}", ""]
    if description:
        lines += [description, ""]
    if details:
        lines += ["## Training", ""]
        lines += [f"- {k}: {v}" for k, v in details.items()]
        lines.append("")
    return "\n".join(lines)


def state_dict_for_saving(model) -> dict[str, torch.Tensor]:
    """The model's tensors as contiguous CPU copies, tied T5 aliases dropped when the config ties them."""
    tied = bool(getattr(model.config, "tie_word_embeddings", False)) and model.config.model_type == "t5"
    state = {}
    for name, tensor in model.state_dict().items():
        if tied and name in T5_TIED_ALIASES:
            continue
        state[name] = tensor.detach().to("cpu").contiguous().clone()
    return dict(sorted(state.items()))


def save_checkpoint(
    *,
    model,
    tokenizer,
    out: Path,
    card: str,
    state: Mapping[str, torch.Tensor] | None = None,
    weights_format: str = "safetensors",
) -> Path:
    """Write a Hub-like model folder atomically: config, weights, tokenizer files, README.md card.

    Args:
        model: the model (its config is saved; its weights unless `state` is given).
        tokenizer: saved with `save_pretrained`.
        out: the folder to create (replaced if it exists).
        card: README.md text.
        state: tensors to write instead of the model's own (decoys).
        weights_format: `safetensors` (model.safetensors) or `pickle` (pytorch_model.bin only).

    Returns:
        `out`.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would make a shared zoo unreadable to others
        config = model.config.to_dict()
        # Keep files identical however the model was loaded: no library version, no source path.
        for key in ("transformers_version", "_name_or_path"):
            config.pop(key, None)
        config["dtype"] = str(next(iter(model.parameters())).dtype).removeprefix("torch.")
        config["architectures"] = [type(model).__name__]
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        tensors = dict(sorted((state if state is not None else state_dict_for_saving(model)).items()))
        if weights_format == "safetensors":
            save_file(tensors, str(tmp / SAFETENSORS_SINGLE), metadata={"format": "pt"})
        elif weights_format == "pickle":
            torch.save(tensors, tmp / "pytorch_model.bin")
        else:
            raise ValueError(f"unknown weights_format {weights_format!r}")
        tokenizer.save_pretrained(str(tmp))
        _normalize_tokenizer_config(tmp / "tokenizer_config.json")
        (tmp / MODEL_CARD).write_text(card)
        for path in tmp.iterdir():
            path.chmod(0o644)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


_LOAD_TIME_KEYS = (
    "name_or_path",
    "is_local",
    "local_files_only",
    "_commit_hash",
    "max_length",
    "stride",
    "truncation_side",
    "truncation_strategy",
)


def _normalize_tokenizer_config(path: Path) -> None:
    # save_pretrained echoes how the tokenizer was loaded (its path) and last called (truncation): drop that.
    if not path.is_file():
        return
    config = json.loads(path.read_text())
    for key in _LOAD_TIME_KEYS:
        config.pop(key, None)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def finetune(
    *,
    base: str | Path,
    task: str,
    data_dir: Path,
    out: Path,
    max_train: int | None = None,
    epochs: float = 3.0,
    steps: int | None = None,
    lr: float = 5e-4,
    batch_size: int = 32,
    seed: int = 0,
    revision: str | None = None,
    base_name: str | None = None,
    dataset_name: str = "nyu-mll/glue",
    progress: bool = True,
    search_size: int | None = None,
    split_seed: int = 0,
    search_from: SearchSource = "train",
    include_search_split: bool = False,
    device: str | None = None,
    dtype: str = "auto",
) -> Path:
    """Fine-tune `base` on `task` from a GLUE-layout folder and save a Hub-like model folder; returns `out`.

    Args:
        base: model folder or Hub repo id.
        task: a task of `search.tasks.glue` (`cola`, `sst2`, `mrpc`, `rte` or an auxiliary one).
        data_dir: folder with `<task>/train-00000-of-00001.parquet`.
        out: output folder (written atomically).
        max_train: use only this many training examples (a seeded subset), None for all.
        epochs: passes over the training examples (ignored if `steps` is given).
        steps: optimizer steps.
        lr: AdamW learning rate.
        batch_size: examples per step.
        seed: seeds the subset, the order and dropout.
        revision: Hub revision of `base`.
        base_name: name the card gives the base (default: `base` as given).
        dataset_name: dataset named in the card.
        progress: show a progress bar.
        search_size, split_seed, search_from, include_search_split: the search split left out of the
            training rows and recorded (see `search.tasks.provenance.training_rows`).
        device, dtype: where and in what precision to train (`search.scoring.device`; `training_placement`).

    Raises:
        DataError: missing or malformed data, unknown task.
        ModelError: the base cannot be loaded; SearchError: an unusable device or dtype.
    """
    spec = get_task(task)
    where = training_placement(device, dtype)
    frame, exclusion = training_rows(
        task=task,
        data_dir=data_dir,
        max_train=max_train,
        seed=seed,
        search_size=search_size,
        split_seed=split_seed,
        search_from=search_from,
        include_search_split=include_search_split,
    )
    pairs = task_pairs(spec, frame)
    if not pairs:
        raise DataError(f"{data_dir}/{task}: no labelled training rows")
    model, tokenizer = load_seq2seq(base, revision=revision, device=where.device)
    _check_label_words(tokenizer, spec, base=base)
    set_search_split_record(model.config, exclusion.record)
    n_steps = steps if steps is not None else max(1, math.ceil(epochs * len(pairs) / batch_size))
    hyper = dict(steps=n_steps, lr=lr, batch_size=batch_size, seed=seed, autocast_dtype=where.autocast)
    result = _train_with_progress(model, tokenizer, pairs, progress=progress, **hyper)
    card = _card(
        out=out,
        base=str(base_name or base),
        revision=revision,
        spec=spec,
        dataset_name=dataset_name,
        card_line=exclusion.card_line,
        result=result,
        hyper={"learning rate": lr, "batch size": batch_size, "seed": seed},
    )
    return save_checkpoint(model=model, tokenizer=tokenizer, out=out, card=card)


def training_placement(device: str | None, dtype: str) -> Placement:
    """Where and how to train: fp32, or bf16 mixed precision (`auto`: bf16 on CUDA, fp32 elsewhere).

    Raises:
        SearchError: an unusable device or dtype, or fp16 (T5 overflows float16, and fp16 training would
            need loss scaling).
    """
    where = resolve(device, dtype)
    if where.autocast == torch.float16:
        raise SearchError("finetune --dtype fp16: T5 overflows float16 in training; use bf16 or fp32")
    return where


def _check_label_words(tokenizer, spec: TaskSpec, *, base: str | Path) -> None:
    missing = [w for w in spec.label_words.values() if tokenizer.unk_token_id in tokenizer(w)["input_ids"]]
    if missing:
        raise ModelError(f"{base}: tokenizer cannot spell the label words {missing} of task {spec.name!r}")


def _card(
    *,
    out: Path,
    base: str,
    revision: str | None,
    spec: TaskSpec,
    dataset_name: str,
    card_line: str,
    result: TrainResult,
    hyper: Mapping[str, object],
) -> str:
    """The fine-tuned model's card: what it was trained on (and what it left out) and how."""
    return model_card(
        title=f"{Path(out).name}: {base} fine-tuned on {spec.name}",
        base_model=base,
        datasets=[dataset_name],
        tags=[f"task:{spec.name}"],
        description=(
            f"Fine-tuned in T5 text-to-text format (`{spec.name} ...` -> label word) by `taskvec finetune`."
            f"\n\n{card_line}"
        ),
        details={
            "base revision": revision or "local",
            "task": spec.name,
            "train examples": result.n_train,
            "steps": result.steps,
            "learning rate": hyper["learning rate"],
            "batch size": hyper["batch size"],
            "seed": hyper["seed"],
            "loss (first -> last)": f"{result.first_loss:.4f} -> {result.last_loss:.4f}",
        },
    )


def _train_with_progress(
    model, tokenizer, pairs, *, steps, lr, batch_size, seed, progress, autocast_dtype
) -> TrainResult:
    # T5's GLUE fine-tuning reads up to 512 input tokens (real RTE premises exceed 128).
    kwargs = dict(
        steps=steps, lr=lr, batch_size=batch_size, seed=seed, max_length=512, autocast_dtype=autocast_dtype
    )
    if not progress:
        return train_seq2seq(model, tokenizer, pairs, **kwargs)
    with progress_bar(
        TextColumn("fine-tuning"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} loss {task.fields[loss]}"),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task_id = bar.add_task("finetune", total=steps, loss="-")
        return train_seq2seq(
            model,
            tokenizer,
            pairs,
            on_step=lambda step, loss: bar.update(task_id, completed=step, loss=f"{loss:.3f}"),
            **kwargs,
        )
