"""Re-TACRED-style and TACREV-style patches on the 60-example TACRED sample and on synthetic data; the CLI."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from knotwork.cli import app
from knotwork.relations import Patch, UnknownPatchIdError, apply_patch, diff_patch, load_tacred
from knotwork.relations.io import load_patch, save_patch
from knotwork.relations.patch import PatchFormatError, patch_from_json
from tests.conftest import require_shared


def test_retacred_patch_on_sample_filters_and_relabels():
    dev = load_tacred(require_shared("re", "tacred_sample", "dev.json"))
    patch = {dev[0].id: "per:identity", dev[1].id: "no_relation", dev[5].id: "org:country_of_branch"}
    out = apply_patch(dev, patch)
    assert [ex.id for ex in out] == [dev[0].id, dev[1].id, dev[5].id]  # dataset order, others dropped
    assert [ex.relation for ex in out] == ["per:identity", "no_relation", "org:country_of_branch"]
    assert out[0].tokens == dev[0].tokens and dev[0].relation != "per:identity"  # input untouched


def test_tacrev_patch_on_sample_relabels_only():
    train = load_tacred(require_shared("re", "tacred_sample", "train.json"))
    patch = patch_from_json([{"id": train[3].id, "relation": "per:title"}])
    assert patch.drop_missing is False
    out = apply_patch(train, patch)
    assert len(out) == 20
    assert [ex.relation for ex in out] == [("per:title" if i == 3 else ex.relation) for i, ex in enumerate(train)]


def test_unknown_patch_id_is_named():
    dev = load_tacred(require_shared("re", "tacred_sample", "dev.json"))
    with pytest.raises(UnknownPatchIdError, match=r"1 patch id\(s\) not in the data set, e.g. \['ffffffffffffffffffff'\]"):
        apply_patch(dev, {"ffffffffffffffffffff": "no_relation"})
    with pytest.raises(ValueError, match=r"patch id '.*': relation 'per:nonsense' is not in the label set"):
        apply_patch(dev, {dev[0].id: "per:nonsense"}, labels=["no_relation"])


def test_real_retacred_patch_does_not_fit_the_sample():
    sample = load_tacred(require_shared("re", "tacred_sample", "test.json"))
    patch = load_patch(require_shared("re", "retacred_patch", "test_id2label.json"))
    assert patch.drop_missing and len(patch.labels) == 13418  # method note §3
    with pytest.raises(UnknownPatchIdError, match="is this the patch for another split"):
        apply_patch(sample, patch)


def test_patch_format_errors_and_round_trip(tmp_path):
    with pytest.raises(PatchFormatError, match=r"patch entry 1: id 'a' appears twice"):
        patch_from_json([{"id": "a", "relation": "x"}, {"id": "a", "relation": "y"}])
    with pytest.raises(PatchFormatError, match=r"patch id 'a': relation must be a non-empty string"):
        patch_from_json({"a": 3})
    for p in (Patch({"a": "x"}, drop_missing=True), Patch({"a": "x"}, drop_missing=False)):
        path = save_patch(p, tmp_path / f"p{p.drop_missing}.json")
        assert load_patch(path) == p


def test_diff_patch_inverts_apply(tacred_file):
    data = load_tacred(tacred_file)
    patch = Patch({data[0].id: "no_relation", data[2].id: "per:employee_of"}, drop_missing=True)
    after = apply_patch(data, patch)
    assert diff_patch(data, after) == patch
    relabel = diff_patch(data, apply_patch(data, {data[1].id: "per:title"}, drop_missing=False), drop_missing=False)
    assert relabel == Patch({data[1].id: "per:title"}, drop_missing=False)


def test_cli_patch(tmp_path):
    src = require_shared("re", "tacred_sample")
    data_dir, patch_dir, out_dir = tmp_path / "data", tmp_path / "patch", tmp_path / "out"
    data_dir.mkdir()
    patch_dir.mkdir()
    for split in ("dev", "test"):
        shutil.copy(src / f"{split}.json", data_dir / f"{split}.json")
    dev = load_tacred(data_dir / "dev.json")
    test = load_tacred(data_dir / "test.json")
    (patch_dir / "dev_id2label.json").write_text(json.dumps({dev[2].id: "per:identity", dev[4].id: "no_relation"}))
    (patch_dir / "test_patch.json").write_text(json.dumps([{"id": test[0].id, "relation": "per:title"}]))
    result = CliRunner().invoke(app, ["relations", "patch", str(data_dir), str(patch_dir), "--out", str(out_dir)])
    assert result.exit_code == 0, result.output
    out_dev, out_test = load_tacred(out_dir / "dev.json"), load_tacred(out_dir / "test.json")
    assert [(ex.id, ex.relation) for ex in out_dev] == [(dev[2].id, "per:identity"), (dev[4].id, "no_relation")]
    assert len(out_test) == 20 and out_test[0].relation == "per:title"
    result = CliRunner().invoke(app, ["relations", "patch", str(data_dir), str(patch_dir), "--out", str(out_dir)])
    assert result.exit_code == 2 and "exists; pass --force" in result.output
    (patch_dir / "dev_id2label.json").write_text(json.dumps({"nope": "no_relation"}))
    result = CliRunner().invoke(app, ["relations", "patch", str(data_dir), str(patch_dir), "--out", str(out_dir), "--force"])
    assert result.exit_code == 2 and "dev_id2label.json: 1 patch id(s) not in the data set, e.g. ['nope']" in result.output
