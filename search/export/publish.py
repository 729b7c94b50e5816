"""Publishing an export folder on the Hub: `HfApi.create_repo` then `HfApi.upload_folder`.

The token and endpoint come from the usual Hugging Face environment (`HF_TOKEN` or the saved login,
`HF_ENDPOINT`, `HF_HUB_OFFLINE`). The folder's hidden manifest stays local: it records what the export
wrote on this disk, not what the repo holds. A refusal (no or bad token, no rights on the namespace), an
unreachable Hub or invalid card metadata is one line naming the repo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx2
from huggingface_hub import HfApi
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from registry.errors import RegistryError
from registry.sources import validate_repo_id
from search.errors import SearchError
from search.export.ownership import MANIFEST_FILE


@dataclass(frozen=True)
class Pushed:
    """Where an export went: the repo's URL, its new commit and whether the repo is private."""

    repo_url: str
    commit: str
    private: bool


def _status(exc: HfHubHTTPError) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_target(repo_id: str) -> None:
    """Refuse, before any work, a push that cannot happen: a bad repo id, or offline mode.

    Raises:
        SearchError: one line naming the repo.
    """
    try:
        validate_repo_id(repo_id)
    except RegistryError as exc:
        raise SearchError(f"--push-to-hub {repo_id!r}: {exc} (expected ORG/NAME)") from exc
    if hf_constants.HF_HUB_OFFLINE:
        raise SearchError(f"--push-to-hub {repo_id}: HF_HUB_OFFLINE is set, nothing can be pushed")


def push_folder(
    *,
    folder: Path,
    repo_id: str,
    private: bool = False,
    endpoint: str | None = None,
    token: str | None = None,
    message: str | None = None,
) -> Pushed:
    """Create `repo_id` (kept if it exists) and upload `folder` to it in one commit.

    Args:
        folder: an export folder (`search.export.export_merged`).
        repo_id: `ORG/NAME` on the Hub.
        private: create the repo private (an existing repo keeps its visibility, which `Pushed` reports).
        endpoint: Hub URL (default `HF_ENDPOINT`, else huggingface.co).
        token: access token (default: `HF_TOKEN` or the saved login).
        message: the commit message.

    Raises:
        SearchError: one line naming the repo: a bad repo id, offline mode, a refused token, an
            unreachable Hub, or metadata the Hub rejects.
    """
    check_target(repo_id)
    api = HfApi(endpoint=endpoint, token=token)
    where = f"{repo_id} on {api.endpoint}"
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=Path(folder),
            repo_type="model",
            ignore_patterns=[MANIFEST_FILE],
            commit_message=message or "Upload a taskvec export",
        )
        private = bool(api.repo_info(repo_id, repo_type="model").private)  # an existing repo kept its own
    except OfflineModeIsEnabled as exc:
        raise SearchError(f"{where}: not pushed, HF_HUB_OFFLINE is set") from exc
    except HfHubHTTPError as exc:
        status = _status(exc)
        if status in (401, 403):
            raise SearchError(
                f"{where}: not pushed, the Hub refused the request (HTTP {status}): log in with "
                "`hf auth login` or set HF_TOKEN to a token that may write to that namespace"
            ) from exc
        raise SearchError(f"{where}: not pushed (HTTP {status}): {_first_line(exc)}") from exc
    except httpx2.TransportError as exc:
        raise SearchError(f"{where}: not pushed, the Hub cannot be reached ({_first_line(exc)})") from exc
    except ValueError as exc:  # the Hub rejected the card's metadata (validate-yaml)
        raise SearchError(f"{where}: not pushed, {' '.join(str(exc).split())}") from exc
    return Pushed(repo_url=str(url), commit=str(info.oid), private=private)
