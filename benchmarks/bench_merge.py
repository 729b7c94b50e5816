"""Composer vs torch's own `copy_` bandwidth and vs the naive merge, on real T5 shapes.

For randomly initialised models of the t5-small and t5-base shapes and K in {1, 4, 16} task vectors,
measured side by side in one run:

- `copy_` bandwidth: rewriting every parameter from a saved copy (`param.copy_(theta)`), bytes read +
  written per second: the ceiling for any in-place rewrite on this machine;
- the composer (`search.vectors.composer.Composer.apply`): bytes it must touch (theta_T and K vectors read,
  the parameters written) per second, as a fraction of the `copy_` bandwidth (`bandwidth_frac`);
- the naive path: build a new state dict theta_T + sum lambda_i tau_i and `load_state_dict` it
  (`speedup_vs_naive` = naive time / composer time);
- RSS: peak of the process, and the growth of RSS over 10 composer applications (0: no allocation).

Vector contents do not change memory traffic, so each vector is a constant (a different one per vector)
broadcast over each tensor's shape, which takes no memory: the composer copies them into its own `[K, n]`
stacks, as it does with vectors memory-mapped from the cache, and the machine holds the vectors once.
t5-base at K=16 stores vectors in bf16 (7 GB instead of 14 GB of fp32, on a machine shared with others),
like the optional bf16 vector cache; its bytes are counted as bf16.
Each row names the composer's path: `fused` (the compiled one-pass kernel on the CPU,
`search/vectors/fused.py`) or `torch`; `--torch-only` (TASKVEC_FUSED=0) measures the torch path alone.

With `--zoo DIR` (a built pico zoo) it also measures the score effect of bf16 vector storage: the pico
SST-2 target composed with two candidates over a grid of coefficients, scored with fp32 and with bf16
cached vectors.

Last line of output: one JSON object with every figure and `bandwidth_frac_min`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from transformers import T5Config, T5ForConditionalGeneration

from registry.constants import ENV_FUSED
from search.scoring import Scorer, load_seq2seq
from search.tasks import load_split
from search.vectors import Composer, TaskVector, load_vector, model_parameters

SHAPES = {
    "t5-small": dict(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8),
    "t5-base": dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12),
}


def rss_gb() -> float:
    """Current resident set size in GiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def peak_rss_gb() -> float:
    """Peak resident set size of the process so far, in GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def random_t5(shape: str):
    """A T5 of the given shape with random N(0, 0.05) weights (allocated without the slow default init)."""
    config = T5Config(vocab_size=32128, **SHAPES[shape])
    with torch.device("meta"):
        model = T5ForConditionalGeneration(config)
    model = model.to_empty(device="cpu")
    model.tie_weights()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.05, generator=gen)
    return model.eval()


def best_times(fns: dict, *, repeats: int) -> dict[str, float]:
    """Best wall time of each function over `repeats` interleaved rounds (after one warm-up each).

    Interleaving puts every contender under the same background load, so their ratio holds even on a
    busy shared machine.
    """
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def bench_one(model, params: dict, thetas: dict, *, k: int, dtype: torch.dtype, repeats: int) -> dict:
    n = sum(t.numel() for t in thetas.values())
    # Broadcast constants: the composer's own stacks are the only copy (7 GB in bf16 for t5-base K=16).
    vectors = [
        TaskVector(
            {name: torch.full((), 1e-4 * (i + 1), dtype=dtype).expand(t.shape) for name, t in thetas.items()},
            vector_id=f"v{i}",
        )
        for i in range(k)
    ]
    coefs = [0.5 - 0.05 * i for i in range(k)]

    def copy_all():
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(thetas[name])

    composer = Composer(model, target=thetas, vectors=vectors)
    before = rss_gb()
    for _ in range(10):
        composer.apply(coefs)
    growth = rss_gb() - before

    names = {id(p): name for name, p in model.named_parameters()}
    keys = {name: names[id(p)] for name, p in params.items()}

    def naive():
        state = {}
        for name, theta in thetas.items():
            merged = theta.clone()
            for v, c in zip(vectors, coefs, strict=True):
                merged += c * v.deltas[name].float()
            state[keys[name]] = merged
        model.load_state_dict(state, strict=False)

    times = best_times(
        {"copy": copy_all, "composer": lambda: composer.apply(coefs), "naive": naive}, repeats=repeats
    )
    t_copy, t_comp, t_naive = times["copy"], times["composer"], times["naive"]
    naive()
    expected = {name: params[name].detach().clone() for name in list(params)[:4]}
    composer.apply(coefs)
    diff = max(float((params[name].detach() - expected[name]).abs().max()) for name in expected)
    elem = torch.tensor([], dtype=dtype).element_size()
    copy_bw = 2 * n * 4 / t_copy
    comp_bw = (2 * n * 4 + k * n * elem) / t_comp
    home, storage, path = composer.home, str(composer.storage).removeprefix("torch."), composer.path
    composer = vectors = None  # free before the next K
    gc.collect()
    return {
        "k": k,
        "vector_dtype": str(dtype).removeprefix("torch."),
        "composer_home": home,
        "composer_storage": storage,
        "composer_path": path,
        "params_m": round(n / 1e6, 1),
        "copy_s": round(t_copy, 4),
        "composer_s": round(t_comp, 4),
        "naive_s": round(t_naive, 4),
        "copy_gbps": round(copy_bw / 1e9, 2),
        "composer_gbps": round(comp_bw / 1e9, 2),
        "bandwidth_frac": round(comp_bw / copy_bw, 3),
        "speedup_vs_naive": round(t_naive / t_comp, 2),
        "rss_growth_gb_10_applies": round(growth, 4),
        "max_diff_vs_naive": diff,
        "peak_rss_gb": round(peak_rss_gb(), 2),
    }


def bf16_score_effect(zoo: Path) -> dict:
    """Max |score difference| between fp32 and bf16 vector storage on the pico SST-2 target."""
    hub = zoo / "hub" / "pico"
    base, target = hub / "t5-pico", hub / "t5-pico-sst2"
    cands = [hub / "t5-pico-food-sst2-a", hub / "t5-pico-food-sst2-b"]
    split = load_split("sst2", split="heldout", data_dir=zoo / "glue")
    grid = [(a, b) for a in (0.0, 0.3, 0.6, 1.0) for b in (0.0, 0.5, 1.0)]
    out: dict[str, list] = {}
    margins = {}
    with tempfile.TemporaryDirectory() as cache:
        for dtype in (torch.float32, torch.bfloat16):
            model, tok = load_seq2seq(target)
            vectors = [
                load_vector(
                    base_dir=base,
                    base_revision="b" * 40,
                    candidate_dir=c,
                    candidate_revision=f"{i}" * 40,
                    cache_dir=Path(cache),
                    dtype=dtype,
                )
                for i, c in enumerate(cands)
            ]
            composer = Composer(model, target=target, vectors=vectors)
            scorer = Scorer(model, tok, split)
            scores = []
            for coefs in grid:
                composer.apply(list(coefs))
                result = scorer.score()
                scores.append(float(result.score))
                margins[(str(dtype), coefs)] = result.margins
            out[str(dtype)] = scores
    fp32, bf16 = out["torch.float32"], out["torch.bfloat16"]
    margin_diff = max(
        float(abs(margins[("torch.float32", c)] - margins[("torch.bfloat16", c)]).max()) for c in grid
    )
    return {
        "task": "sst2",
        "n": len(split),
        "grid": [list(c) for c in grid],
        "scores_fp32": fp32,
        "scores_bf16": bf16,
        "max_abs_score_diff": max(abs(a - b) for a, b in zip(fp32, bf16, strict=True)),
        "max_abs_margin_diff": margin_diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--fp32-max-gb", type=float, default=6.0, help="above this, vectors are stored in bf16"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: robust on busy shared cores)"
    )
    parser.add_argument("--zoo", type=Path, default=None, help="a built pico zoo, for the bf16 score effect")
    parser.add_argument(
        "--torch-only", action="store_true", help="compose with torch only (no compiled kernel)"
    )
    args = parser.parse_args()
    if args.torch_only:
        os.environ[ENV_FUSED] = "0"
    torch.set_num_threads(args.threads)

    results = []
    for shape in args.shapes:
        model = random_t5(shape)
        params = model_parameters(model)
        thetas = {name: p.detach().clone() for name, p in params.items()}
        n = sum(t.numel() for t in thetas.values())
        for k in args.ks:
            dtype = torch.float32 if k * n * 4 / 2**30 <= args.fp32_max_gb else torch.bfloat16
            row = {"shape": shape, **bench_one(model, params, thetas, k=k, dtype=dtype, repeats=args.repeats)}
            results.append(row)
            print(json.dumps(row), flush=True)
        del model, params, thetas
        gc.collect()

    table = Table(title=f"Composer vs copy_ and the naive merge (torch threads: {torch.get_num_threads()})")
    cols = [
        "shape",
        "k",
        "vector_dtype",
        "composer_path",
        "params_m",
        "copy_gbps",
        "composer_gbps",
        "bandwidth_frac",
        "composer_s",
        "naive_s",
        "speedup_vs_naive",
        "rss_growth_gb_10_applies",
        "peak_rss_gb",
    ]
    for col in cols:
        table.add_column(col, justify="right")
    for row in results:
        table.add_row(*(str(row[c]) for c in cols))
    Console(width=200).print(table)

    summary = {
        "bench": "merge",
        "torch_threads": torch.get_num_threads(),
        "bandwidth_frac_min": min(r["bandwidth_frac"] for r in results),
        # bf16 storage halves the bytes; without the compiled kernel its widening to fp32 is compute-bound on
        # CPUs without native bf16 (~4 GB/s here), so fp32 rows show the memory-bound figure on their own
        "bandwidth_frac_min_fp32": min(
            (r["bandwidth_frac"] for r in results if r["vector_dtype"] == "float32"), default=None
        ),
        "speedup_vs_naive_min": min(r["speedup_vs_naive"] for r in results),
        "peak_rss_gb": round(peak_rss_gb(), 2),
        "max_rss_growth_gb_10_applies": max(r["rss_growth_gb_10_applies"] for r in results),
        "results": results,
    }
    if args.zoo is not None:
        summary["bf16_score_effect"] = bf16_score_effect(args.zoo)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
