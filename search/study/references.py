"""Each task's own fine-tuned model (its *reference*) for a multi-task study."""

from __future__ import annotations

from collections.abc import Sequence

from registry.errors import RegistryError
from registry.pins import Pinned, Resolved, located, resolve_target
from search.errors import SearchError
from search.screen.store import screened_targets


def resolve_references(
    *,
    tasks: Sequence[str],
    explicit: dict[str, str],
    resolved: Resolved,
    fingerprints: dict[str, str],
    db_url: str | None = None,
) -> dict[str, Pinned]:
    """Each task's own fine-tuned model (its *reference*) for a multi-task search.

    A task named in `explicit` takes that repo or folder; any other takes the one target the registry
    screened for it on the same search split against the same base (`taskvec screen` records it).

    Args:
        tasks: the searched tasks.
        explicit: task -> repo id or folder, from `--reference`.
        resolved: the search's target and base.
        fingerprints: task -> fingerprint of its search split.
        db_url: taskvec database URL.

    Returns:
        task -> pinned reference, in the order of `tasks`.

    Raises:
        SearchError: a reference that is not compatible with the same base, or none (or several) screened.
    """
    out: dict[str, Pinned] = {}
    for task in tasks:
        if task in explicit:
            ref = resolve_target(explicit[task], db_url=db_url)
            if ref.base.revision != resolved.base.revision:
                raise SearchError(
                    f"--reference {task}={explicit[task]}: checked against base {ref.base.repo_id}@"
                    f"{ref.base.revision[:8]}, not the target's {resolved.base.repo_id}@{resolved.base.revision[:8]}"
                )
            out[task] = ref.target
            continue
        found = screened_targets(
            task=task,
            split_fingerprint=fingerprints[task],
            base=resolved,
            db_url=db_url,
        )
        if not found:
            raise SearchError(
                f"{task}: no fine-tuned model of this task is known; name one with --reference {task}=REPO, "
                f"or screen it first (`taskvec screen --task {task} --target REPO`, same --data)"
            )
        if len(found) > 1:
            names = ", ".join(f"{p.repo_id}@{p.revision[:8]}" for p in found)
            raise SearchError(
                f"{task}: several fine-tuned models were screened ({names}); choose one with --reference"
            )
        try:
            out[task] = located(found[0])
        except RegistryError as exc:
            raise SearchError(f"{found[0].repo_id}: {exc}") from exc
    return out
