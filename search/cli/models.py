"""`taskvec finetune`, `eval` and `merge`: make a target, score a model, merge task vectors by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from registry.constants import ENV_DATA
from registry.errors import ModelError
from search.cli._options import (
    EVALUATE,
    FINETUNE,
    MERGE,
    DataOpt,
    DbOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    MethodOpt,
    MethodOptionOpt,
    RevisionOpt,
    SearchFromOpt,
    SearchSizeOpt,
)
from search.cli._render import console, eval_table, to_json
from search.cli.export import OUT_HELP, ForceOpt, note

app = typer.Typer()


@app.command("finetune")
def finetune_command(
    *,
    base: Annotated[
        str, typer.Option("--base", help="Pretrained model: folder or Hub repo id (e.g. google-t5/t5-base).")
    ],
    task: Annotated[str, typer.Option("--task", help="mrpc, rte, cola, sst2 (or an auxiliary task).")],
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            envvar=ENV_DATA,
            show_envvar=True,
            help="GLUE-layout folder: DATA/<task>/train-00000-of-00001.parquet.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output model folder (safetensors, tokenizer, card).")],
    max_train: Annotated[
        int | None, typer.Option("--max-train", help="Use a seeded subset of N training rows.")
    ] = FINETUNE.max_train,
    epochs: Annotated[
        float, typer.Option("--epochs", help="Passes over the training rows.")
    ] = FINETUNE.epochs,
    steps: Annotated[
        int | None, typer.Option("--steps", help="Optimizer steps (overrides --epochs).")
    ] = FINETUNE.steps,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = FINETUNE.lr,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Examples per step.")] = FINETUNE.batch_size,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the subset, order and dropout.")] = FINETUNE.seed,
    revision: RevisionOpt = FINETUNE.revision,
    search_size: SearchSizeOpt = FINETUNE.search_size,
    search_from: SearchFromOpt = FINETUNE.search_from,
    include_search_split: Annotated[
        bool,
        typer.Option(
            "--include-search-split",
            help="Train on all of train, search split included (records nothing; select with --search-from validation).",
        ),
    ] = FINETUNE.include_search_split,
    device: DeviceOpt = FINETUNE.device,
    dtype: DtypeOpt = FINETUNE.dtype,
) -> None:
    """Fine-tune a T5 base on one task in T5's text-to-text format and save a Hub-like model folder.

    The search split screen and search will use (same --search-size and seed) is left out of the training
    rows and recorded in the model's config.json and card, unless --include-search-split.
    """
    from search.finetune import finetune
    from search.tasks.provenance import NOT_EXCLUDED

    folder = finetune(
        base=base,
        task=task,
        data_dir=data,
        out=out,
        max_train=max_train,
        epochs=epochs,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        revision=revision,
        search_size=search_size,
        search_from=search_from,
        include_search_split=include_search_split,
        device=device,
        dtype=dtype,
    )
    if include_search_split and search_from == "train":
        note(NOT_EXCLUDED)
    typer.echo(f"saved {folder}")


@app.command("eval")
def eval_command(
    *,
    model: Annotated[str, typer.Option("--model", help="Model folder or Hub repo id.")],
    task: Annotated[str, typer.Option("--task", help="mrpc, rte, cola, sst2 or all.")] = "all",
    data: DataOpt = EVALUATE.data_dir,
    split: Annotated[
        str, typer.Option("--split", help="heldout (validation) or search (from train).")
    ] = EVALUATE.split,
    mode: Annotated[
        str, typer.Option("--mode", help="rank (rank classification) or generate (greedy).")
    ] = EVALUATE.mode,
    size: Annotated[
        int | None, typer.Option("--size", help="Split size (default: all of heldout).")
    ] = EVALUATE.size,
    revision: RevisionOpt = EVALUATE.revision,
    search_from: SearchFromOpt = EVALUATE.search_from,
    device: DeviceOpt = EVALUATE.device,
    dtype: DtypeOpt = EVALUATE.dtype,
    as_json: JsonOpt = False,
) -> None:
    """Score a model on GLUE tasks with the paper's metrics (x100)."""
    from search.scoring.evaluate import evaluate, iter_tasks

    results = evaluate(
        model=model,
        tasks=list(iter_tasks(task)),
        split=split,
        mode=mode,
        data_dir=data,
        size=size,
        revision=revision,
        progress=not as_json,
        search_from=search_from,
        device=device,
        dtype=dtype,
    )
    if as_json:
        for r in results:
            typer.echo(to_json({"model": model, **r.summary()}))
        return
    console.print(eval_table(results, model=model, split=split, mode=mode))


@app.command("merge")
def merge_command(
    *,
    base: Annotated[str | None, typer.Option("--base", help="Pretrained base: folder or repo id.")] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="Fine-tuned target: folder or repo id.")
    ] = None,
    add: Annotated[
        list[str],
        typer.Option(
            "--add", help="REPO_OR_PATH=COEF, repeatable; negative COEF subtracts (forgetting, analogies)."
        ),
    ] = (),
    method: MethodOpt = MERGE.method,
    option: MethodOptionOpt = (),
    recipe: Annotated[
        Path | None,
        typer.Option(
            "--recipe", help="Rebuild exactly from a recipe.yaml (instead of --base/--target/--add)."
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help=OUT_HELP)] = Path("merged"),
    force: ForceOpt = False,
    db: DbOpt = MERGE.db_url,
) -> None:
    """Merge task vectors into a target: theta_T + sum lambda_i tau_i (or TIES/DARE), with its recipe."""
    from search.export import merge, parse_addition, parse_options, reproduce  # lazy: imports torch

    if recipe is not None:
        if base or target or add or option:
            raise ModelError(
                "--recipe fixes everything: do not combine it with --base/--target/--add/--option"
            )
        folder = reproduce(recipe_path=recipe, out=out, db_url=db, force=force, notify=note)
    else:
        if not base or not target:
            raise ModelError("give --base and --target (or --recipe)")
        folder, _ = merge(
            base=base,
            target=target,
            additions=[parse_addition(a) for a in add],
            out=out,
            method=method,
            method_options=parse_options(option),
            db_url=db,
            force=force,
            notify=note,
        )
    typer.echo(f"merged model written: {folder}")
