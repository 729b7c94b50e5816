"""A loopback Hub: serves a Hub-like folder (`<root>/<org>/<name>/`) through the parts of the Hub's HTTP API
that huggingface_hub calls for the registry, so the hub source is tested through the real client.

Endpoints: `GET /api/models` (search, filter, limit, full, cardData; Link-header pagination),
`GET /api/models/{repo}` and `/api/models/{repo}/revision/{rev}` (sha, siblings with sizes, cardData, tags),
`GET /api/models/{repo}/tree/{rev}` (snapshot_download's file list),
`HEAD|GET /{repo}/resolve/{rev}/{file}` (ETag, X-Repo-Commit, Content-Length, Accept-Ranges, Range -> 206).
Revisions are the folders' content shas (`registry.sources.local.content_sha`), as the local source pins them.

Writes, for `HfApi.create_repo` + `upload_folder` (issue 15's `export --push-to-hub`): `POST /api/repos/create`
(409 when it exists; `visibility` or `private` recorded), `POST /api/validate-yaml` (the card's front matter
must parse), `POST /api/models/{repo}/preupload/{rev}` (every file `regular`: its bytes ride the commit, so
neither LFS nor Xet is involved) and `POST /api/models/{repo}/commit/{rev}` (NDJSON; files written under
`<root>/<repo>/`, so the pushed repo is then served like any other). Writes need `Authorization: Bearer` with
a token in `write_tokens` (401 otherwise).

It counts bytes served per repo and file, and separately the *weight* bytes: bytes of a safetensors file
past its header, and every byte of a pickle. Faults can be injected per path (`inject(...)`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import yaml

from registry.errors import RegistryError
from registry.sources import validate_repo_id
from registry.sources.local import LocalSource, card_tags, content_sha, file_sha256, repo_files

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
WRITE_TOKEN = "hf_loopback_write"  # the token the loopback Hub accepts for writes


def _weight_data_start(path: Path) -> int | None:
    """Offset where tensor bytes begin (None if the whole file is weights, e.g. a pickle)."""
    if path.suffix != ".safetensors":
        return None
    with path.open("rb") as fh:
        head = fh.read(8)
    if len(head) < 8:
        return 0
    return min(8 + struct.unpack("<Q", head)[0], path.stat().st_size)


def _git_blob_sha(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class LoopbackHub:
    """The server's state: the folder, counters and injected faults (thread-safe)."""

    def __init__(self, root: Path, *, page_size: int = 50) -> None:
        self.root = Path(root).resolve()
        self.source = LocalSource(self.root)
        self.page_size = page_size
        self.lock = threading.Lock()
        self.bytes_served: Counter[tuple[str, str]] = Counter()
        self.weight_bytes: Counter[str] = Counter()
        self.requests: list[tuple[str, str, int]] = []
        self._faults: list[tuple[str, str | None, list[int]]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.endpoint = ""
        self.delay_s = 0.0  # per request, to make a sync slow enough to kill midway
        self.write_tokens: set[str] = {WRITE_TOKEN}
        self.private: set[str] = set()  # repos created private
        self.commits: list[tuple[str, str, list[str]]] = []  # (repo, summary, paths written)

    # --- faults and counters -----------------------------------------------------------------------------

    def inject(self, path_contains: str, statuses: list[int], *, method: str | None = None) -> None:
        """The next requests whose path contains `path_contains` get these statuses, in order."""
        with self.lock:
            self._faults.append((path_contains, method, list(statuses)))

    def take_fault(self, method: str, path: str) -> int | None:
        with self.lock:
            for needle, fault_method, statuses in self._faults:
                if needle in path and statuses and fault_method in (None, method):
                    return statuses.pop(0)
        return None

    def reset_counters(self) -> None:
        with self.lock:
            self.bytes_served.clear()
            self.weight_bytes.clear()
            self.requests.clear()

    def total_bytes(self) -> int:
        with self.lock:
            return sum(self.bytes_served.values())

    def count(self, repo_id: str, filename: str, path: Path, start: int, end: int) -> None:
        """Record bytes [start, end) of a file as served."""
        data_start = _weight_data_start(path)
        weights = end - start if data_start is None else max(0, end - max(start, data_start))
        with self.lock:
            self.bytes_served[(repo_id, filename)] += end - start
            if filename.endswith(WEIGHT_SUFFIXES):
                self.weight_bytes[repo_id] += weights

    # --- repo views --------------------------------------------------------------------------------------

    def repo_dir(self, repo_id: str) -> Path | None:
        try:
            validate_repo_id(repo_id)
        except RegistryError:
            return None
        folder = self.root / repo_id
        return folder if folder.is_dir() else None

    def model_json(
        self, repo_id: str, *, blobs: bool = False, card: bool = True, siblings: bool = True
    ) -> dict:
        folder = self.root / repo_id
        info = self.source.repo_info(repo_id)
        files = repo_files(folder)
        item: dict = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0],
            "sha": content_sha(folder),
            "private": repo_id in self.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "library_name": "transformers",
            "tags": list(info.tags),
            "lastModified": (info.last_modified or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        }
        if card:
            item["cardData"] = {
                "base_model": list(info.card.base_model) or None,
                "datasets": list(info.card.datasets) or None,
                "license": info.card.license,
                "tags": list(info.card.tags) or None,
            }
        if siblings:
            item["siblings"] = [
                {"rfilename": name, **({"size": size} if blobs else {})} for name, size in files.items()
            ]
        return item

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> str:
        """Serve on 127.0.0.1 (a free port); returns the endpoint URL."""
        hub = self

        class Handler(_Handler):
            state = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@contextlib.contextmanager
def serve(root: Path, *, page_size: int = 50) -> Iterator[LoopbackHub]:
    """Run a loopback Hub over `root` for the duration of the block."""
    hub = LoopbackHub(root, page_size=page_size)
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


class _Handler(BaseHTTPRequestHandler):
    state: LoopbackHub
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes; Nagle would stall keep-alive

    def log_message(self, format, *args) -> None:  # noqa: A002 - keep test output quiet
        pass

    # --- responses ---------------------------------------------------------------------------------------

    def _send(
        self, status: int, body: bytes = b"", headers: dict | None = None, *, head: bool = False
    ) -> None:
        with self.state.lock:  # before replying, so a client that got its answer sees it counted
            self.state.requests.append((self.command, self.path, status))
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _json(self, obj, headers: dict | None = None) -> None:
        body = json.dumps(obj).encode()
        self._send(200, body, {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, code: str | None = None, message: str = "", *, head: bool = False) -> None:
        headers = {"Content-Type": "application/json"}
        if code:
            headers["X-Error-Code"] = code
        if status == 429:
            headers["Retry-After"] = "0"
        self._send(status, json.dumps({"error": message or code or str(status)}).encode(), headers, head=head)

    # --- routing -----------------------------------------------------------------------------------------

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._route(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._route(head=False)

    def do_POST(self) -> None:  # noqa: N802
        if self.state.delay_s:
            time.sleep(self.state.delay_s)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = unquote(urlsplit(self.path).path)
        fault = self.state.take_fault("POST", path)
        if fault is not None:
            self._error(fault, None, f"injected {fault}")
            return
        parts = [p for p in path.split("/") if p]
        if parts == ["api", "validate-yaml"]:
            self._validate_yaml(body)
            return
        auth = self.headers.get("Authorization") or ""
        if not auth.startswith("Bearer ") or auth.removeprefix("Bearer ") not in self.state.write_tokens:
            self._error(401, None, "Invalid credentials in Authorization header")
            return
        if parts == ["api", "repos", "create"]:
            self._create(json.loads(body or b"{}"))
        elif len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] in ("preupload", "commit"):
            repo_id = f"{parts[2]}/{parts[3]}"
            if self.state.repo_dir(repo_id) is None:
                self._error(404, "RepoNotFound", f"{repo_id} not found")
            elif parts[4] == "preupload":
                files = json.loads(body)["files"]
                self._json(
                    {
                        "files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                        ]
                    }
                )
            else:
                self._commit(repo_id, body)
        else:
            self._error(404, None, f"no route for POST {path}")

    def _route(self, *, head: bool) -> None:
        if self.state.delay_s:
            time.sleep(self.state.delay_s)
        split = urlsplit(self.path)
        path = unquote(split.path)
        query = parse_qs(split.query)
        fault = self.state.take_fault(self.command, path)
        if fault is not None:
            self._error(fault, "RepoNotFound" if fault == 404 else None, f"injected {fault}", head=head)
            return
        parts = [p for p in split.path.split("/") if p]
        try:
            if parts[:2] == ["api", "models"] and len(parts) == 2:
                self._list(query)
            elif parts[:2] == ["api", "models"] and len(parts) >= 4:
                self._info(parts, query)
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._resolve(parts, head=head)
            else:
                self._error(404, None, f"no route for {path}", head=head)
        except (BrokenPipeError, ConnectionResetError):
            pass

    # --- writes ------------------------------------------------------------------------------------------

    def _validate_yaml(self, body: bytes) -> None:
        content = json.loads(body).get("content", "")
        front = content.split("---", 2)[1] if content.startswith("---") else ""
        try:
            yaml.safe_load(front)
        except yaml.YAMLError as exc:
            self._send(400, json.dumps({"errors": [{"message": str(exc)}]}).encode())
            return
        self._json({"warnings": []})

    def _create(self, payload: dict) -> None:
        repo_id = f"{payload.get('organization')}/{payload.get('name')}"
        try:
            validate_repo_id(repo_id)
        except RegistryError:
            self._error(400, None, f"invalid repo id {repo_id!r}")
            return
        folder = self.state.root / repo_id
        url = f"{self.state.endpoint}/{repo_id}"
        if folder.exists():  # the Hub's 409 carries the repo's URL too (create_repo(exist_ok=True) reads it)
            body = json.dumps({"error": "You already created this model repo", "url": url}).encode()
            self._send(409, body, {"Content-Type": "application/json"})
            return
        folder.mkdir(parents=True)
        if payload.get("visibility") == "private" or payload.get("private") is True:
            with self.state.lock:
                self.state.private.add(repo_id)
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def _commit(self, repo_id: str, body: bytes) -> None:
        folder = self.state.root / repo_id
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        summary, written = "", []
        for item in lines:
            value = item.get("value", {})
            if item["key"] == "header":
                summary = value.get("summary", "")
            elif item["key"] == "file":
                rel = Path(value["path"])
                if rel.is_absolute() or ".." in rel.parts:
                    self._error(400, None, f"bad path {value['path']!r}")
                    return
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                (folder / rel).write_bytes(base64.b64decode(value["content"]))
                written.append(rel.as_posix())
            else:  # lfsFile, deletions, copies: this Hub offers none of them
                self._error(400, None, f"unsupported commit operation {item['key']!r}")
                return
        sha = content_sha(folder)
        with self.state.lock:
            self.state.commits.append((repo_id, summary, written))
        self._json({"commitUrl": f"{self.state.endpoint}/{repo_id}/commit/{sha}", "commitOid": sha})

    def _list(self, query: dict) -> None:
        hub = self.state
        search = (query.get("search") or [None])[0]
        filters = set(query.get("filter") or [])
        full = (query.get("full") or ["False"])[0].lower() == "true"
        card = (query.get("cardData") or ["False"])[0].lower() == "true"
        limit = int((query.get("limit") or [hub.page_size])[0])
        offset = int((query.get("p") or ["0"])[0])
        matches = []
        for repo_id in hub.source.list_repos(search=search):
            if filters and not filters <= set(
                card_tags(hub.source.repo_info(repo_id).card)
            ) | self._extra_tags(repo_id):
                continue
            matches.append(repo_id)
        page_size = min(limit, hub.page_size)
        page = matches[offset : offset + page_size]
        items = [hub.model_json(r, card=card, siblings=full) for r in page]
        headers = {}
        if offset + page_size < len(matches):
            params = [(k, v) for k, values in query.items() if k != "p" for v in values] + [
                ("p", offset + page_size)
            ]
            headers["Link"] = f'<{hub.endpoint}/api/models?{urlencode(params)}>; rel="next"'
        self._json(items, headers)

    def _extra_tags(self, repo_id: str) -> set[str]:
        return set(self.state.source.repo_info(repo_id).tags)

    def _info(self, parts: list[str], query: dict) -> None:
        repo_id = f"{parts[2]}/{parts[3]}"
        folder = self.state.repo_dir(repo_id)
        if folder is None:
            self._error(404, "RepoNotFound", f"{repo_id} not found")
            return
        if len(parts) >= 6 and parts[4] == "revision":
            revision = unquote("/".join(parts[5:]))
            if revision not in ("main", content_sha(folder)):
                self._error(404, "RevisionNotFound", f"{revision} not found")
                return
        elif len(parts) >= 6 and parts[4] == "tree":
            revision = unquote(parts[5])
            if revision not in ("main", content_sha(folder)):
                self._error(404, "RevisionNotFound", f"{revision} not found")
                return
            prefix = unquote("/".join(parts[6:]))
            self._json(
                [
                    {"type": "file", "path": name, "size": size, "oid": _git_blob_sha(folder / name)}
                    for name, size in repo_files(folder).items()
                    if not prefix or name.startswith(prefix.rstrip("/") + "/")
                ]
            )
            return
        elif len(parts) != 4:
            self._error(404, None, "unknown endpoint")
            return
        blobs = (query.get("blobs") or ["False"])[0].lower() == "true"
        self._json(self.state.model_json(repo_id, blobs=blobs))

    def _resolve(self, parts: list[str], *, head: bool) -> None:
        repo_id = f"{parts[0]}/{parts[1]}"
        folder = self.state.repo_dir(repo_id)
        if folder is None:
            self._error(404, "RepoNotFound", f"{repo_id} not found", head=head)
            return
        revision = unquote(parts[3])
        sha = content_sha(folder)
        if revision not in ("main", sha):
            self._error(404, "RevisionNotFound", f"{revision} not found", head=head)
            return
        filename = unquote("/".join(parts[4:]))
        path = (folder / filename).resolve()
        if (
            not path.is_relative_to(folder.resolve())
            or not path.is_file()
            or filename not in repo_files(folder)
        ):
            self._error(404, "EntryNotFound", f"{filename} not found", head=head)
            return
        size = path.stat().st_size
        etag = file_sha256(path)
        headers = {
            "ETag": f'"{etag}"',
            "X-Repo-Commit": sha,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(Path(filename).name)}",
        }
        start, end, status = 0, size, 200
        header = self.headers.get("Range")
        if header and header.startswith("bytes="):
            first, _, last = header[6:].split(",")[0].partition("-")
            if first:
                start = int(first)
                end = min(size, int(last) + 1) if last else size
            else:  # suffix range: the last N bytes
                start = max(0, size - int(last))
            if start >= size:
                self._send(416, b"", {"Content-Range": f"bytes */{size}"}, head=head)
                return
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        headers["Content-Length"] = str(end - start)
        if head:
            self._send(status, b"", headers, head=True)
            return
        with path.open("rb") as fh:
            fh.seek(start)
            body = fh.read(end - start)
        self.state.count(repo_id, filename, path, start, end)
        self._send(status, body, headers)
