"""A t5-small-shaped Hub world for `bench_scale`: a random base, perturbed "fine-tunes" of it, and decoys.

t5-small's real config (d_model 512, 6+6 layers, 8 heads, d_ff 2048, vocab 32128, tied embeddings, ReLU);
the vocabulary files are the pico zoo's (its GLUE-format data tokenizes with them; ids above the tokenizer's
size are embedding rows no text reaches, as in real T5, whose config pads 32100 tokens to 32128).

The fine-tunes share the base's lineage (the base plus Gaussian noise on every tensor) in the layouts the
Hub holds: one safetensors file, sharded safetensors with an index, fp16 safetensors, and `.bin` only
(pickle: the registry checks those only with `--verify-pickles`, loading with `weights_only=True`).
Decoys fail one check each: another shape (config), an unrelated random init of the same shape (lineage)
and a truncated weight file (integrity). Nothing here is trained: scores are near chance, which is what a
rehearsal of cost needs, not of quality.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import T5Config, T5ForConditionalGeneration
from transformers.utils import logging as hf_logging

from benchmarks.bench_scoring import T5_SMALL  # t5-small's real config, one home for the real shapes

ORG = "scale"
BASE = f"{ORG}/t5-small"
TARGET_TASK = "sst2"
TARGET = f"{ORG}/t5-small-{TARGET_TASK}"
# The layouts of the fine-tunes, in order (cycled): what `sync` and screening must all read.
LAYOUTS = ("single", "sharded", "fp16", "single", "sharded", "bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@dataclass
class ScaleWorld:
    """What `build_world` wrote: repo ids by role and each fine-tune's layout."""

    root: Path
    base: str = BASE
    target: str = TARGET
    finetunes: dict[str, str] = field(default_factory=dict)
    decoys: dict[str, str] = field(default_factory=dict)

    @property
    def bytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())


def t5_config(shape: dict, *, tokenizer_dir: Path) -> T5Config:
    """A T5 config of `shape` with the special token ids of the zoo's tokenizer (they replace the shape's)."""
    zoo_config = json.loads((tokenizer_dir / "config.json").read_text())
    ids = {k: zoo_config[k] for k in ("pad_token_id", "eos_token_id", "decoder_start_token_id")}
    return T5Config(**{**shape, **ids})


def random_t5(shape: dict, *, tokenizer_dir: Path, seed: int) -> T5ForConditionalGeneration:
    """A randomly initialised T5 of `shape` (fp32, eval mode)."""
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(t5_config(shape, tokenizer_dir=tokenizer_dir)).eval()


def _perturb(model: T5ForConditionalGeneration, *, seed: int, scale: float) -> None:
    """Move every weight by `scale` x its own std of Gaussian noise, in place (a stand-in fine-tune)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * (p.std() * scale + 1e-4))


def _card(out: Path, *, base: str | None, title: str) -> None:
    front = ["---", "license: apache-2.0", "tags: [t5, scale-rehearsal]"]
    if base:
        front.append(f"base_model: {base}")
    (out / "README.md").write_text("\n".join([*front, "---", "", f"# {title}", ""]))


def _save(model, out: Path, *, layout: str, tokenizer_dir: Path, base: str | None, title: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if layout == "sharded":
        model.save_pretrained(out, max_shard_size="100MB")
    elif layout == "fp16":
        model.half().save_pretrained(out)
        model.float()
    elif layout == "bin":
        model.save_pretrained(out, safe_serialization=False)
    else:
        model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copy2(tokenizer_dir / name, out / name)
    _card(out, base=base, title=title)


def build_world(
    root: Path, *, tokenizer_dir: Path, n_finetunes: int = 12, seed: int = 0, reuse: bool = False
) -> ScaleWorld:
    """Write the world under `root/<org>/<name>` (a folder the loopback Hub serves).

    Args:
        root: an empty or missing folder.
        tokenizer_dir: a zoo model folder whose vocabulary files and special ids the world takes.
        n_finetunes: perturbed fine-tunes besides the target (the issue asks for at least 12).
        seed: seeds the base and every perturbation.
        reuse: keep a world a previous call completed with the same arguments (a stamp file says so).
    """
    stamp = root / ".complete"
    key = json.dumps({"n_finetunes": n_finetunes, "seed": seed, "tokenizer": str(tokenizer_dir)})
    if reuse and stamp.is_file() and json.loads(stamp.read_text())["key"] == key:
        info = json.loads(stamp.read_text())
        return ScaleWorld(root=root, finetunes=info["finetunes"], decoys=info["decoys"])
    shutil.rmtree(root, ignore_errors=True)
    hf_logging.disable_progress_bar()  # the shard writer's bar, once per repo
    world = ScaleWorld(root=root)
    base = random_t5(T5_SMALL, tokenizer_dir=tokenizer_dir, seed=seed)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    _save(base, root / BASE, layout="single", tokenizer_dir=tokenizer_dir, base=None, title="t5-small base")
    for i in range(n_finetunes + 1):
        base.load_state_dict(state)
        _perturb(base, seed=seed * 1000 + i + 1, scale=0.01 + 0.002 * (i % 5))
        if i == 0:
            repo, layout = TARGET, "single"
        else:
            repo, layout = f"{ORG}/t5-small-ft-{i:02d}", LAYOUTS[(i - 1) % len(LAYOUTS)]
            world.finetunes[repo] = layout
        _save(base, root / repo, layout=layout, tokenizer_dir=tokenizer_dir, base=BASE, title=repo)
    base.load_state_dict(state)
    _decoys(world, base=base, tokenizer_dir=tokenizer_dir, seed=seed)
    stamp.write_text(json.dumps({"key": key, "finetunes": world.finetunes, "decoys": world.decoys}))
    return world


def _decoys(world: ScaleWorld, *, base, tokenizer_dir: Path, seed: int) -> None:
    root = world.root
    narrow = random_t5({**T5_SMALL, "d_model": 256, "d_ff": 1024}, tokenizer_dir=tokenizer_dir, seed=seed + 7)
    _save(
        narrow,
        root / f"{ORG}/decoy-narrow",
        layout="single",
        tokenizer_dir=tokenizer_dir,
        base=BASE,
        title="x",
    )
    world.decoys[f"{ORG}/decoy-narrow"] = "config_mismatch"
    stranger = random_t5(T5_SMALL, tokenizer_dir=tokenizer_dir, seed=seed + 11)  # claims the base, is not
    _save(
        stranger,
        root / f"{ORG}/decoy-stranger",
        layout="single",
        tokenizer_dir=tokenizer_dir,
        base=BASE,
        title="x",
    )
    world.decoys[f"{ORG}/decoy-stranger"] = "lineage_mismatch"
    _perturb(base, seed=seed + 13, scale=0.01)
    cut = root / f"{ORG}/decoy-truncated"
    _save(base, cut, layout="single", tokenizer_dir=tokenizer_dir, base=BASE, title="x")
    weights = cut / "model.safetensors"
    with weights.open("r+b") as fh:
        fh.truncate(int(weights.stat().st_size * 0.6))
    world.decoys[f"{ORG}/decoy-truncated"] = "integrity"
