"""Shared fixtures. `tiny_zoo`: the pico zoo at tiny scale, built once per test session.

Set `TASKVEC_TEST_ZOO=/some/dir` to build it there once and reuse it across test runs (the build is
cached by a `.complete` stamp); otherwise it is built in a session temp dir.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV_TEST_ZOO = "TASKVEC_TEST_ZOO"


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a built tiny pico zoo (`zoo.json`, `glue/`, `aux/`, `hub/pico/...`)."""
    from benchmarks.zoo import build

    cached = os.environ.get(ENV_TEST_ZOO)
    out = Path(cached) if cached else tmp_path_factory.mktemp("zoo") / "tiny"
    return build(out=out, seed=0, scale="tiny", progress=False)
