"""The Hugging Face Hub through `huggingface_hub.HfApi`: listing, pinned model info, small files, byte ranges.

Metadata first: config and tokenizer files are downloaded (a few KB), safetensors headers and lineage probes
are read with HTTP Range requests, and whole weight files only for repos that passed every metadata check.
Requests that hit 429 or 5xx are retried with exponential backoff; the token comes from the usual HF
environment (`HF_TOKEN`, the saved login), the endpoint from `endpoint=` or `HF_ENDPOINT`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx2
from huggingface_hub import HfApi, constants, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from registry.constants import HUB_CONNECT_TIMEOUT_S, SAFETENSORS_INDEX, SAFETENSORS_SINGLE, hub_offline
from registry.errors import RegistryError
from registry.sources.interface import (
    MODEL_FILE_PATTERNS,
    CardClaims,
    RepoInfo,
    validate_filename,
    validate_repo_id,
)
from registry.sources.local import claims_from_meta

T = TypeVar("T")

RETRY_STATUS = (408, 429, 500, 502, 503, 504)
# Endpoints that answered a probe in this process (each is probed once, before its first request).
_REACHABLE: set[str] = set()


def unreachable_reason(endpoint: str, *, timeout_s: float = HUB_CONNECT_TIMEOUT_S) -> str | None:
    """Why nothing answers at `endpoint` (one request, no retries), or None when something does.

    Any HTTP status counts as an answer. huggingface_hub's requests have no timeout, and its callers (and
    `datasets`) retry a refused connection for half a minute; a Hub that is not there is better said at
    once. Waits at most `timeout_s` to connect and as long again for the answer; an endpoint that answered
    once in this process is not asked again.
    """
    if endpoint in _REACHABLE:
        return None
    try:
        get_session().head(
            endpoint, timeout=httpx2.Timeout(timeout_s, connect=timeout_s), follow_redirects=False
        )
    except httpx2.TransportError as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}" if str(exc) else type(exc).__name__
    _REACHABLE.add(endpoint)
    return None


def check_reachable(endpoint: str, *, what: str) -> None:
    """`unreachable_reason` as an error; skipped under `HF_HUB_OFFLINE`, where huggingface_hub itself
    makes no request (and serves its cache).

    Raises:
        RegistryError: naming `what` and the endpoint, when nothing answers there.
    """
    reason = None if hub_offline() else unreachable_reason(endpoint)
    if reason is not None:
        raise RegistryError(
            f"{what}: the Hub at {endpoint} cannot be reached ({reason}); set HF_HUB_OFFLINE=1 to use what is cached"
        )


def _status_of(exc: BaseException) -> int | None:
    """The HTTP status behind an exception (looking through causes: hf_hub_download wraps HEAD errors)."""
    seen = 0
    while exc is not None and seen < 5:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _is_network_error(exc: BaseException) -> bool:
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, httpx2.TransportError):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


class HubSource:
    """Checkpoints on the Hub (or a server speaking its API, e.g. the tests' loopback Hub)."""

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        cache_dir: Path | None = None,
        token: str | bool | None = None,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        """Args:
        endpoint: Hub URL (default `HF_ENDPOINT`, else huggingface.co).
        cache_dir: download cache (default: huggingface_hub's).
        token: access token (default: from the HF environment).
        max_retries: retries on 429/5xx/network errors before giving up.
        backoff_s: first wait; doubles each retry, capped at `max_backoff_s` (a Retry-After header wins).
        max_backoff_s: longest wait between retries.
        """
        self.api = HfApi(endpoint=endpoint, token=token)
        self.endpoint = self.api.endpoint.rstrip("/")
        # Rows record where a checkpoint came from: `hub` for huggingface.co, else the endpoint URL
        # (a mirror, the tests' loopback Hub), which `open_source` reopens.
        self.name = "hub" if self.endpoint == constants._HF_DEFAULT_ENDPOINT.rstrip("/") else self.endpoint
        self.cache_dir = str(cache_dir) if cache_dir is not None else None
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.bytes_read = 0
        self.retries = 0

    # --- error handling ----------------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run `fn`, retrying transient failures; turn the rest into one-line RegistryErrors about `what`."""
        attempt = 0
        check_reachable(self.endpoint, what=what)
        while True:
            try:
                return fn()
            except GatedRepoError as exc:
                raise RegistryError(f"{what}: gated repository (accept its terms and set HF_TOKEN)") from exc
            except RepositoryNotFoundError as exc:
                raise RegistryError(f"{what}: repository not found on the Hub (404)") from exc
            except RevisionNotFoundError as exc:
                raise RegistryError(f"{what}: revision not found on the Hub") from exc
            except RemoteEntryNotFoundError as exc:
                raise RegistryError(f"{what}: file not found on the Hub (404)") from exc
            except OfflineModeIsEnabled as exc:
                raise RegistryError(f"{what}: HF_HUB_OFFLINE is set") from exc
            except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
                status = _status_of(exc)
                transient = status in RETRY_STATUS or (status is None and _is_network_error(exc))
                if not transient or attempt >= self.max_retries:
                    label = f"HTTP {status}" if status else type(exc).__name__
                    hint = " (rate limited: set HF_TOKEN or retry later)" if status == 429 else ""
                    first = str(exc).splitlines()[0] if str(exc) else ""
                    raise RegistryError(f"{what}: Hub request failed ({label}){hint}: {first}") from exc
                wait = min(self.backoff_s * 2**attempt, self.max_backoff_s)
                retry_after = getattr(getattr(exc, "response", None), "headers", {}).get("Retry-After")
                if retry_after and retry_after.isdigit():
                    wait = min(float(retry_after), self.max_backoff_s)
                attempt += 1
                self.retries += 1
                time.sleep(wait)

    # --- Source interface --------------------------------------------------------------------------------

    def list_repos(
        self, *, search: str | None = None, filters: tuple[str, ...] = (), limit: int | None = None
    ) -> Iterator[str]:
        """Repo ids from the Hub's model listing (`search` in the id, every tag in `filters`)."""

        def listing() -> list[str]:
            models = self.api.list_models(search=search, filter=list(filters) or None, limit=limit)
            return [m.id for m in models]

        yield from self._call(f"listing models on {self.endpoint}", listing)

    def repo_info(self, repo_id: str, *, revision: str | None = None) -> RepoInfo:
        """Model info pinned to the commit sha (siblings with sizes, card data, popularity).

        Raises:
            RegistryError: if the repo or revision does not exist, or the Hub cannot be reached.
        """
        validate_repo_id(repo_id)
        info = self._call(
            repo_id, lambda: self.api.model_info(repo_id, revision=revision, files_metadata=True)
        )
        if not info.sha:
            raise RegistryError(f"{repo_id}: the Hub returned no commit sha")
        files = {s.rfilename: s.size for s in (info.siblings or [])}
        card_data = info.card_data
        card = claims_from_meta(card_data.to_dict()) if card_data is not None else CardClaims()
        return RepoInfo(
            repo_id=repo_id,
            revision=info.sha,
            files=files,
            card=card,
            tags=tuple(info.tags or ()),
            downloads=info.downloads,
            likes=info.likes,
            last_modified=info.last_modified,
        )

    def file_path(self, repo_id: str, revision: str, filename: str) -> Path:
        """The file downloaded (pinned) into the cache; a cached copy costs nothing."""
        validate_filename(repo_id, filename)
        cached = try_to_load_from_cache(repo_id, filename, cache_dir=self.cache_dir, revision=revision)
        if isinstance(cached, str):
            return Path(cached)
        path = Path(
            self._call(
                f"{repo_id}/{filename}",
                lambda: self.api.hf_hub_download(
                    repo_id=repo_id, filename=filename, revision=revision, cache_dir=self.cache_dir
                ),
            )
        )
        self.bytes_read += path.stat().st_size
        return path

    def read_file(self, repo_id: str, revision: str, filename: str) -> bytes:
        """A small file's bytes (config, tokenizer, index), via the download cache."""
        return self.file_path(repo_id, revision, filename).read_bytes()

    def read_range(self, repo_id: str, revision: str, filename: str, start: int, length: int) -> bytes:
        """`length` bytes from offset `start` with an HTTP Range request (no full download).

        Raises:
            RegistryError: on HTTP errors after retries.
        """
        validate_filename(repo_id, filename)
        if length <= 0:
            return b""
        url = hf_hub_url(repo_id, filename, revision=revision, endpoint=self.endpoint)
        headers = {**build_hf_headers(token=self.api.token), "Range": f"bytes={start}-{start + length - 1}"}

        def get() -> bytes:
            response = get_session().get(url, headers=headers, follow_redirects=True)
            hf_raise_for_status(response)
            self.bytes_read += len(response.content)
            if response.status_code == 206:
                return response.content
            return response.content[start : start + length]  # a server that ignored the Range header

        return self._call(f"{repo_id}/{filename}", get)

    def cached_model_dir(self, repo_id: str, revision: str) -> Path | None:
        """The snapshot folder when the revision's weights are all in the download cache already, else None.

        Weights, not the folder: `registry sync` caches a revision's config and tokenizer files, which
        makes a snapshot folder without its weights. Asks nothing of the Hub.
        """
        validate_repo_id(repo_id)

        def cached(name: str) -> Path | None:
            hit = try_to_load_from_cache(repo_id, name, cache_dir=self.cache_dir, revision=revision)
            return Path(hit) if isinstance(hit, str) else None

        single = cached(SAFETENSORS_SINGLE)
        if single is not None:
            return single.parent
        index = cached(SAFETENSORS_INDEX)
        if index is None:
            return None
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # an unreadable index: let the download fetch the snapshot again
        if not shards or any(cached(str(shard)) is None for shard in shards):
            return None
        return index.parent

    def model_dir(self, repo_id: str, revision: str) -> Path:
        """A snapshot of the repo at `revision` (config, safetensors, tokenizer; never pickles).

        Raises:
            RegistryError: if the download fails.
        """
        validate_repo_id(repo_id)
        path = self._call(
            repo_id,
            lambda: self.api.snapshot_download(
                repo_id=repo_id,
                revision=revision,
                allow_patterns=list(MODEL_FILE_PATTERNS),
                cache_dir=self.cache_dir,
            ),
        )
        return Path(path)
