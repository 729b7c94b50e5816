"""Registry sync cost: metadata-first checks vs downloading whole checkpoints, against a loopback Hub.

Side by side in one run, over the zoo's `hub/` served by `tests/hub_server.py` on 127.0.0.1 (real HTTP,
the real huggingface_hub client; bytes counted by the server):
- ours, metadata-first (`taskvec registry sync`, the default): config and tokenizer files, safetensors
  headers by Range requests, lineage probes by Range requests, then the whole weights only of repos that
  passed every metadata check (to scan them for NaN/inf: the files screening needs anyway).
- ours, metadata only (`--metadata-only`): the same without the weight scan.
- baseline: what a tool without range reads does: `snapshot_download` of every repo (all files, pickles
  included), then the same checks run on the local copies.
Each mode gets a fresh database and download cache, after an untimed warm-up run of each. Figures: bytes
served per checked repo (all repos, and the rejected ones alone), the ratios baseline / ours, and repos per
second (loopback: no bandwidth limit, so this measures request and check overhead, not transfer time).

Usage: python -m benchmarks.bench_sync [--zoo DIR] [--scale tiny|full]
Last line of output: one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from huggingface_hub import HfApi
from huggingface_hub.utils import disable_progress_bars
from rich.console import Console
from rich.table import Table

from benchmarks.zoo import build
from registry.compat import check_repo, profile_base
from registry.constants import home
from registry.sources.hub import HubSource
from registry.sources.local import LocalSource
from registry.sync import list_checkpoints, sync
from tests.hub_server import serve


def _per_repo(hub) -> dict[str, int]:
    out: dict[str, int] = {}
    for (repo_id, _), count in hub.bytes_served.items():
        out[repo_id] = out.get(repo_id, 0) + count
    return out


def _run_sync(zoo: Path, base: str, *, verify_weights: bool, work: Path) -> dict:
    with serve(zoo / "hub") as hub:
        source = HubSource(endpoint=hub.endpoint, cache_dir=work / "cache", backoff_s=0.01)
        started = time.perf_counter()
        summary = sync(
            base=base,
            source=source,
            db_url=f"sqlite:///{work / 'db.sqlite'}",
            verify_weights=verify_weights,
            progress=False,
        )
        elapsed = time.perf_counter() - started
        served, weights = hub.total_bytes(), sum(hub.weight_bytes.values())
        per_repo = _per_repo(hub)
    rows = list_checkpoints(db_url=f"sqlite:///{work / 'db.sqlite'}")
    return {
        "repos": summary.checked + 1,  # the base is read too
        "seconds": elapsed,
        "bytes": served,
        "weight_bytes": weights,
        "verdicts": {r["repo_id"]: r["reason_code"] or r["status"] for r in rows},
        "per_repo": per_repo,
    }


def _run_baseline(zoo: Path, base: str, *, work: Path) -> dict:
    with serve(zoo / "hub") as hub:
        api = HfApi(endpoint=hub.endpoint)
        started = time.perf_counter()
        repo_ids = [m.id for m in api.list_models()]
        snapshots = work / "snapshots"
        for repo_id in repo_ids:
            api.snapshot_download(repo_id=repo_id, local_dir=snapshots / repo_id, cache_dir=work / "cache")
        source = LocalSource(snapshots)
        profile = profile_base(source, source.repo_info(base))
        verdicts = {}
        for repo_id in repo_ids:
            if repo_id != base:
                report = check_repo(source, source.repo_info(repo_id), profile)
                verdicts[repo_id] = report.reason_code or report.status
        elapsed = time.perf_counter() - started
        served, weights = hub.total_bytes(), sum(hub.weight_bytes.values())
        per_repo = _per_repo(hub)
    return {
        "repos": len(repo_ids),
        "seconds": elapsed,
        "bytes": served,
        "weight_bytes": weights,
        "verdicts": verdicts,
        "per_repo": per_repo,
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the three modes and print a table, then one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=None, help="A built zoo (default: build one, cached).")
    parser.add_argument("--scale", default="tiny", help="Zoo scale to build when --zoo is not given.")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    disable_progress_bars()
    zoo = args.zoo
    if zoo is None:
        zoo = build(out=home() / f"zoo-{args.scale}", scale=args.scale)
    base = json.loads((zoo / "zoo.json").read_text())["base"]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # Untimed warm-up of every mode, so imports, migrations and first connections bias none of them.
        _run_sync(zoo, base, verify_weights=True, work=tmp / "warm-a")
        _run_baseline(zoo, base, work=tmp / "warm-c")
        modes = {
            "metadata_first": _run_sync(zoo, base, verify_weights=True, work=tmp / "a"),
            "metadata_only": _run_sync(zoo, base, verify_weights=False, work=tmp / "b"),
            "download_all": _run_baseline(zoo, base, work=tmp / "c"),
        }
    ours, lean, naive = modes["metadata_first"], modes["metadata_only"], modes["download_all"]
    # The weight scan finds what the probes miss, so metadata-only may call a NaN repo compatible.
    assert ours["verdicts"] == naive["verdicts"], "metadata-first and download-all disagree"

    table = Table(title=f"registry sync over {zoo / 'hub'} (loopback Hub)")
    for column in ("mode", "repos", "KB served", "KB/repo", "weight KB", "repos/s"):
        table.add_column(column, justify="right" if column != "mode" else "left")
    for name, m in modes.items():
        table.add_row(
            name,
            str(m["repos"]),
            f"{m['bytes'] / 1e3:.0f}",
            f"{m['bytes'] / m['repos'] / 1e3:.1f}",
            f"{m['weight_bytes'] / 1e3:.0f}",
            f"{m['repos'] / m['seconds']:.1f}",
        )
    Console().print(table)
    rejected = [r for r, verdict in naive["verdicts"].items() if verdict != "compatible"]
    rejected_ours = sum(ours["per_repo"].get(r, 0) for r in rejected)
    rejected_naive = sum(naive["per_repo"].get(r, 0) for r in rejected)
    summary = {
        "zoo": str(zoo),
        "rejected_repos": len(rejected),
        "bytes_per_rejected_repo_metadata_first": rejected_ours / max(len(rejected), 1),
        "bytes_per_rejected_repo_download_all": rejected_naive / max(len(rejected), 1),
        "bytes_ratio_rejected_download_all_over_metadata_first": rejected_naive / max(rejected_ours, 1),
        "repos": ours["repos"],
        "bytes_per_repo_metadata_first": ours["bytes"] / ours["repos"],
        "bytes_per_repo_metadata_only": lean["bytes"] / lean["repos"],
        "bytes_per_repo_download_all": naive["bytes"] / naive["repos"],
        "bytes_ratio_download_all_over_metadata_first": naive["bytes"] / ours["bytes"],
        "bytes_ratio_download_all_over_metadata_only": naive["bytes"] / lean["bytes"],
        "weight_bytes_ratio_download_all_over_metadata_only": naive["weight_bytes"]
        / max(lean["weight_bytes"], 1),
        "repos_per_s_metadata_first": ours["repos"] / ours["seconds"],
        "repos_per_s_metadata_only": lean["repos"] / lean["seconds"],
        "repos_per_s_download_all": naive["repos"] / naive["seconds"],
        "verdicts_agree": ours["verdicts"] == naive["verdicts"],
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
