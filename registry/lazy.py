"""Package namespaces that import a module on first use of one of its names (PEP 562).

Commands that need no model (`taskvec leaderboard`, `--help`) import a light module of a package whose
siblings pull in torch and transformers (about 4.5 s): the package's public names stay where they were,
and each is imported only when first used.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_namespace(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`(__getattr__, __dir__)` for `package`'s `__init__`: each exported name -> the module that defines it.

    Args:
        package: the package's `__name__`.
        exports: public name -> the module it is imported from: a submodule of `package` (`"run"`), or
            a dotted path for a name re-exported from another package.

    Returns:
        Functions to assign to the package's `__getattr__` and `__dir__`.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module if "." in module else f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*exports, *vars(sys.modules[package])})

    return __getattr__, __dir__
