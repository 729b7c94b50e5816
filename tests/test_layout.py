"""The layout the architecture promises, checked over the source (ARCHITECTURE.md, "Layout").

`python -m tests.test_layout` prints the largest modules and the longest functions.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("registry", "search", "benchmarks")
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
# Stages in pipeline order: a stage may import only the stages before it (and registry, alembic-free).
STAGES = (
    "search.errors",
    "search.tasks",
    "search.scoring",
    "search.vectors",
    "search.tables",
    "search.finetune",
    "search.screen",
    "search.study",
    "search.leaderboard",
    "search.export",
    "search.cli",
)


def modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def module_lines() -> list[tuple[int, str]]:
    return sorted(
        ((len(p.read_text().splitlines()), str(p.relative_to(ROOT))) for p in modules()), reverse=True
    )


def function_lines() -> list[tuple[int, str]]:
    out = []
    for path in modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                out.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(ROOT)}:{node.name}"))
    return sorted(out, reverse=True)


def imports_of(path: Path) -> list[str]:
    """Every module `path` imports (at any depth in the file)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
    return names


def stage_of(module: str) -> int | None:
    for i, stage in enumerate(STAGES):
        if module == stage or module.startswith(stage + "."):
            return i
    return None


def dotted(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def test_no_module_over_the_limit() -> None:
    over = [(n, m) for n, m in module_lines() if n > MAX_MODULE_LINES]
    assert not over, f"modules over {MAX_MODULE_LINES} lines: {over}"


def test_no_function_over_the_limit() -> None:
    over = [(n, f) for n, f in function_lines() if n > MAX_FUNCTION_LINES]
    assert not over, f"functions over {MAX_FUNCTION_LINES} lines: {over}"


def test_registry_imports_nothing_from_search() -> None:
    bad = [
        (str(p.relative_to(ROOT)), name)
        for p in (ROOT / "registry").rglob("*.py")
        for name in imports_of(p)
        if name == "search" or name.startswith("search.")
    ]
    assert not bad, bad


@pytest.mark.parametrize("path", [p for p in modules() if dotted(p).startswith("search.")], ids=dotted)
def test_a_stage_imports_only_stages_before_it(path: Path) -> None:
    own = stage_of(dotted(path))
    assert own is not None, f"{dotted(path)} is in no stage of STAGES"
    later = sorted({n for n in imports_of(path) if (s := stage_of(n)) is not None and s > own})
    assert not later, f"{dotted(path)} imports later stages: {later}"


if __name__ == "__main__":
    top = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    print("largest modules:", *(f"  {n:4d} {m}" for n, m in module_lines()[:top]), sep="\n")
    print("longest functions:", *(f"  {n:4d} {f}" for n, f in function_lines()[:top]), sep="\n")
