"""Issue 16 item 2: every loader of a folder runs the registry's checks, with the registry's reasons.

F3 (a symlinked tokenizer.json), F4 (no limits on a folder given directly; a malformed base; a BertModel
ingredient) and F5 (library errors leaking from direct folders) are reproduced on tiny T5 repos written
with `tests.t5_repos`, through the registry's `check_repo`, `check_folder`, the loaders, and the CLI
(in-process, so each case costs milliseconds).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import sys
from pathlib import Path

import pytest
import torch

from registry.compat import Reject, check_folder, check_repo, check_t5_config, profile_base
from registry.errors import ModelError, RegistryError
from registry.sources.local import LocalSource, content_sha, file_sha256, list_folder
from search.cli.app import main
from search.scoring.models import load_seq2seq
from search.vectors.checkpoint import Checkpoint
from tests.t5_repos import new_t5, perturbed, save_repo, write_tokenizer


class _Payload:
    """Unpickling this would create `marker`: the safe loader must refuse it instead."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _edit_config(folder: Path, **fields: object) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(fields)
    (folder / "config.json").write_text(json.dumps(config))


def _huge_header(folder: Path) -> None:
    """A header length field of 1 TB in front of the real header bytes."""
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 10**12) + data[8:])


def _evil_pickle(folder: Path, marker: Path) -> None:
    from safetensors.torch import load_file

    state = dict(load_file(str(folder / "model.safetensors")))
    state["payload"] = _Payload(str(marker))
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(hub root, base profile, source, cases): a base, a good fine-tune and one damaged copy per failure.

    `cases` maps each damaged repo id to the reason the registry records for it (with --verify-pickles).
    """
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("folders") / "hub"
    base = new_t5(seed=0)
    save_repo(base, root / "t/base")
    good = save_repo(perturbed(base, seed=1, scale=0.05), root / "t/good", card_base="t/base")
    other_tok = root.parent / "elsewhere"
    write_tokenizer(other_tok, permute=True)

    def copy(name: str) -> Path:
        return Path(shutil.copytree(good, root / "t" / name))

    marker = root.parent / "pwned"
    edits = {
        "hdr": _huge_header,
        "zero": lambda f: (f / "model.safetensors").write_bytes(b""),
        "dstr": lambda f: _edit_config(f, d_model="32"),
        "layers": lambda f: _edit_config(f, num_layers=10**9),
        "bert": lambda f: _edit_config(f, architectures=["BertModel"]),
        "evil": lambda f: _evil_pickle(f, marker),
        "linkout": lambda f: (
            (f / "tokenizer.json").unlink(),
            (f / "tokenizer.json").symlink_to(other_tok / "tokenizer.json"),
        ),
    }
    for name, edit in edits.items():
        edit(copy(name))
    source = LocalSource(root)
    profile = profile_base(source, source.repo_info("t/base"))
    reasons = {
        f"t/{name}": check_repo(source, source.repo_info(f"t/{name}"), profile, verify_pickles=True).reason
        for name in edits
    }
    return root, profile, source, reasons, marker


EXPECTED = {
    "t/hdr": "integrity: model.safetensors: header length 1000000000000 does not fit the file",
    "t/zero": "integrity: model.safetensors: truncated safetensors header (0 bytes)",
    "t/dstr": "malformed: config.json: d_model='32' is a str, not an integer",
    "t/layers": "malformed: config.json: num_layers=1000000000 is out of range (1..512)",
    "t/bert": "not_t5: architectures ['BertModel'] are not T5",
    "t/evil": "integrity: pytorch_model.bin: not loadable with weights_only=True (Trying to load unsupported "
    "GLOBAL os.makedirs",
    "t/linkout": "malformed: tokenizer.json links outside the repo (to ",
}


def test_a_folder_is_refused_with_the_registrys_own_reason(world):
    root, _, _, reasons, marker = world
    for repo_id, want in EXPECTED.items():
        assert reasons[repo_id].startswith(want), (repo_id, reasons[repo_id])
        with pytest.raises(ModelError) as info:
            check_folder(root / repo_id)
        assert str(info.value) == f"{root / repo_id}: {reasons[repo_id]}"
    assert not marker.exists()


@pytest.mark.parametrize("repo", sorted(EXPECTED))
def test_loaders_refuse_before_building_anything(world, repo):
    """load_seq2seq (eval, screen, study, export) and Checkpoint (task vectors, merge) say the same line."""
    root, _, _, reasons, marker = world
    folder = root / repo
    for load in (load_seq2seq, Checkpoint):
        with pytest.raises(ModelError) as info:
            load(folder)
        assert str(info.value) == f"{folder}: {reasons[repo]}", load
    assert not marker.exists()


def _cli(capsys, monkeypatch, *args: object) -> tuple[int, list[str]]:
    """Run `taskvec ARGS` in this process: (exit code, stderr lines)."""
    monkeypatch.setattr(sys, "argv", ["taskvec", *map(str, args)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main()
    return info.value.code, capsys.readouterr().err.strip().splitlines()


def test_cli_prints_one_line_naming_the_folder(world, capsys, monkeypatch, tmp_path):
    root, _, _, reasons, marker = world
    monkeypatch.setenv("TASKVEC_HOME", str(tmp_path / "home"))
    base, good, out = root / "t/base", root / "t/good", tmp_path / "out"
    # a bound one past the limit, not 1e9: were the check to regress, this one would still fit in memory
    small = Path(shutil.copytree(good, tmp_path / "t/layers513"))
    _edit_config(small, num_layers=513)
    cases = {root / r: reasons[r] for r in EXPECTED} | {small: "num_layers=513 is out of range (1..512)"}
    for folder, reason in cases.items():
        for args in (
            ["eval", "--model", folder, "--task", "rte", "--data", tmp_path / "no-data"],
            ["merge", "--base", base, "--target", folder, "--out", out],
            ["merge", "--base", folder, "--target", good, "--out", out],
            ["merge", "--base", base, "--target", good, "--add", f"{folder}=0.5", "--out", out],
        ):
            code, lines = _cli(capsys, monkeypatch, *args)
            assert code == 1 and len(lines) == 1, (args, lines)
            assert lines[0].startswith(f"error: {folder}: ") and reason in lines[0], (args, lines)
            assert not out.exists()
    assert not marker.exists()


def test_a_malformed_base_is_refused_at_sync(world, tmp_path, capsys, monkeypatch):
    """F4: a base with `d_model: "32"` marked every checkpoint config_mismatch; now the sync stops at once."""
    root, _, _, _, _ = world
    bad_base = Path(shutil.copytree(root / "t/base", tmp_path / "b/base"))
    _edit_config(bad_base, d_model="32")
    source = LocalSource(tmp_path)
    with pytest.raises(
        ModelError, match=r"^base b/base@\w{12}: malformed: config.json: d_model='32' is a str"
    ):
        profile_base(source, source.repo_info("b/base"))
    db = tmp_path / "r.db"
    code, lines = _cli(
        capsys,
        monkeypatch,
        "registry",
        "sync",
        "--base",
        bad_base,
        "--source",
        root,
        "--db",
        f"sqlite:///{db}",
    )
    assert code == 1 and len(lines) == 1 and "d_model='32' is a str, not an integer" in lines[0], lines


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("d_model", "64", "d_model='64' is a str, not an integer"),
        ("d_model", 64.0, "d_model=64.0 is a float, not an integer"),
        ("num_heads", True, "num_heads=True is a bool, not an integer"),
        ("num_layers", 1e9, "num_layers=1000000000.0 is a float, not an integer"),
        ("num_layers", 0, "num_layers=0 is out of range (1..512)"),
        ("d_model", 65537, "d_model=65537 is out of range (1..65536)"),
        ("vocab_size", 10_000_001, "vocab_size=10000001 is out of range (1..10000000)"),
        ("num_decoder_layers", 600, "num_decoder_layers=600 is out of range (1..512)"),
        ("tie_word_embeddings", "yes", "tie_word_embeddings='yes' is a str, not true or false"),
        (
            "feed_forward_proj",
            "gated-gelu; rm",
            "feed_forward_proj='gated-gelu; rm' is not an activation name (e.g. 'relu', 'gated-gelu')",
        ),
        ("architectures", "T5Model", "architectures='T5Model' is not a list of names"),
    ],
)
def test_config_types_and_bounds(field, value, why):
    config = {"model_type": "t5", "architectures": ["T5ForConditionalGeneration"], field: value}
    with pytest.raises(Reject) as info:
        check_t5_config(config)
    assert str(info.value) == f"malformed: config.json: {why}"


def test_good_configs_pass_unchanged():
    shapes = check_t5_config({"model_type": "t5", "num_layers": 24, "d_ff": 65536, "num_heads": 128})
    assert shapes["num_decoder_layers"] == 24 and shapes["d_ff"] == 65536
    assert check_t5_config({"model_type": "t5", "num_decoder_layers": None})["num_decoder_layers"] == 6


def test_a_config_promising_more_than_the_weights_hold_is_refused(world, tmp_path):
    """Within bounds but not what the file holds: transformers would build (and randomly fill) the rest."""
    root, _, _, _, _ = world
    cases = {
        "more": ({"num_layers": 3}, "config.json says num_layers=3 but the weights hold 1 encoder blocks"),
        "vocab": ({"vocab_size": 4000}, "shared.weight is [48, 32] but config.json implies [4000, 32]"),
        "ff": ({"d_ff": 4096}, "wo.weight is [32, 128] but config.json implies [32, 4096]"),
    }
    for name, (fields, why) in cases.items():
        folder = Path(shutil.copytree(root / "t/good", tmp_path / name))
        _edit_config(folder, **fields)
        with pytest.raises(ModelError, match="tensor_mismatch: ") as info:
            load_seq2seq(folder)
        assert why in str(info.value) and "\n" not in str(info.value), name


def test_transformers_config_validation_is_one_line(world, tmp_path):
    """A non-shape field of the wrong type is transformers' own refusal, named and on one line."""
    root, _, _, _, _ = world
    folder = Path(shutil.copytree(root / "t/good", tmp_path / "dropout"))
    _edit_config(folder, dropout_rate="lots")
    with pytest.raises(ModelError, match=r"dropout.*config\.json: .*dropout_rate") as info:
        load_seq2seq(folder)
    assert "\n" not in str(info.value)


# --- F3: links -----------------------------------------------------------------------------------------


def test_a_link_inside_the_repo_is_read_checked_and_hashed(world, tmp_path):
    """The F3 repro: a tokenizer.json linking to another vocabulary used to count as "no tokenizer"."""
    root, profile, _, _, _ = world
    hub = tmp_path / "hub"
    repo = Path(shutil.copytree(root / "t/good", hub / "t/linked"))
    write_tokenizer(repo / "extra", permute=True)  # another vocabulary, inside the repo
    (repo / "tokenizer.json").unlink()
    (repo / "tokenizer.json").symlink_to("extra/tokenizer.json")
    source = LocalSource(hub)
    info = source.repo_info("t/linked")
    assert "tokenizer.json" in info.files and not info.unsafe_links
    report = check_repo(source, info, profile)
    assert report.reason_code == "tokenizer_mismatch", report.reason
    # covered by the content sha: pointing the link elsewhere inside the repo changes the revision
    before = content_sha(repo)
    shutil.copy(root / "t/good/tokenizer.json", repo / "extra/same.json")
    assert content_sha(repo) != before
    before = content_sha(repo)
    (repo / "tokenizer.json").unlink()
    (repo / "tokenizer.json").symlink_to("extra/same.json")
    assert content_sha(repo) != before
    assert check_repo(source, source.repo_info("t/linked"), profile).status == "compatible"
    check_folder(repo)  # and a folder with links inside it loads


def test_links_out_of_the_repo_or_nowhere_are_refused_and_never_read(world, tmp_path):
    root, _, _, _, _ = world
    repo = Path(shutil.copytree(root / "t/good", tmp_path / "hub/t/dangling"))
    (repo / "tokenizer.json").unlink()
    (repo / "tokenizer.json").symlink_to(tmp_path / "gone.json")
    with pytest.raises(ModelError, match=r"dangling: malformed: tokenizer.json is a link to a missing file"):
        check_folder(repo)
    sha = content_sha(repo)  # still defined, and it changes with where the link points
    (repo / "tokenizer.json").unlink()
    (repo / "tokenizer.json").symlink_to(root / "t/base/tokenizer.json")
    assert content_sha(repo) != sha
    source = LocalSource(tmp_path / "hub")
    with pytest.raises(RegistryError, match="tokenizer.json links outside the repo"):
        source.read_file("t/dangling", "main", "tokenizer.json")
    # a folder linked as a whole out of the repo is refused too
    (repo / "tokenizer.json").unlink()
    shutil.copy(root / "t/good/tokenizer.json", repo / "tokenizer.json")
    (repo / "sub").symlink_to(root / "t/base", target_is_directory=True)
    with pytest.raises(ModelError, match="malformed: sub links outside the repo"):
        check_folder(repo)


def test_a_hub_cache_snapshot_may_link_into_its_own_blobs_only(world, tmp_path):
    """Hugging Face cache snapshots are all links into `../../blobs/`: those stay loadable."""
    root, _, _, _, _ = world
    cache = tmp_path / "models--o--n"
    snapshot, blobs = cache / "snapshots" / ("a" * 40), cache / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for src in sorted((root / "t/good").iterdir()):
        blob = blobs / hashlib.sha256(src.name.encode()).hexdigest()
        shutil.copy(src, blob)
        (snapshot / src.name).symlink_to(os.path.relpath(blob, snapshot))
    report = check_folder(snapshot)
    assert set(report.files) == {p.name for p in (root / "t/good").iterdir()}
    assert content_sha(snapshot) == content_sha(root / "t/good")  # the same files, linked or not
    (snapshot / "tokenizer.json").unlink()
    (snapshot / "tokenizer.json").symlink_to(root / "t/base/tokenizer.json")
    with pytest.raises(ModelError, match="tokenizer.json links outside the repo"):
        check_folder(snapshot)


def test_content_sha_of_a_folder_without_links_is_what_it_was(world, tmp_path):
    """Studies resume by content sha: the listing rewrite must hash link-free folders exactly as before."""
    root, _, _, _, _ = world
    repo = Path(shutil.copytree(root / "t/good", tmp_path / "o/r"))
    for rel in ("a-b/x.txt", "a/b.txt", "a/.hidden", ".git/config", "z.txt"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(rel)

    def old_content_sha(folder: Path) -> str:  # the algorithm before links were resolved
        digest = hashlib.sha1()
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if any(p.startswith(".") for p in rel.parts) or path.is_symlink() or not path.is_file():
                continue
            digest.update(rel.as_posix().encode() + b"\0" + file_sha256(path).encode() + b"\n")
        return digest.hexdigest()

    assert content_sha(repo) == old_content_sha(repo)
    assert list(list_folder(repo).files)[:2] == ["README.md", "a/b.txt"]
