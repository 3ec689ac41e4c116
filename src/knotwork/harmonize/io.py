"""Reading and writing volumes (NIfTI via nibabel, other formats via SimpleITK) and fitted harmonizers.

Volumes are written atomically into a folder the caller owns (``harmonize apply`` checks its output folder
with :mod:`knotwork._io`): under a temporary sibling name that :func:`knotwork._io.clean_leftovers` recognises,
then renamed. A fitted harmonizer is a knotwork output of its own (:func:`knotwork._io.write_json`).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from knotwork._io import atomic_file, fault_point, umask_mode, write_json
from knotwork.harmonize._checks import HarmonizeError
from knotwork.harmonize.base import HARMONIZERS, Harmonizer

NIFTI_SUFFIXES = (".nii.gz", ".nii")
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
FORMAT = "knotwork.harmonize/1"


def volume_suffix(path: Path | str) -> str | None:
    """The recognised volume suffix of ``path`` (``.nii.gz``, ``.nii``, ``.nrrd``, ...), else None."""
    name = str(path).lower()
    return next((s for s in NIFTI_SUFFIXES + SITK_SUFFIXES if name.endswith(s)), None)


def list_volumes(folder: Path | str) -> list[Path]:
    """Volume files directly inside ``folder``, sorted by name (hidden and partial files excluded)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HarmonizeError(f"{folder} is not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and volume_suffix(p))


@dataclass
class Volume:
    """Voxel data with what is needed to write it back: the source path and its image object."""

    data: np.ndarray
    path: Path
    image: Any  # nibabel image, or SimpleITK image for other formats


def read_volume(path: Path | str) -> Volume:
    """Read a NIfTI file with nibabel (SimpleITK for NRRD/MHA/MHD); errors name the file."""
    path = Path(path)
    suffix = volume_suffix(path)
    if suffix is None:
        raise HarmonizeError(f"{path}: not a recognised volume file (expected one of {NIFTI_SUFFIXES + SITK_SUFFIXES})")
    try:
        if suffix in NIFTI_SUFFIXES:
            import nibabel as nib

            img = nib.load(str(path))
            # get_fdata would scale to float64; keep the stored dtype unless the header scales values.
            data = np.asanyarray(img.dataobj)
            return Volume(np.asarray(data), path, img)
        sitk = _sitk(path)
        img = sitk.ReadImage(str(path))
        return Volume(sitk.GetArrayFromImage(img), path, img)
    except HarmonizeError:
        raise
    except Exception as exc:  # nibabel/SimpleITK raise many types for a corrupt file
        raise HarmonizeError(f"{path}: cannot read volume ({type(exc).__name__}: {exc})") from exc


def _sitk(path):
    try:
        import SimpleITK as sitk
    except ImportError as exc:
        raise HarmonizeError(f"{path}: reading this format needs SimpleITK (pip install 'knotwork[med]')") from exc
    return sitk


def _output_array(data: np.ndarray, like_dtype: np.dtype, dtype: str) -> np.ndarray:
    if dtype == "float32":
        return data.astype(np.float32, copy=False)
    if dtype == "input":
        like_dtype = np.dtype(like_dtype)
        if like_dtype.kind in "iu":
            info = np.iinfo(like_dtype)
            return np.clip(np.rint(data), info.min, info.max).astype(like_dtype)
        return data.astype(like_dtype, copy=False)
    raise HarmonizeError(f"unknown output dtype {dtype!r}; use 'float32' or 'input'")


@contextmanager
def scratch_path(path: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that needs a file name; rename it onto ``path``.

    The name, ``.<name>.knotwork-tmp-<pid>-<random><suffix>``, keeps the format's suffix (nibabel and
    SimpleITK choose the format by it) and is the one :func:`knotwork._io.clean_leftovers` removes once its
    process is gone. On an exception the temporary file is removed and ``path`` is untouched.
    """
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.knotwork-tmp-{os.getpid()}-", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, umask_mode(0o666))
        fault_point("harmonize:volume-before-rename")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_volume(path: Path | str, data: np.ndarray, like: Volume, *, dtype: str = "float32") -> Path:
    """Write ``data`` with ``like``'s affine and header (NIfTI) or geometry (SimpleITK), atomically.

    Parameters
    ----------
    dtype : {"float32", "input"}
        float32 (default) keeps harmonized intensities exactly enough for training; "input" rounds
        and clips to the input's integer dtype (e.g. int16 for CT), halving the size.

    Raises
    ------
    HarmonizeError
        When ``path`` is the input volume itself, or ``dtype`` is unknown.
    """
    path = Path(path)
    if path.resolve() == like.path.resolve():
        raise HarmonizeError(f"{path}: refusing to write over the input volume")
    suffix = volume_suffix(path) or path.suffix
    if suffix in NIFTI_SUFFIXES:
        import nibabel as nib

        out = _output_array(data, like.image.get_data_dtype(), dtype)
        header = like.image.header.copy()
        header.set_data_dtype(out.dtype)
        img = type(like.image)(out, like.image.affine, header=header)
        img.header.set_slope_inter(np.nan, np.nan)  # the values are final; no stored scaling
        with scratch_path(path, suffix) as tmp:
            nib.save(img, str(tmp))
    else:
        sitk = _sitk(path)
        out = _output_array(data, like.data.dtype, dtype)
        img = sitk.GetImageFromArray(out)
        img.CopyInformation(like.image)
        with scratch_path(path, suffix) as tmp:
            sitk.WriteImage(img, str(tmp))
    return path


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_jsonable(t) for t in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def harmonizer_to_dict(h: Harmonizer) -> dict[str, Any]:
    """Method name, parameters and fitted state as plain JSON types."""
    return {
        "format": FORMAT,
        "method": h.name,
        "params": {k: _jsonable(v) for k, v in h.get_params().items()},
        "state": {k: v.tolist() for k, v in h.get_state().items()},
    }


def harmonizer_from_dict(d: Any, *, source: str = "state") -> Harmonizer:
    """Inverse of :func:`harmonizer_to_dict`.

    Raises
    ------
    HarmonizeError
        Naming ``source`` and the field (``format``, ``method``, ``params.<name>``, ``state.<name>``) that is
        missing or wrong.
    """
    if not isinstance(d, dict):
        raise HarmonizeError(f"{source}: a harmonizer is a JSON object; got {type(d).__name__}")
    if d.get("format") != FORMAT:
        raise HarmonizeError(f"{source}: not a knotwork harmonizer file (field 'format' is {d.get('format')!r}, "
                             f"expected {FORMAT!r})")
    method = d.get("method")
    if not isinstance(method, str) or method not in HARMONIZERS:
        raise HarmonizeError(f"{source}: field 'method' is {method!r}; known: {sorted(HARMONIZERS)}")
    cls = HARMONIZERS[method]
    for field in ("params", "state"):
        if not isinstance(d.get(field), dict):
            raise HarmonizeError(f"{source}: field '{field}' must be a JSON object; got {d.get(field)!r:.40}")
    params = d["params"]
    known = set(cls._parameter_constraints)
    odd = sorted(set(params) ^ known)
    if odd:
        what = "is not a parameter of" if odd[0] in params else "is missing; it is a parameter of"
        raise HarmonizeError(f"{source}: field 'params.{odd[0]}' {what} {cls.__name__} ({sorted(known)})")
    try:
        h = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})
        h._validate_params()
    except HarmonizeError as exc:
        raise HarmonizeError(f"{source}: field 'params': {exc}") from None
    try:
        return h.set_state(d["state"])
    except HarmonizeError as exc:
        raise HarmonizeError(f"{source}: {exc}") from None


def save_harmonizer(
    h: Harmonizer, path: Path | str, *, overwrite: bool = False, inputs: Iterable[Path | str] = ()
) -> Path:
    """Save a fitted harmonizer as JSON (``.json``) or compressed npz (``.npz``, for large references).

    The file is a knotwork output (:mod:`knotwork._io`): written atomically, with provenance (a ``"knotwork"``
    key in the JSON, a ``<name>.knotwork.json`` report beside an npz); ``overwrite=True`` replaces only a
    previous knotwork output, and ``path`` may not be or lie inside one of ``inputs``.

    Raises
    ------
    HarmonizeError
        For another suffix than ``.json``/``.npz``.
    knotwork._errors.OutputError
        When ``path`` may not be written (see :func:`knotwork._io.check_output`).
    """
    path = Path(path)
    if path.suffix not in (".json", ".npz"):
        raise HarmonizeError(f"{path}: save the harmonizer as .json or .npz")
    d = harmonizer_to_dict(h)
    if path.suffix == ".json":
        return write_json(path, d, inputs=inputs, force=overwrite)
    meta = {k: v for k, v in d.items() if k != "state"}
    arrays = {f"state.{k}": np.asarray(v) for k, v in d["state"].items()}
    buf = io.BytesIO()
    np.savez_compressed(buf, meta=np.asarray(json.dumps(meta)), **arrays)
    with atomic_file(path, inputs=inputs, force=overwrite, report={"format": FORMAT}) as tmp:
        tmp.write_bytes(buf.getvalue())
    return path


def load_harmonizer(path: Path | str) -> Harmonizer:
    """Load a harmonizer saved by :func:`save_harmonizer` (no pickle: JSON and plain arrays only).

    Raises
    ------
    HarmonizeError
        Naming the file, and the field when the content is wrong.
    """
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                d = json.loads(str(z["meta"]))
                d["state"] = {k.removeprefix("state."): z[k] for k in z.files if k.startswith("state.")}
        else:
            d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
        raise HarmonizeError(f"{path}: cannot read the harmonizer ({reason})") from None
    return harmonizer_from_dict(d, source=str(path))
