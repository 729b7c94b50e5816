"""Task arithmetic (Ilharco et al.): combine = sum_i lambda_i tau_i, a plain weighted sum."""

from __future__ import annotations

from search.vectors.methods.base import MergeMethod


class TaskArithmetic(MergeMethod):
    """theta = theta_T + sum_i lambda_i tau_i. No options."""

    name = "task_arithmetic"
    linear = True
    defaults = {}
