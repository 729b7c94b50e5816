"""Compatibility checks on real tiny T5 repos written with save_pretrained (local source)."""

from __future__ import annotations

import json
import os
import shutil
import struct

import pytest
import torch

from registry import compat
from registry.compat import Reject, check_repo, parse_safetensors_header, profile_base, shape_config
from registry.errors import ModelError, RegistryError
from registry.sources import LocalSource, validate_repo_id
from registry.sources.local import content_sha, parse_card
from tests.t5_repos import new_t5, perturbed, save_repo


@pytest.fixture(scope="module")
def profiled_hub(t5_hub):
    """(root, expected, source, base profile) over the shared tiny T5 repos (`t5_hub`, tests/conftest.py)."""
    root, expected = t5_hub
    source = LocalSource(root)
    base = profile_base(source, source.repo_info("t/base"))
    return root, expected, source, base


def test_every_repo_gets_its_expected_verdict(profiled_hub):
    _, expected, source, base = profiled_hub
    for repo_id, want in expected.items():
        report = check_repo(source, source.repo_info(repo_id), base)
        if want == "compatible":
            assert report.status == "compatible" and report.reason is None, (repo_id, report.reason)
            assert report.weights_verified
        else:
            assert report.reason_code == want, (repo_id, report.reason)
            assert report.status == compat.STATUS_BY_CODE[want]


def test_reasons_name_what_was_seen(profiled_hub):
    _, _, source, base = profiled_hub

    def reason(repo_id: str) -> str:
        return check_repo(source, source.repo_info(repo_id), base).reason

    assert "d_model=48 (base 32)" in reason("t/wide")
    assert "feed_forward_proj='gated-gelu'" in reason("t/gated")
    assert "classifier.weight" in reason("t/head")
    assert "with other ids" in reason("t/othertok")
    assert "card claims base_model=['t/base']" in reason("t/stranger")
    assert "truncated" in reason("t/cut")
    assert "NaN" in reason("t/nan")
    assert "not valid JSON" in reason("t/badjson") and "t/badjson/config.json" in reason("t/badjson")


def test_lineage_separates_finetunes_from_independent_inits(profiled_hub):
    _, _, source, base = profiled_hub
    near = check_repo(source, source.repo_info("t/ft-a"), base).lineage_distance
    far = check_repo(source, source.repo_info("t/stranger"), base).lineage_distance
    assert near < 0.2 < compat.LINEAGE_MAX_DISTANCE < 1.2 < far


def test_nan_in_unprobed_tensor_is_caught_only_by_the_weight_scan(profiled_hub):
    _, _, source, base = profiled_hub
    info = source.repo_info("t/nan")
    assert check_repo(source, info, base, verify_weights=False).status == "compatible"
    assert check_repo(source, info, base, verify_weights=True).reason_code == "integrity"


def test_same_vocabulary_in_other_bytes_is_compatible(profiled_hub, tmp_path):
    root, _, _, _ = profiled_hub
    source_root = tmp_path / "hub"
    base = new_t5(seed=0)
    save_repo(base, source_root / "t/base")
    repo = save_repo(perturbed(base, seed=1, scale=0.05), source_root / "t/reformatted")
    tok = json.loads((repo / "tokenizer.json").read_text())
    (repo / "tokenizer.json").write_text(json.dumps(tok, indent=4, sort_keys=True))  # other bytes, same vocab
    source = LocalSource(source_root)
    profile = profile_base(source, source.repo_info("t/base"))
    report = check_repo(source, source.repo_info("t/reformatted"), profile)
    assert report.status == "compatible", report.reason
    assert report.tokenizer_fingerprint != profile.tokenizer_fingerprint


def test_vocabularies_compare_by_the_kind_of_file_both_ship():
    vocab = {"<pad>": 0, "</s>": 1, "a": 2, "b": 3}
    tok_json = json.dumps({"model": {"type": "WordLevel", "vocab": vocab}, "added_tokens": []}).encode()
    base = {"tokenizer.json": tok_json}
    base_vocabs = compat.vocabs_from_files(base)
    fp = compat.tokenizer_fingerprint(base)
    # only a vocab.json, same ids (plus extra ids past the base's): compatible on the ids both define
    same = {"vocab.json": json.dumps({**vocab, "<extra_id_0>": 4}).encode()}
    assert compat.check_tokenizer(same, base_fingerprint=fp, base_vocabs=base_vocabs) is not None
    swapped = {"vocab.json": json.dumps({**vocab, "a": 3, "b": 2}).encode()}
    with pytest.raises(Reject, match="tokenizer_mismatch: .*2 with other ids"):
        compat.check_tokenizer(swapped, base_fingerprint=fp, base_vocabs=base_vocabs)
    assert compat.check_tokenizer({}, base_fingerprint=fp, base_vocabs=base_vocabs) is None


def test_header_parser_rejects_truncation_and_bad_offsets():
    header = json.dumps({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
    blob = struct.pack("<Q", len(header)) + header + b"\0" * 16

    def reader(data: bytes):
        return lambda start, length: data[start : start + length]

    layout = parse_safetensors_header("m.safetensors", reader(blob), len(blob))
    assert layout.tensors["a"].shape == (2, 2) and layout.weight_bytes == 16
    for cut in (5, 8 + len(header) // 2):
        with pytest.raises(Reject, match="integrity: .*(truncated|does not fit)"):
            parse_safetensors_header("m.safetensors", reader(blob[:cut]), cut)
    with pytest.raises(Reject, match="truncated"):
        parse_safetensors_header("m.safetensors", reader(blob[:-4]), len(blob) - 4)
    bad = json.dumps({"a": {"dtype": "F32", "shape": [3, 2], "data_offsets": [0, 16]}}).encode()
    with pytest.raises(Reject, match="do not match its shape"):
        blob2 = struct.pack("<Q", len(bad)) + bad + b"\0" * 16
        parse_safetensors_header("m.safetensors", reader(blob2), len(blob2))


def test_shape_config_fills_t5_defaults():
    shapes = shape_config({"model_type": "t5", "num_layers": 3})
    assert shapes["num_decoder_layers"] == 3
    assert shapes["feed_forward_proj"] == "relu" and shapes["tie_word_embeddings"] is True


def test_base_that_is_not_t5_is_a_model_error(profiled_hub):
    _, _, source, _ = profiled_hub
    with pytest.raises(ModelError, match="t/bart.*not_t5"):
        profile_base(source, source.repo_info("t/bart"))


@pytest.mark.parametrize("repo_id", ["../etc", "a/../../b", "/abs/path", "a/b/c", "a\\b", "", "a/.."])
def test_repo_ids_that_could_traverse_paths_are_refused(repo_id, profiled_hub):
    _, _, source, _ = profiled_hub
    with pytest.raises(RegistryError, match="invalid repo id"):
        validate_repo_id(repo_id)
    with pytest.raises(RegistryError):
        source.repo_info(repo_id)


def test_content_sha_is_stable_and_tracks_content(tmp_path):
    folder = tmp_path / "o/r"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    first = content_sha(folder)
    assert first == content_sha(folder) and len(first) == 40
    (folder / "config.json").write_text('{"a": 1}')
    assert content_sha(folder) != first


def test_card_claims_are_parsed_and_bad_yaml_claims_nothing():
    card = parse_card("---\nbase_model: org/base\ndatasets: [d1, d2]\nlicense: mit\ntags: x\n---\ntext")
    assert card.base_model == ("org/base",) and card.datasets == ("d1", "d2") and card.tags == ("x",)
    assert parse_card("---\n: [unclosed\n---\n").base_model == ()
    assert parse_card("no front matter").license is None


def test_pickles_are_verified_only_on_request_and_only_with_weights_only(profiled_hub):
    _, _, source, base = profiled_hub
    info = source.repo_info("t/pickle")
    assert check_repo(source, info, base).reason_code == "pickle_only"
    report = check_repo(source, info, base, verify_pickles=True)
    assert report.status == "compatible", report.reason
    assert report.weights_verified and report.lineage_distance < compat.LINEAGE_MAX_DISTANCE


class _Payload:
    """Unpickling this would create a folder: the safe loader must refuse it instead."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_malicious_pickle_is_refused_and_never_executed(profiled_hub, tmp_path):
    root, _, _, _ = profiled_hub
    repo = tmp_path / "hub/t/evil"
    shutil.copytree(root / "t/pickle", repo)
    marker = tmp_path / "pwned"
    state = torch.load(repo / "pytorch_model.bin", weights_only=True)
    state["payload"] = _Payload(str(marker))
    torch.save(state, repo / "pytorch_model.bin")
    shutil.copytree(root / "t/base", tmp_path / "hub/t/base")
    source = LocalSource(tmp_path / "hub")
    profile = profile_base(source, source.repo_info("t/base"))
    report = check_repo(source, source.repo_info("t/evil"), profile, verify_pickles=True)
    assert report.status == "broken"
    assert report.reason.startswith("integrity: pytorch_model.bin: not loadable with weights_only=True")
    assert not marker.exists()
