"""Ways to combine task vectors, one module each, behind a registry by name.

Every method computes theta = theta_T + combine({tau_i}, {lambda_i}) and splits its work in two:

- `prepare(tau)`: what does not depend on the coefficients (TIES trimming, DARE's seeded mask), done
  once per vector when a `Composer` is built;
- `combine(chunks, coefs, out=...)`: adds the combination of prepared chunks to `out` in place, for
  one chunk of one tensor; elementwise, so the composer can stream tensors in cache-sized chunks.

`reference(taus, coefs)` is an independent whole-tensor implementation that tests compare against.

Methods: `task_arithmetic` (weighted sum), `ties` (trim, elect sign, disjoint mean), `dare`
(drop and rescale, then weighted sum). Their options are recorded in every recipe.
"""

from __future__ import annotations

from search.vectors.methods.base import MergeMethod, UnknownMethodError
from search.vectors.methods.dare import Dare
from search.vectors.methods.task_arithmetic import TaskArithmetic
from search.vectors.methods.ties import Ties

# The registered methods, by name; a new method is a module here and one entry in this tuple.
_METHODS: dict[str, MergeMethod] = {m.name: m for m in (TaskArithmetic(), Ties(), Dare())}

__all__ = ["MergeMethod", "UnknownMethodError", "get_method", "methods"]


def methods() -> list[str]:
    """Registered method names."""
    return sorted(_METHODS)


def get_method(name: str) -> MergeMethod:
    """The merge method called `name`.

    Raises:
        UnknownMethodError: (a ModelError and ValueError) for an unknown name.
    """
    if name not in _METHODS:
        raise UnknownMethodError(f"unknown merge method {name!r} (choose from {', '.join(sorted(_METHODS))})")
    return _METHODS[name]
