"""Every bad input of `knotwork harmonize fit/apply` is refused by the CLI contract (tests/cli_contract.refused):
exit 2 (bad input or usage), one `error:` line naming the file and the item, no traceback, inputs untouched,
nothing written. One row per case; the builder makes what the case needs in tmp_path."""

from __future__ import annotations

import gzip
import json
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from knotwork._io import MARKER, sha256_file, write_marker
from tests.cli_contract import invoke, refused

SHAPE = (6, 7, 8)


def _save(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4)), str(path))
    return path


@dataclass
class World:
    tmp: Path
    ref: Path
    masks: Path
    inp: Path
    model: Path

    def folder(self, name: str, **volumes) -> Path:
        """A copy of the good inputs plus ``volumes`` (file name -> array or raw bytes)."""
        folder = self.tmp / name
        for src in self.inp.iterdir():
            (folder / src.name).parent.mkdir(parents=True, exist_ok=True)
            (folder / src.name).write_bytes(src.read_bytes())
        for fname, data in volumes.items():
            if isinstance(data, bytes):
                (folder / fname).write_bytes(data)
            else:
                _save(folder / fname, data)
        return folder

    def model_with(self, mutate) -> Path:
        """The good model JSON with ``mutate(dict)`` applied, saved as a new file."""
        d = json.loads(self.model.read_text())
        mutate(d)
        path = self.tmp / "edited.json"
        path.write_text(json.dumps(d))
        return path


@pytest.fixture
def w(tmp_path) -> World:
    rng = np.random.default_rng(0)
    for i in range(2):
        _save(tmp_path / "ref" / f"r{i}.nii.gz", rng.gamma(2.0, 50.0, SHAPE).astype(np.float32))
        _save(tmp_path / "masks" / f"r{i}.nii.gz", np.ones(SHAPE, np.uint8))
        _save(tmp_path / "in" / f"v{i}.nii.gz", rng.gamma(2.0, 5.0, SHAPE).astype(np.float32))
    model = tmp_path / "model.json"
    res = invoke(["harmonize", "fit", tmp_path / "ref", "--method", "hm", "--n-levels", "16", "--out", model])
    assert res.exit_code == 0, res.output
    return World(tmp_path, tmp_path / "ref", tmp_path / "masks", tmp_path / "in", model)


def _with_nan(value=np.nan):
    data = np.random.default_rng(1).gamma(2.0, 50.0, SHAPE).astype(np.float32)
    data[1, 2, 3] = value
    return data


def _truncated_nifti(w: World) -> bytes:
    good = (w.inp / "v0.nii.gz").read_bytes()
    return gzip.compress(gzip.decompress(good)[:400])  # a valid header, most voxels missing


def _fit(w: World, *extra, ref=None, out=None):
    out = out or w.tmp / "fitted.json"
    return ["harmonize", "fit", ref or w.ref, "--method", "hm", "--out", out, *extra], out


def _apply(w: World, *extra, model=None, inp=None, out=None):
    out = out or w.tmp / "out"
    return ["harmonize", "apply", model or w.model, inp or w.inp, "--out", out, *extra], out


def _knotwork_folder_of_another_command(w: World) -> Path:
    folder = w.tmp / "merged"
    folder.mkdir()
    write_marker(folder, {"command": "merge"}, files=[])
    return folder


# Each case: builder(w) -> (args, out, match); inputs are the world's folders and model unless the row says.
CASES = {
    # --- fit: reference volumes and masks, checked before the fit
    "fit-nan-reference": lambda w: (*_fit(w, ref=w.folder("r", **{"nan.nii.gz": _with_nan()})),
                                    r"nan\.nii\.gz.*1 non-finite value"),
    "fit-inf-reference": lambda w: (*_fit(w, ref=w.folder("r", **{"inf.nii.gz": _with_nan(np.inf)})),
                                    r"inf\.nii\.gz.*non-finite"),
    "fit-constant-reference": lambda w: (*_fit(w, ref=w.folder("r", **{"flat.nii.gz": np.full(SHAPE, 4.0)})),
                                         r"flat\.nii\.gz has a constant intensity"),
    "fit-corrupt-nifti": lambda w: (*_fit(w, ref=w.folder("r", **{"broken.nii.gz": b"garbage"})),
                                    r"broken\.nii\.gz: cannot read volume"),
    "fit-truncated-nifti": lambda w: (*_fit(w, ref=w.folder("r", **{"cut.nii.gz": _truncated_nifti(w)})),
                                      r"cut\.nii\.gz: cannot read volume"),
    "fit-mask-shape": lambda w: (*_fit(w, "--mask-dir", w.folder("m", **{"v0.nii.gz": np.ones((6, 7, 7))}),
                                       ref=w.inp), r"m/v0\.nii\.gz: the mask has shape \(6, 7, 7\) but the volume"),
    "fit-mask-missing": lambda w: (*_fit(w, "--mask-dir", w.masks, ref=w.inp), r"masks/v0\.nii\.gz: the mask of "
                                   r"v0\.nii\.gz does not exist"),
    "fit-mask-empty": lambda w: (*_fit(w, "--mask-dir", w.folder("m", **{"v0.nii.gz": np.zeros(SHAPE, np.uint8),
                                                                       "v1.nii.gz": np.ones(SHAPE, np.uint8)}),
                                       ref=w.inp), r"mask of \S*v0\.nii\.gz is empty"),
    "fit-ref-missing": lambda w: (*_fit(w, ref=w.tmp / "nowhere"), r"nowhere is not a folder"),
    "fit-ref-empty": lambda w: (*_fit(w, ref=w.tmp / "empty"), r"empty holds no volume files"),
    "fit-threshold-selects-nothing": lambda w: (*_fit(w, "--foreground-threshold", "1e9"),
                                                r"r0\.nii\.gz: no voxel is above foreground_threshold=1000000000\.0"),
    # --- fit: options
    "fit-n-levels-1": lambda w: (*_fit(w, "--n-levels", "1"), r"'n_levels' parameter of QuantileMatcher must be an "
                                 r"int >= 2\. Got 1"),
    "fit-n-levels-0": lambda w: (*_fit(w, "--n-levels", "0"), r"'n_levels'.*>= 2\. Got 0"),
    "fit-n-levels-negative": lambda w: (*_fit(w, "--n-levels", "-5"), r"'n_levels'.*>= 2\. Got -5"),
    "fit-n-levels-other-method": lambda w: (["harmonize", "fit", w.ref, "--method", "zscore", "--n-levels", "50",
                                             "--out", w.tmp / "z.json"], w.tmp / "z.json",
                                            r"--n-levels applies to --method hm only"),
    "fit-threshold-nan": lambda w: (*_fit(w, "--foreground-threshold", "nan"),
                                    r"'foreground_threshold' parameter .* must be None or a finite float"),
    # --- fit: the output
    "fit-out-suffix": lambda w: (*_fit(w, out=w.tmp / "model.txt"), r"model\.txt: save the harmonizer as"),
    "fit-out-inside-input": lambda w: (*_fit(w, out=w.ref / "model.json"), r"lies inside the input folder"),
    "fit-out-unwritable": lambda w: (*_fit(w, out=w.model / "sub" / "m.json"), r"m\.json: cannot create the "
                                     r"output there: \S*model\.json is a file"),
    "fit-out-is-a-folder": lambda w: (*_fit(w, out=(w.tmp / "d.json")), r"d\.json: exists as a folder"),
    "fit-out-exists": lambda w: (*_fit(w, out=w.model), r"model\.json: output file exists; pass --force"),
    "fit-force-over-foreign-file": lambda w: (*_fit(w, "--force", out=w.tmp / "notes.json"),
                                              r"notes\.json: exists and is not a knotwork output"),
    # --- apply: the model file (the field is named)
    "model-missing": lambda w: (*_apply(w, model=w.tmp / "nope.json"), r"nope\.json: cannot read the harmonizer "
                                r"\(No such file"),
    "model-not-json": lambda w: (*_apply(w, model=w.folder("x", **{"m.json": b"{not json"}) / "m.json"),
                                 r"m\.json: cannot read the harmonizer \(JSONDecodeError"),
    "model-format": lambda w: (*_apply(w, model=w.model_with(lambda d: d.pop("format"))),
                               r"edited\.json: not a knotwork harmonizer file \(field 'format' is None"),
    "model-method": lambda w: (*_apply(w, model=w.model_with(lambda d: d.update(method="hn"))),
                               r"edited\.json: field 'method' is 'hn'"),
    "model-params-value": lambda w: (*_apply(w, model=w.model_with(lambda d: d["params"].update(n_levels=1))),
                                     r"edited\.json: field 'params': The 'n_levels' parameter"),
    "model-params-unknown": lambda w: (*_apply(w, model=w.model_with(lambda d: d["params"].update(bins=3))),
                                       r"field 'params\.bins' is not a parameter of QuantileMatcher"),
    "model-state-missing": lambda w: (*_apply(w, model=w.model_with(lambda d: d["state"].pop("levels_"))),
                                      r"edited\.json: field 'state\.levels_' is missing"),
    "model-state-shape": lambda w: (*_apply(w, model=w.model_with(
        lambda d: d["state"].update(reference_quantiles_=[1.0, 2.0]))),
        r"field 'state\.reference_quantiles_' has shape \(2,\); expected n_levels = 16"),
    "model-state-not-numbers": lambda w: (*_apply(w, model=w.model_with(
        lambda d: d["state"].update(levels_="abc"))), r"field 'state\.levels_' must hold numbers"),
    # --- apply: input volumes and masks, all checked before anything is written
    "apply-nan-volume": lambda w: (*_apply(w, inp=w.folder("i", **{"nan.nii.gz": _with_nan()})),
                                   r"i/nan\.nii\.gz.*1 non-finite value.*nothing was written"),
    "apply-corrupt-nifti": lambda w: (*_apply(w, inp=w.folder("i", **{"a.nii.gz": b"\x1f\x8b garbage"})),
                                      r"i/a\.nii\.gz: cannot read volume"),
    "apply-mask-shape": lambda w: (*_apply(w, "--mask-dir", w.folder("m", **{"v1.nii.gz": np.ones((6, 7, 9))})),
                                   r"m/v1\.nii\.gz: the mask has shape \(6, 7, 9\) but the volume \S*in/v1"),
    "apply-two-bad-volumes": lambda w: (*_apply(w, inp=w.folder("i", **{"a.nii.gz": b"x", "b.nii.gz": _with_nan()})),
                                        r"i/a\.nii\.gz: cannot read volume.*\(1 more bad: b\.nii\.gz\)"),
    "apply-in-dir-is-a-file": lambda w: (*_apply(w, inp=w.ref / "r0.nii.gz"), r"r0\.nii\.gz is not a folder"),
    # --- apply: the output folder
    "apply-out-is-input": lambda w: (*_apply(w, out=w.inp), r"in: the output is an input"),
    "apply-out-inside-input": lambda w: (*_apply(w, out=w.inp / "harmonized"), r"lies inside the input folder"),
    "apply-out-contains-input": lambda w: (*_apply(w, out=w.tmp), r"the output contains an input"),
    "apply-out-holds-model": lambda w: (*_apply(w, model=w.folder("o", **{"m.json": w.model.read_bytes()}) / "m.json",
                                               out=w.tmp / "o"), r"o: the output contains an input \(\S*m\.json\)"),
    "apply-out-not-knotwork": lambda w: (*_apply(w, out=w.folder("other")), r"other: exists, is not empty and is not "
                                         r"a knotwork output folder"),
    "apply-out-other-command": lambda w: (*_apply(w, out=_knotwork_folder_of_another_command(w)),
                                          r"merged: is the output of another knotwork command \('merge'\)"),
    "apply-out-is-a-file": lambda w: (*_apply(w, out=w.tmp / "f.txt"), r"f\.txt: exists as a file, but this "
                                      r"command writes a folder"),
    "apply-out-unwritable": lambda w: (*_apply(w, out=w.tmp / "f.txt" / "out"),
                                       r"out: cannot create the output there: \S*f\.txt is a file, not a folder"),
    # --- apply: options
    "apply-workers-0": lambda w: (*_apply(w, "--workers", "0"), r"--workers must be an integer >= 1; got 0"),
    "apply-scheduler-local-0": lambda w: (*_apply(w, "--scheduler", "local:0"), r"--scheduler local:0: the worker "
                                          r"count N of local:N must be an integer >= 1"),
    "apply-scheduler-unreachable": lambda w: (*_apply(w, "--scheduler", "tcp://127.0.0.1:1"),
                                              r"--scheduler tcp://127\.0\.0\.1:1: cannot connect to a Dask scheduler"),
}

# Errors click's parser reports itself (usage=True): the choices are listed.
USAGE = {
    "fit-unknown-method": lambda w: (["harmonize", "fit", w.ref, "--method", "hn", "--out", w.tmp / "m.json"],
                                     w.tmp / "m.json", r"'hn' is not one of 'hm', 'hm-volume', 'nyul'"),
    "fit-n-levels-not-int": lambda w: (*_fit(w, "--n-levels", "2.5"), r"--n-levels.*valid integer"),
    "apply-unknown-dtype": lambda w: (*_apply(w, "--dtype", "int8"), r"'int8' is not one of 'float32', 'input'"),
    "apply-missing-out-dir": lambda w: (["harmonize", "apply", w.model, w.inp], w.tmp / "out", r"Missing option .--out"),
}


def _setup(w: World, name: str) -> None:
    """Files some rows need to exist before their builder runs."""
    if name == "fit-out-is-a-folder":
        (w.tmp / "d.json").mkdir()
    if name == "fit-force-over-foreign-file":
        (w.tmp / "notes.json").write_text('{"mine": true}\n')
    if name in ("apply-out-unwritable", "apply-out-is-a-file"):
        (w.tmp / "f.txt").write_text("a file where a folder should be")
    if name == "fit-ref-empty":
        (w.tmp / "empty").mkdir()


def test_enough_cases():
    assert len(CASES) + len(USAGE) >= 25


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused(w, name):
    _setup(w, name)
    args, out, match = CASES[name](w)
    inputs = [w.ref, w.masks, w.inp, w.model, *(a for a in args if isinstance(a, Path) and a.exists())]
    t0 = time.perf_counter()
    refused(args, match=match, inputs=inputs, out=out)
    if name == "apply-scheduler-unreachable":
        assert time.perf_counter() - t0 < 10, "an unreachable scheduler must be refused within seconds"


@pytest.mark.parametrize("name", sorted(USAGE))
def test_usage(w, name):
    args, out, match = USAGE[name](w)
    refused(args, match=match, inputs=[w.ref, w.inp, w.model], out=out, usage=True)


def test_zero_byte_leftover_of_a_killed_run_is_redone(w):
    """A positive case: a knotwork folder a killed run left, with a 0-byte volume and a temp file, is completed."""
    out = w.tmp / "out"
    out.mkdir()
    # What `apply` writes before its first volume, then what a kill in the middle of a write leaves.
    write_marker(out, {"command": "harmonize apply", "model_sha256": sha256_file(w.model), "dtype": "float32",
                       "volumes": {}}, files=[])
    (out / "v0.nii.gz").write_bytes(b"")
    (out / ".v1.nii.gz.knotwork-tmp-999999999-x.nii.gz").write_bytes(b"half a volume")
    res = invoke(["harmonize", "apply", w.model, w.inp, "--out", out])
    assert res.exit_code == 0, res.output
    clean = w.tmp / "clean"
    assert invoke(["harmonize", "apply", w.model, w.inp, "--out", clean]).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "v0.nii.gz", "v1.nii.gz"]
    for name in ("v0.nii.gz", "v1.nii.gz"):
        assert (out / name).read_bytes() == (clean / name).read_bytes()
