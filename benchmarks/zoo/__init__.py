"""The offline pico zoo: synthetic GLUE-layout data and a Hub-like folder of pico T5 repos.

`build(out=DIR, seed=0, scale="full"|"tiny")` writes it (cached); `load_manifest(DIR)` reads `zoo.json`;
`full_zoo(DIR | None)` is the benchmarks' default (the seed-0 full zoo at `FULL_ZOO`).
Modules: `world` (constants, scales), `vocab` and `grammar` (the synthetic language), `data` (parquet,
corpus, tokenizer), `base`, `finetunes`, `decoys`, `manifest`, `build` (the steps in order), and
`models`, `tokenizer`, `evaluate` (pico T5 helpers).
"""

from benchmarks.zoo.build import FULL_ZOO, build, full_zoo, is_complete
from benchmarks.zoo.manifest import load_manifest
from benchmarks.zoo.world import BASE_REPO

__all__ = ["BASE_REPO", "FULL_ZOO", "build", "full_zoo", "is_complete", "load_manifest"]
