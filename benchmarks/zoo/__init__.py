"""The offline pico zoo: synthetic GLUE-layout data and a Hub-like folder of pico T5 repos.

`build(out=DIR, seed=0, scale="full"|"tiny")` writes it (cached); `load_manifest(DIR)` reads `zoo.json`.
"""

from benchmarks.zoo.build import BASE_REPO, build, is_complete, load_manifest

__all__ = ["BASE_REPO", "build", "is_complete", "load_manifest"]
