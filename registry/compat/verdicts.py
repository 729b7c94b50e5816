"""What a check concludes: statuses, reason codes, the `Reject` a failing check raises, and the reports.

A reason reads `"<code>: <detail>"`; codes are the `REASON_*` constants and map to a status
(`STATUS_BY_CODE`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

STATUS_COMPATIBLE = "compatible"
STATUS_INCOMPATIBLE = "incompatible"
STATUS_UNVERIFIED = "unverified"
STATUS_BROKEN = "broken"
STATUSES = (STATUS_COMPATIBLE, STATUS_INCOMPATIBLE, STATUS_UNVERIFIED, STATUS_BROKEN)

REASON_CONFIG = "config_mismatch"
REASON_NOT_T5 = "not_t5"
REASON_TOKENIZER = "tokenizer_mismatch"
REASON_TENSOR = "tensor_mismatch"
REASON_LINEAGE = "lineage_mismatch"
REASON_INTEGRITY = "integrity"
REASON_PICKLE = "pickle_only"
REASON_MALFORMED = "malformed"  # a file we must read is missing or unparsable (config.json, index)

STATUS_BY_CODE = {
    REASON_CONFIG: STATUS_INCOMPATIBLE,
    REASON_NOT_T5: STATUS_INCOMPATIBLE,
    REASON_TOKENIZER: STATUS_INCOMPATIBLE,
    REASON_TENSOR: STATUS_INCOMPATIBLE,
    REASON_LINEAGE: STATUS_INCOMPATIBLE,
    REASON_INTEGRITY: STATUS_BROKEN,
    REASON_MALFORMED: STATUS_BROKEN,
    REASON_PICKLE: STATUS_UNVERIFIED,
}


class Reject(Exception):
    """A check failed: `code` is one of the REASON_* codes, `detail` says what was seen."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class BaseProfile:
    """What every compatible checkpoint must match, computed once per sync from the base."""

    repo_id: str
    revision: str
    source: str
    architecture: str | None
    shape_config: Mapping[str, object]
    config_fingerprint: str
    tokenizer_fingerprint: str | None
    vocabs: Mapping[str, Mapping[str, int]]
    tensor_shapes: Mapping[str, tuple[int, ...]]
    tensor_fingerprint: str
    probes: Mapping[str, np.ndarray] = field(repr=False)


@dataclass(frozen=True)
class CheckReport:
    """The outcome of checking one repo at one revision."""

    repo_id: str
    revision: str
    status: str
    reason: str | None
    architecture: str | None = None
    model_type: str | None = None
    config_fingerprint: str | None = None
    tokenizer_fingerprint: str | None = None
    tensor_fingerprint: str | None = None
    lineage_distance: float | None = None
    weights_verified: bool = False

    @property
    def reason_code(self) -> str | None:
        """The reason's code (`config_mismatch`, ...), or None when compatible."""
        return self.reason.split(":", 1)[0] if self.reason else None


def sha256_hex(data: bytes) -> str:
    """sha256 of `data`, hex."""
    return hashlib.sha256(data).hexdigest()


def json_fingerprint(obj: object) -> str:
    """sha256 of `obj`'s canonical JSON (sorted keys, no spaces)."""
    return sha256_hex(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())
