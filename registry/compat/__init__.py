"""Is a checkpoint compatible with a base model? Cheapest checks first, each failing with a named reason.

1. config (`config.json`, a few KB): model type, architecture, every shape-defining field (`config`);
2. tokenizer (small files): same vocabulary (`tokenizer`);
3. tensors (safetensors headers only): same names and shapes after normalising tied names, no extra heads
   (`tensors`);
4. lineage (a few small byte ranges of weights): relative distance to the base below a calibrated threshold
   (`lineage`);
5. integrity (when weights are fetched): valid headers, sizes that match, no NaN/inf (`tensors`).

Before them, links: a repo holding a link out of it is refused (`folder.check_links`). The checks that need
no base (links, config types and bounds, headers, config against weights) also run on any folder given by
path (`check_folder`), so every loader refuses what the registry refuses, with the same reason.

A reason reads `"<code>: <detail>"`; codes are the `REASON_*` constants and map to a status
(`STATUS_BY_CODE`, in `verdicts`). Nothing here executes checkpoint code or unpickles anything.
"""

from __future__ import annotations

from registry.compat.config import (
    ARCHITECTURE_FIELDS,
    CONFIG_LIMITS,
    SHAPE_FIELDS,
    T5_ARCH_PREFIXES,
    architecture_of,
    check_config,
    check_t5_config,
    parse_config,
    shape_config,
)
from registry.compat.folder import FolderReport, check_folder, check_links
from registry.compat.lineage import (
    LINEAGE_PROBES,
    check_lineage,
    lineage_distance,
    load_pickled_state,
    probe_window,
    probes_from_state,
    read_probes,
    torch_isfinite_all,
)
from registry.compat.tensors import (
    ReadRange,
    SafetensorsLayout,
    TensorEntry,
    check_layout_config,
    check_tensors,
    decode,
    normalized_shapes,
    parse_safetensors_header,
    read_layout,
    scan_weights,
    tensor_fingerprint,
)
from registry.compat.tokenizer import (
    VOCAB_FILES,
    check_tokenizer,
    tokenizer_fingerprint,
    vocab_files,
    vocabs_from_files,
)
from registry.compat.verdicts import (
    REASON_CONFIG,
    REASON_INTEGRITY,
    REASON_LINEAGE,
    REASON_MALFORMED,
    REASON_NOT_T5,
    REASON_PICKLE,
    REASON_TENSOR,
    REASON_TOKENIZER,
    STATUS_BROKEN,
    STATUS_BY_CODE,
    STATUS_COMPATIBLE,
    STATUS_INCOMPATIBLE,
    STATUS_UNVERIFIED,
    STATUSES,
    BaseProfile,
    CheckReport,
    Reject,
    json_fingerprint,
)
from registry.constants import CONFIG_NAME, LINEAGE_MAX_DISTANCE, PYTORCH_INDEX, PYTORCH_SINGLE
from registry.errors import ModelError
from registry.sources import RepoInfo, Source

__all__ = [
    "ARCHITECTURE_FIELDS",
    "CONFIG_LIMITS",
    "LINEAGE_MAX_DISTANCE",
    "LINEAGE_PROBES",
    "REASON_CONFIG",
    "REASON_INTEGRITY",
    "REASON_LINEAGE",
    "REASON_MALFORMED",
    "REASON_NOT_T5",
    "REASON_PICKLE",
    "REASON_TENSOR",
    "REASON_TOKENIZER",
    "SHAPE_FIELDS",
    "STATUSES",
    "STATUS_BROKEN",
    "STATUS_BY_CODE",
    "STATUS_COMPATIBLE",
    "STATUS_INCOMPATIBLE",
    "STATUS_UNVERIFIED",
    "T5_ARCH_PREFIXES",
    "VOCAB_FILES",
    "BaseProfile",
    "CheckReport",
    "FolderReport",
    "ReadRange",
    "Reject",
    "SafetensorsLayout",
    "TensorEntry",
    "architecture_of",
    "check_config",
    "check_folder",
    "check_layout_config",
    "check_links",
    "check_lineage",
    "check_repo",
    "check_t5_config",
    "check_tensors",
    "check_tokenizer",
    "decode",
    "lineage_distance",
    "load_pickled_state",
    "normalized_shapes",
    "parse_config",
    "parse_safetensors_header",
    "probe_window",
    "probes_from_state",
    "profile_base",
    "read_layout",
    "read_probes",
    "scan_weights",
    "shape_config",
    "tensor_fingerprint",
    "tokenizer_fingerprint",
    "torch_isfinite_all",
    "vocab_files",
    "vocabs_from_files",
]


def profile_base(source: Source, info: RepoInfo) -> BaseProfile:
    """Everything a checkpoint is compared with, read from the base repo (config, tokenizer, headers, probes).

    Raises:
        ModelError: if the base itself is not a readable T5 safetensors checkpoint.
    """
    try:
        check_links(info)
        if CONFIG_NAME not in info.files:
            raise Reject(REASON_MALFORMED, f"no {CONFIG_NAME}")
        config = parse_config(info.repo_id, source.read_file(info.repo_id, info.revision, CONFIG_NAME))
        # a malformed base (`d_model: "64"`) would make every checkpoint a config_mismatch: refuse it here
        shapes_cfg = check_t5_config(config)
        vocabs = vocab_files(source, info)
        layout = read_layout(source, info)
        if layout is None:
            raise Reject(REASON_PICKLE, "the base has no safetensors weights")
        tensor_shapes = normalized_shapes(layout, tied=bool(shapes_cfg["tie_word_embeddings"]))
        check_layout_config(tensor_shapes, shapes_cfg)
        probes = read_probes(source, info, layout)
    except Reject as exc:
        raise ModelError(f"base {info.repo_id}@{info.revision[:12]}: {exc}") from exc
    return BaseProfile(
        repo_id=info.repo_id,
        revision=info.revision,
        source=source.name,
        architecture=architecture_of(config),
        shape_config=shapes_cfg,
        config_fingerprint=json_fingerprint(shapes_cfg),
        tokenizer_fingerprint=tokenizer_fingerprint(vocabs),
        vocabs=vocabs_from_files(vocabs),
        tensor_shapes=tensor_shapes,
        tensor_fingerprint=tensor_fingerprint(tensor_shapes),
        probes=probes,
    )


# --- the pipeline: each step records what it saw in `found` (kept in the report even when a later
# step rejects) and raises Reject to stop ------------------------------------------------------------


def _check_metadata(source: Source, info: RepoInfo, base: BaseProfile, found: dict[str, object]) -> bool:
    """Links, then checks 1-2 (config, tokenizer). Returns whether the checkpoint ties its word embeddings.

    A checkpoint's config and tensors must equal the base's, which passed `check_layout_config`, so that
    check need not run again on checkpoints.
    """
    check_links(info)
    if CONFIG_NAME not in info.files:
        raise Reject(REASON_MALFORMED, f"no {CONFIG_NAME} in the repo")
    config = parse_config(info.repo_id, source.read_file(info.repo_id, info.revision, CONFIG_NAME))
    found["model_type"] = str(config.get("model_type")) if config.get("model_type") is not None else None
    found["architecture"] = architecture_of(config)
    shapes_cfg = check_config(config, base.shape_config)
    found["config_fingerprint"] = json_fingerprint(shapes_cfg)

    found["tokenizer_fingerprint"] = check_tokenizer(
        vocab_files(source, info), base_fingerprint=base.tokenizer_fingerprint, base_vocabs=base.vocabs
    )
    return bool(shapes_cfg["tie_word_embeddings"])


def _check_pickled(
    source: Source, info: RepoInfo, base: BaseProfile, found: dict[str, object], *, tied: bool
) -> None:
    """Checks 3-5 on pickle-only weights, downloaded and loaded with weights_only=True."""
    state = load_pickled_state(source, info)
    shapes = normalized_shapes({k: tuple(v.shape) for k, v in state.items()}, tied=tied)
    found["tensor_fingerprint"] = tensor_fingerprint(shapes)
    check_tensors(shapes, base.tensor_shapes)
    found["lineage_distance"] = distance = lineage_distance(probes_from_state(state), base.probes)
    check_lineage(distance, info, base)
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch_isfinite_all(tensor)):
            raise Reject(REASON_INTEGRITY, f"{name} holds NaN or inf values")
    found["weights_verified"] = True


def _check_safetensors(
    source: Source,
    info: RepoInfo,
    base: BaseProfile,
    found: dict[str, object],
    *,
    layout: SafetensorsLayout,
    tied: bool,
    verify_weights: bool,
) -> None:
    """Checks 3-4 from headers and probe windows; check 5 (a full scan) when `verify_weights`."""
    shapes = normalized_shapes(layout, tied=tied)
    found["tensor_fingerprint"] = tensor_fingerprint(shapes)
    check_tensors(shapes, base.tensor_shapes)

    distance = lineage_distance(read_probes(source, info, layout), base.probes)
    found["lineage_distance"] = distance
    check_lineage(distance, info, base)

    if verify_weights:
        scan_weights(source, info, layout)
        found["weights_verified"] = True


def _check_weights(
    source: Source,
    info: RepoInfo,
    base: BaseProfile,
    found: dict[str, object],
    *,
    tied: bool,
    verify_weights: bool,
    verify_pickles: bool,
) -> None:
    """Checks 3-5 on whichever weights the repo has: safetensors first, pickles only when asked."""
    layout = read_layout(source, info)
    if layout is not None:
        _check_safetensors(source, info, base, found, layout=layout, tied=tied, verify_weights=verify_weights)
        return
    if PYTORCH_SINGLE not in info.files and PYTORCH_INDEX not in info.files:
        raise Reject(REASON_MALFORMED, "no weights (neither safetensors nor pytorch_model.bin)")
    if not verify_pickles:
        raise Reject(
            REASON_PICKLE,
            f"only {PYTORCH_SINGLE} (pickle): shapes and lineage unchecked until downloaded "
            "and read with weights_only=True",
        )
    _check_pickled(source, info, base, found, tied=tied)


def check_repo(
    source: Source,
    info: RepoInfo,
    base: BaseProfile,
    *,
    verify_weights: bool = True,
    verify_pickles: bool = False,
) -> CheckReport:
    """Run the checks on one repo, cheapest first, stopping at the first failure.

    Args:
        source: where the repo lives.
        info: the repo pinned to a revision.
        base: the base's profile.
        verify_weights: fetch the weights of repos that pass checks 1-4 and scan them (check 5); the
            download is what screening needs anyway (cached by the source).
        verify_pickles: download pickle-only weights and check them (loaded with weights_only=True);
            otherwise such repos stay `unverified`.

    Returns:
        The report; `status` is `compatible` only if every check passed.

    Raises:
        RegistryError: for transient failures (network, rate limits) that must not be recorded as a verdict.
    """
    found: dict[str, object] = {}
    status, reason = STATUS_COMPATIBLE, None
    try:
        tied = _check_metadata(source, info, base, found)
        _check_weights(
            source,
            info,
            base,
            found,
            tied=tied,
            verify_weights=verify_weights,
            verify_pickles=verify_pickles,
        )
    except Reject as exc:
        status, reason = STATUS_BY_CODE[exc.code], str(exc)
    return CheckReport(repo_id=info.repo_id, revision=info.revision, status=status, reason=reason, **found)
