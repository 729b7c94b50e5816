"""The search space: which candidates enter, how a trial names their coefficients, and the first trials.

Per candidate i: `use:<repo_id>` (include it or not) and, when included, `lambda:<repo_id>` in
[0, lambda_max].

Candidate rule: each task's own fine-tuned model (its *reference*) and that model's best screened helpers.
A one-task study's reference is the target itself, which is not an ingredient of its own composition:
its candidates are the target's screened helpers with a positive gain, best first, at most `top_k`; when
none has a positive gain, the `top_k` best anyway (a combination can help where no single candidate
does). Several tasks each have their own reference (named, or the one target the registry screened for
the task): every reference enters, then the references' positive helpers round-robin up to `top_k`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from registry.pins import Pinned, Resolved
from search.errors import SearchError
from search.screen.store import rank_key, screened_candidates
from search.study.config import SearchConfig
from search.study.context import Candidate
from search.study.references import resolve_references

USE_PREFIX = "use:"
LAMBDA_PREFIX = "lambda:"
WARM_PARTNERS = 3
"""Candidates after the best one that the warm start pairs with it (the top 4 of the screening)."""
# Warm start from references: every reference at one of these lambdas (FusionBench's global lambda is 0.3).
WARM_UNIFORM = (0.3, 0.5, 1.0)


def use_param(repo_id: str) -> str:
    return f"{USE_PREFIX}{repo_id}"


def lambda_param(repo_id: str) -> str:
    return f"{LAMBDA_PREFIX}{repo_id}"


def coefficients_from_params(params: dict[str, Any], repos: Sequence[str]) -> list[float]:
    """The coefficient of each candidate (0 when not included) from a trial's parameters."""
    return [float(params.get(lambda_param(r), 0.0)) if params.get(use_param(r)) else 0.0 for r in repos]


def select_candidates(
    screenings: Sequence[dict[str, Any]], *, top_k: int, min_gain: float = 0.0
) -> list[dict[str, Any]]:
    """The target's own screened helpers: gains above `min_gain` best first (at most `top_k`), else the
    `top_k` best.

    Args:
        screenings: screening dicts with `candidate_repo`, `gain` (and the rest of the row).
        top_k: the cap.
        min_gain: a helper enters when its screened gain is above this (points on the search split).

    Returns:
        The chosen screenings, best gain first (ties broken by repo id for determinism; full-split rows
        before those a racing screen dropped on a prefix: `rank_key`): always a prefix of that order, so
        their number alone says which they are.
    """
    ranked = sorted(screenings, key=rank_key)  # full-split rows before those a racing screen dropped
    positive = [s for s in ranked if s["gain"] > min_gain]
    return (positive or ranked)[:top_k]


def multitask_candidates(
    references: dict[str, dict[str, Any]],
    helpers: dict[str, Sequence[dict[str, Any]]],
    *,
    top_k: int,
    skip_revisions: Sequence[str] = (),
    min_gain: float = 0.0,
) -> list[dict[str, Any]]:
    """Ingredients from several references: every task's reference, then helpers round-robin up to `top_k`.

    Args:
        references: task -> pinned reference `{repo_id, revision}` (the task's own fine-tuned model).
        helpers: task -> that reference's screenings (any order; gains above `min_gain` only are used).
        top_k: total cap; references always enter, helpers fill the places left.
        skip_revisions: revisions that cannot be ingredients (the target itself).
        min_gain: a helper enters when its screened gain is above this.

    Returns:
        Candidate dicts `{repo_id, revision, best_lambda, gain, role, task}`, references first.
    """
    out: list[dict[str, Any]] = []
    seen = set(skip_revisions)
    for task, ref in references.items():
        if ref["revision"] in seen:
            continue
        seen.add(ref["revision"])
        out.append(
            {
                "repo_id": ref["repo_id"],
                "revision": ref["revision"],
                "best_lambda": 1.0,
                "gain": 0.0,
                "role": "reference",
                "task": task,
            }
        )
    queues = {
        task: [s for s in sorted(rows, key=rank_key) if s["gain"] > min_gain]
        for task, rows in helpers.items()
    }
    while len(out) < top_k and any(queues.values()):
        for task, queue in queues.items():
            while queue and queue[0]["candidate_revision"] in seen:
                queue.pop(0)
            if not queue or len(out) >= top_k:
                continue
            s = queue.pop(0)
            seen.add(s["candidate_revision"])
            out.append(
                {
                    "repo_id": s["candidate_repo"],
                    "revision": s["candidate_revision"],
                    "best_lambda": s["best_lambda"],
                    "gain": s["gain"],
                    "role": "helper",
                    "task": task,
                }
            )
    return out


def warm_start_params(
    candidates: Sequence[dict[str, Any]], *, lambda_max: float, partners: int = WARM_PARTNERS
) -> list[dict[str, Any]]:
    """First trials over screened helpers, in this order:

    1. the best single candidate at its screened lambda (the best-single baseline);
    2. every candidate at its own screened lambda (the add-all baseline). These two run inside the
       pruner's warm-up (`sampling.PATIENT_TRIALS`), so a search never ends below either on its own split;
    3. the best single paired with each of the next `partners` candidates, one of the two at half its
       screened lambda (two vectors each at its own best lambda usually overshoot, as add-all does). A
       partner weak alone can fix what the best one misses, and a sampler rarely lands on such a pair
       in a small budget: measured on the pico zoo of seed 0, every task's best pair on the search split
       was one of these, above the best single on both splits (RTE 70.0 vs 67.0 search, 73.8 vs 68.0
       held-out), where 24 trials of TPE had ended on the best single on three of four tasks;
    4. all candidates at one uniform lambda: the median of the screened ones, and FusionBench's 0.3.
    """
    if not candidates:
        return []
    repos = [c["candidate_repo"] for c in candidates]
    lam = {c["candidate_repo"]: _clamp(c["best_lambda"], lambda_max) for c in candidates}
    out: list[dict[str, Any]] = []

    def add(coefs: dict[str, float]) -> None:
        params = _trial_params(repos, coefs)
        if params not in out:
            out.append(params)

    top = repos[0]
    add({top: lam[top]})
    if len(repos) == 1:
        return out
    add(dict(lam))
    for other in repos[1 : 1 + partners]:
        add({top: lam[top], other: lam[other] / 2})
        add({top: lam[top] / 2, other: lam[other]})
    lambdas = sorted(lam.values())
    for uniform in (lambdas[len(lambdas) // 2], min(lambda_max, WARM_UNIFORM[0])):
        add(dict.fromkeys(repos, uniform))
    return out


def _clamp(lam: float, lambda_max: float) -> float:
    return min(lambda_max, max(0.0, lam))


def _trial_params(repos: Sequence[str], coefs: dict[str, float]) -> dict[str, Any]:
    """The study parameters of one composition: each of `repos` in or out, and the lambdas of those in."""
    params: dict[str, Any] = {use_param(r): r in coefs for r in repos}
    params.update({lambda_param(r): v for r, v in coefs.items()})
    return params


def multitask_warm_start(
    candidates: Sequence[dict[str, Any]], *, lambda_max: float, lambdas: Sequence[float] = WARM_UNIFORM
) -> list[dict[str, Any]]:
    """First trials over references: every reference (and no helper) at one uniform lambda each, then
    each reference alone at its lambda (the best-single baseline's candidates), so the search starts from
    the baselines it is shown beside.

    The singles were left out before, from a measurement on the 200 train rows that overrated cola-ft
    alone (96 trials, zoo seeds 0 to 2: 2 of 7 searches seeded with them ended on one vector, 1 of 9
    without). Measured again from the validation half, 192 trials, zoo v8 seeds 0, 1, 3, 4 (held-out,
    without -> with them): 70.90 -> 71.53 (rte-ft + cola-ft both times; with them sst2-ft at 0.06 too),
    71.89 -> 71.89, 66.64 -> 68.45 and 62.36 -> 67.80. On seed 4 the search without them ended below
    cola-ft alone on its own split (65.11 against 66.34); on seeds 3 and 4 with them it ends on cola-ft
    alone, scaled (x0.76, x0.91).
    """
    repos = [c["repo_id"] for c in candidates]
    refs = {c["repo_id"] for c in candidates if c.get("role") == "reference"} or set(repos)
    in_order = [r for r in repos if r in refs]
    out = [_trial_params(repos, dict.fromkeys(in_order, min(lambda_max, lam))) for lam in lambdas]
    alone = {c["repo_id"]: float(c.get("best_lambda", 1.0)) for c in candidates}
    out += [_trial_params(repos, {ref: _clamp(alone[ref], lambda_max)}) for ref in sorted(refs)]
    return out


def warm_start(candidates: Sequence[Candidate], *, lambda_max: float) -> list[dict[str, Any]]:
    """The trials enqueued into a new study: from the references when the candidates came from them,
    else from the target's screened helpers."""
    if any(c.role is not None for c in candidates):
        return multitask_warm_start([c.to_dict() for c in candidates], lambda_max=lambda_max)
    return warm_start_params(
        [{"candidate_repo": c.repo_id, "best_lambda": c.best_lambda} for c in candidates],
        lambda_max=lambda_max,
    )


@dataclass(frozen=True)
class Space:
    """What a new study searches over, found in the registry before any model loads.

    Attributes:
        references: task -> its own fine-tuned model, scored apart from the target (several tasks); empty
            when the target is the task's own model (one task).
        candidates: the ingredients, in coefficient order.
    """

    references: dict[str, Pinned]
    candidates: tuple[Candidate, ...]


def no_screenings_error(config: SearchConfig, target_repo: str) -> SearchError:
    source = "" if config.search_from == "train" else f" --search-from {config.search_from}"
    return SearchError(
        f"no screened candidates for {config.task} on {target_repo}: run "
        f"`taskvec screen --task {config.task} --target {config.target}{source}` first (same --data)"
    )


def find_space(config: SearchConfig, resolved: Resolved, *, fingerprints: dict[str, str]) -> Space:
    """The candidates of a new study from the registry's screenings (and each task's reference).

    Args:
        config: the search.
        resolved: its target and base.
        fingerprints: task -> fingerprint of its search split (screenings are matched on it).

    Raises:
        SearchError: no screened candidate, no reference, or no ingredient besides the target itself.
    """
    # The one place the number of tasks decides something: one task's own model is the target.
    if len(config.tasks) > 1:
        references = resolve_references(
            tasks=config.tasks,
            explicit=config.references,
            resolved=resolved,
            fingerprints=fingerprints,
            db_url=config.db_url,
        )
    else:
        references = {}
    sources = references or {config.task: resolved.target}
    helpers = {
        task: screened_candidates(
            task=task,
            target_revision=pin.revision,
            split_fingerprint=fingerprints[task],
            db_url=config.db_url,
        )
        for task, pin in sources.items()
    }
    if not references:
        chosen = select_candidates(helpers[config.task], top_k=config.top_k, min_gain=config.min_gain)
        if not chosen:
            raise no_screenings_error(config, resolved.target.repo_id)
        candidates = [
            Candidate(
                repo_id=s["candidate_repo"],
                revision=s["candidate_revision"],
                best_lambda=s["best_lambda"],
                gain=s["gain"],
            )
            for s in chosen
        ]
        return Space(references={}, candidates=tuple(candidates))
    found = multitask_candidates(
        {t: {"repo_id": r.repo_id, "revision": r.revision} for t, r in references.items()},
        helpers,
        top_k=config.top_k,
        skip_revisions=[resolved.target.revision, resolved.base.revision],
        min_gain=config.min_gain,
    )
    if not found:
        raise SearchError(
            f"{config.label}: no ingredient besides the target itself; name other fine-tuned models "
            "with --reference TASK=REPO"
        )
    return Space(references=references, candidates=tuple(Candidate.from_dict(c) for c in found))
