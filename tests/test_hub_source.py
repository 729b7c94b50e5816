"""The hub source through the real huggingface_hub client against a loopback Hub (real HTTP, no mocks)."""

from __future__ import annotations

import shutil

import pytest

from registry.compat import check_repo, profile_base
from registry.errors import RegistryError
from registry.sources import HubSource, LocalSource, open_source
from registry.sync import list_checkpoints, sync
from tests.hub_server import serve
from tests.t5_repos import new_t5, save_repo


@pytest.fixture
def hub(t5_hub):
    with serve(t5_hub[0], page_size=4) as server:
        yield server


@pytest.fixture
def source(hub, tmp_path):
    return HubSource(endpoint=hub.endpoint, cache_dir=tmp_path / "hf-cache", backoff_s=0.01, max_retries=3)


def test_hub_sync_gives_the_same_verdicts_and_revisions_as_the_local_folder(t5_hub, source, tmp_path):
    root, expected = t5_hub
    hub_db, local_db = f"sqlite:///{tmp_path / 'hub.db'}", f"sqlite:///{tmp_path / 'local.db'}"
    summary = sync(base="t/base", source=source, db_url=hub_db, progress=False)
    sync(base="t/base", source=str(root), db_url=local_db, progress=False)
    assert summary.errors == [] and summary.checked == len(expected)
    hub_rows = {r["repo_id"]: r for r in list_checkpoints(db_url=hub_db)}
    local_rows = {r["repo_id"]: r for r in list_checkpoints(db_url=local_db)}
    assert set(hub_rows) == set(expected)
    for repo_id, want in expected.items():
        row = hub_rows[repo_id]
        assert (row["status"] == "compatible") if want == "compatible" else (row["reason_code"] == want), row
        assert row["revision"] == local_rows[repo_id]["revision"]
        assert row["reason"] == local_rows[repo_id]["reason"]
        assert row["source"] == source.endpoint  # a non-default endpoint is recorded, so rows reopen it


def test_no_weight_bytes_for_repos_rejected_before_lineage(t5_hub, hub, source, tmp_path):
    _, expected = t5_hub
    sync(base="t/base", source=source, db_url=f"sqlite:///{tmp_path / 'w.db'}", progress=False)
    early = [
        r
        for r, code in expected.items()
        if code in ("config_mismatch", "tokenizer_mismatch", "tensor_mismatch")
    ]
    assert len(early) == 4
    for repo_id in early:
        assert hub.weight_bytes[repo_id] == 0, repo_id
    assert hub.bytes_served[("t/head", "model.safetensors")] > 0  # its header was read, and only that
    for repo_id in (
        "t/ft-a",
        "t/stranger",
    ):  # lineage probes (and the full file for verified ones) do read weights
        assert hub.weight_bytes[repo_id] > 0
    assert hub.weight_bytes["t/pickle"] == 0  # pickles are never fetched by sync


def test_missing_repo_is_a_clear_error(source):
    with pytest.raises(RegistryError, match=r"t/nope: repository not found on the Hub \(404\)"):
        source.repo_info("t/nope")


def test_unknown_revision_is_a_clear_error(source):
    with pytest.raises(RegistryError, match="t/ft-a: revision not found"):
        source.repo_info("t/ft-a", revision="0" * 40)


def test_path_traversal_repo_ids_never_reach_the_server(hub, source):
    for bad in ("../../etc", "t/../../x", "t/ft-a/../../secret"):
        with pytest.raises(RegistryError, match="invalid repo id"):
            source.repo_info(bad)
    with pytest.raises(RegistryError, match="unsafe file name"):
        source.read_range("t/ft-a", "main", "../../../etc/passwd", 0, 10)
    assert hub.requests == []


def test_rate_limit_then_success_is_retried(hub, source):
    hub.inject("/api/models/t/ft-a", [429, 429])
    info = source.repo_info("t/ft-a")
    assert info.repo_id == "t/ft-a" and source.retries == 2
    statuses = [status for _, path, status in hub.requests if "/api/models/t/ft-a" in path]
    assert statuses == [429, 429, 200]


def test_persistent_rate_limit_gives_up_with_a_reason(hub, source):
    hub.inject("/api/models/t/ft-b", [429] * 10)
    with pytest.raises(RegistryError, match=r"t/ft-b: Hub request failed \(HTTP 429\) \(rate limited"):
        source.repo_info("t/ft-b")
    assert source.retries == source.max_retries


def test_server_error_on_a_range_read_is_retried(hub, source):
    info = source.repo_info("t/ft-a")
    hub.inject("/t/ft-a/resolve/", [503], method="GET")
    assert len(source.read_range("t/ft-a", info.revision, "model.safetensors", 0, 8)) == 8
    assert source.retries == 1


def test_repo_failing_midway_is_left_for_the_next_run(t5_hub, hub, source, tmp_path):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    hub.inject("/api/models/t/ft-b", [404])
    first = sync(base="t/base", source=source, db_url=db, progress=False)
    assert len(first.errors) == 1 and "t/ft-b" in first.errors[0]
    assert "t/ft-b" not in {r["repo_id"] for r in list_checkpoints(db_url=db)}
    second = sync(base="t/base", source=source, db_url=db, progress=False)
    assert second.errors == [] and second.checked == 1 and second.skipped == len(t5_hub[1]) - 1


def test_truncated_safetensors_header_over_http(tmp_path):
    root = tmp_path / "hub"
    base = new_t5(seed=0)
    save_repo(base, root / "t/base")
    cut = save_repo(base, root / "t/cut-header")
    path = cut / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])  # inside the JSON header
    with serve(root) as server:
        src = HubSource(endpoint=server.endpoint, cache_dir=tmp_path / "c", backoff_s=0.01)
        profile = profile_base(src, src.repo_info("t/base"))
        report = check_repo(src, src.repo_info("t/cut-header"), profile)
    assert report.status == "broken"
    assert report.reason.startswith("integrity: model.safetensors: header length")


def test_listing_search_filter_and_pagination(t5_hub, hub, source):
    _, expected = t5_hub
    every = list(source.list_repos())
    assert len(every) == len(expected) + 1 and len(set(every)) == len(every)  # 4 per page, all pages read
    assert list(source.list_repos(search="ft-")) == ["t/ft-a", "t/ft-b"]
    claiming = set(source.list_repos(filters=("base_model:finetune:t/base",)))
    assert {"t/ft-a", "t/stranger", "t/pickle"} <= claiming and "t/wide" not in claiming
    assert len(list(source.list_repos(limit=3))) == 3


def test_model_dir_is_a_pinned_snapshot_without_pickles(t5_hub, source):
    info = source.repo_info("t/pickle")
    folder = source.model_dir("t/pickle", info.revision)
    assert (folder / "config.json").is_file() and not (folder / "pytorch_model.bin").exists()
    info = source.repo_info("t/ft-a")
    folder = source.model_dir("t/ft-a", info.revision)
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()


def test_open_source_names(t5_hub, hub, tmp_path):
    assert isinstance(open_source("hub", endpoint=hub.endpoint), HubSource)
    reopened = open_source(hub.endpoint)
    assert isinstance(reopened, HubSource) and reopened.name == hub.endpoint
    assert HubSource().name == "hub"
    assert isinstance(open_source(t5_hub[0]), LocalSource)
    with pytest.raises(RegistryError, match="no such source folder"):
        open_source(tmp_path / "missing")


def test_local_model_dir_refuses_a_changed_folder(t5_hub, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(t5_hub[0] / "t/ft-a", root / "t/ft-a")
    src = LocalSource(root)
    revision = src.repo_info("t/ft-a").revision
    assert src.model_dir("t/ft-a", revision) == root / "t/ft-a"
    (root / "t/ft-a/README.md").write_text("changed")
    with pytest.raises(RegistryError, match="is not in"):
        src.model_dir("t/ft-a", revision)
