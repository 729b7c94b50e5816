"""Task vectors: tau = theta_finetuned - theta_base, per canonical tensor, in fp32, with their arithmetic.

A `TaskVector` holds fp32 deltas keyed by canonical tensor names (see `search.vectors.checkpoint`), so a
tied embedding is one delta. Arithmetic (`a + b`, `a - b`, `-a`, `2.0 * a`, `sum`, the analogy
`c + (b - a)`) always yields new fp32 vectors; composing many vectors on a live model is the
`Composer`'s job (`search.vectors.composer`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from registry.errors import ModelError
from registry.sources.local import content_sha
from search.vectors.checkpoint import (
    Checkpoint,
    check_finite,
    check_keys,
    check_same_architecture,
    model_parameters,
)


class TaskVector:
    """Per-tensor deltas tau = theta_finetuned - theta_base, keyed by canonical tensor name.

    Args:
        deltas: canonical name -> delta tensor (fp32, or bf16 when loaded from a bf16 cache).
        vector_id: identity of the fine-tuned checkpoint (its revision); seeds DARE's masks, so a
            vector's masks do not depend on which other vectors it is combined with.

    Arithmetic returns new fp32 vectors: `a + b`, `a - b`, `-a`, `2.0 * a`, `sum([a, b])`, and the
    analogy `c + (b - a)`.
    """

    def __init__(self, deltas: Mapping[str, torch.Tensor], *, vector_id: str = "") -> None:
        self.deltas = dict(deltas)
        self.vector_id = vector_id

    # construction

    @classmethod
    def from_checkpoints(cls, *, base: Path, finetuned: Path, vector_id: str | None = None) -> TaskVector:
        """tau = finetuned - base, computed in fp32 tensor by tensor.

        Args:
            base: the pretrained checkpoint folder.
            finetuned: the fine-tuned checkpoint folder.
            vector_id: identity recorded on the vector (default: the folder's content sha).

        Returns:
            The task vector.

        Raises:
            ModelError: configs that differ, a missing or extra tensor, mismatched shapes, NaN/inf,
                or an unreadable weight file; the message names the folder and tensor.
        """
        base, finetuned = Path(base), Path(finetuned)
        check_same_architecture(base, finetuned)
        b, f = Checkpoint(base), Checkpoint(finetuned)
        if b.untied_lm_head != f.untied_lm_head:
            raise ModelError(
                f"{finetuned}: lm_head is {'untied' if f.untied_lm_head else 'tied'} but "
                f"{'untied' if b.untied_lm_head else 'tied'} in the base {base}"
            )
        missing = sorted(set(b.names) - set(f.names))
        if missing:
            raise ModelError(f"{finetuned}: missing tensor {missing[0]} (present in the base)")
        extra = sorted(set(f.names) - set(b.names))
        if extra:
            raise ModelError(f"{finetuned}: extra tensor {extra[0]} (not in the base)")
        deltas: dict[str, torch.Tensor] = {}
        for name in sorted(b.names):
            if b.shape(name) != f.shape(name):
                raise ModelError(
                    f"{finetuned}: tensor {name} has shape {list(f.shape(name))}, base has {list(b.shape(name))}"
                )
            tb = b.get(name).to(torch.float32)
            tf = f.get(name).to(torch.float32)
            check_finite(tb, where=str(base), name=name)
            check_finite(tf, where=str(finetuned), name=name)
            deltas[name] = (tf - tb).contiguous()
        if vector_id is None:
            vector_id = content_sha(finetuned)
        return cls(deltas, vector_id=vector_id)

    # inspection

    def __len__(self) -> int:
        return len(self.deltas)

    def keys(self) -> list[str]:
        """Canonical tensor names."""
        return list(self.deltas)

    @property
    def numel(self) -> int:
        """Number of scalar entries."""
        return sum(t.numel() for t in self.deltas.values())

    def _check_compatible(self, other: TaskVector) -> None:
        if set(self.deltas) != set(other.deltas):
            diff = sorted(set(self.deltas) ^ set(other.deltas))
            raise ModelError(f"task vectors differ in tensors (e.g. {diff[0]})")
        for name, t in self.deltas.items():
            if t.shape != other.deltas[name].shape:
                raise ModelError(
                    f"task vectors differ in shape of {name}: {list(t.shape)} vs {list(other.deltas[name].shape)}"
                )

    # arithmetic (always fp32 results)

    def _combine(self, other: TaskVector, alpha: float) -> TaskVector:
        self._check_compatible(other)
        return TaskVector(
            {n: t.float().add(other.deltas[n].float(), alpha=alpha) for n, t in self.deltas.items()}
        )

    def __add__(self, other: TaskVector) -> TaskVector:
        if not isinstance(other, TaskVector):
            return NotImplemented
        return self._combine(other, 1.0)

    def __radd__(self, other: object) -> TaskVector:
        if isinstance(other, (int, float)) and other == 0:  # builtin sum() starts from 0
            return self * 1.0
        return NotImplemented

    def __sub__(self, other: TaskVector) -> TaskVector:
        if not isinstance(other, TaskVector):
            return NotImplemented
        return self._combine(other, -1.0)

    def __neg__(self) -> TaskVector:
        return self * -1.0

    def __mul__(self, scalar: float) -> TaskVector:
        if not isinstance(scalar, (int, float)):
            return NotImplemented
        return TaskVector(
            {n: t.float() * float(scalar) for n, t in self.deltas.items()}, vector_id=self.vector_id
        )

    __rmul__ = __mul__

    @staticmethod
    def sum(vectors: Iterable[TaskVector]) -> TaskVector:
        """Sum of vectors (fp32).

        Raises:
            ModelError: for an empty sequence or vectors over different tensors.
        """
        vectors = list(vectors)
        if not vectors:
            raise ModelError("sum of no task vectors")
        out = TaskVector({n: t.float().clone() for n, t in vectors[0].deltas.items()})
        for v in vectors[1:]:
            out._check_compatible(v)
            for n, t in out.deltas.items():
                t.add_(v.deltas[n].float())
        return out

    def dot(self, other: TaskVector) -> float:
        """Inner product over all entries (fp64 accumulation)."""
        self._check_compatible(other)
        return float(
            sum(
                torch.dot(t.double().flatten(), other.deltas[n].double().flatten())
                for n, t in self.deltas.items()
            )
        )

    def norm(self) -> float:
        """Euclidean norm over all entries."""
        return math.sqrt(sum(float(t.double().square().sum()) for t in self.deltas.values()))

    def cosine(self, other: TaskVector) -> float:
        """Cosine similarity of the flattened vectors (0.0 when either is zero)."""
        denom = self.norm() * other.norm()
        return self.dot(other) / denom if denom > 0 else 0.0

    # application

    def apply_to(self, model: torch.nn.Module, coefficient: float = 1.0) -> None:
        """Add `coefficient * tau` to the model's parameters in place (tied embeddings once).

        Raises:
            ModelError: if the model's parameters do not match the vector's tensors.
        """
        params = model_parameters(model)
        check_keys(params, self.deltas, what="task vector")
        with torch.no_grad():
            for name, delta in self.deltas.items():
                param = params[name]
                if param.shape != delta.shape:
                    raise ModelError(
                        f"task vector: {name} has shape {list(delta.shape)}, model has {list(param.shape)}"
                    )
                param.add_(delta.to(param.dtype), alpha=float(coefficient))


def analogy(*, a: TaskVector, b: TaskVector, c: TaskVector) -> TaskVector:
    """`c + (b - a)`: "a is to b as c is to ?" (Ilharco et al., section 5)."""
    return c + (b - a)
