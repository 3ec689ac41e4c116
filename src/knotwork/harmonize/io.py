"""Reading and writing volumes (NIfTI via nibabel, other formats via SimpleITK) and fitted harmonizers.

All writes are atomic: a temporary file in the destination folder, then ``os.replace``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
        raise HarmonizeError(f"{path}: reading this format needs SimpleITK (pip install 'knotwork[sitk]')") from exc
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


def _partial_path(path: Path) -> Path:
    # Same folder (so os.replace is atomic), hidden, fixed name: a rerun overwrites a killed run's leftover.
    return path.with_name(f".{path.name}.partial{volume_suffix(path) or path.suffix}")


def write_volume(path: Path | str, data: np.ndarray, like: Volume, *, dtype: str = "float32") -> Path:
    """Write ``data`` with ``like``'s affine and header (NIfTI) or geometry (SimpleITK), atomically.

    Parameters
    ----------
    dtype : {"float32", "input"}
        float32 (default) keeps harmonized intensities exactly enough for training; "input" rounds
        and clips to the input's integer dtype (e.g. int16 for CT), halving the size.
    """
    path = Path(path)
    if path.resolve() == like.path.resolve():
        raise HarmonizeError(f"{path}: refusing to write over the input volume")
    tmp = _partial_path(path)
    try:
        if volume_suffix(path) in NIFTI_SUFFIXES:
            import nibabel as nib

            out = _output_array(data, like.image.get_data_dtype(), dtype)
            header = like.image.header.copy()
            header.set_data_dtype(out.dtype)
            img = type(like.image)(out, like.image.affine, header=header)
            img.header.set_slope_inter(np.nan, np.nan)  # the values are final; no stored scaling
            nib.save(img, str(tmp))
        else:
            sitk = _sitk(path)
            out = _output_array(data, like.data.dtype, dtype)
            img = sitk.GetImageFromArray(out)
            img.CopyInformation(like.image)
            sitk.WriteImage(img, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_jsonable(t) for t in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def harmonizer_to_dict(h: Harmonizer) -> dict[str, Any]:
    """Method name, parameters and fitted state as plain JSON types."""
    import knotwork

    return {
        "format": FORMAT,
        "method": h.name,
        "params": {k: _jsonable(v) for k, v in h.get_params().items()},
        "state": {k: v.tolist() for k, v in h.get_state().items()},
        "knotwork_version": knotwork.__version__,
    }


def harmonizer_from_dict(d: dict[str, Any], *, source: str = "state") -> Harmonizer:
    """Inverse of :func:`harmonizer_to_dict`; the error names ``source`` and the missing item."""
    if d.get("format") != FORMAT:
        raise HarmonizeError(f"{source}: not a knotwork harmonizer file (format {d.get('format')!r}, expected {FORMAT!r})")
    if d.get("method") not in HARMONIZERS:
        raise HarmonizeError(f"{source}: unknown method {d.get('method')!r}; known: {sorted(HARMONIZERS)}")
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in d.get("params", {}).items()}
    return HARMONIZERS[d["method"]](**params).set_state(d.get("state", {}))


def save_harmonizer(h: Harmonizer, path: Path | str, *, overwrite: bool = False) -> Path:
    """Save a fitted harmonizer as JSON (``.json``) or compressed npz (``.npz``, for large references)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--force) to replace it")
    d = harmonizer_to_dict(h)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        if path.suffix == ".npz":
            meta = {k: v for k, v in d.items() if k != "state"}
            arrays = {f"state.{k}": np.asarray(v) for k, v in d["state"].items()}
            with open(tmp, "wb") as f:
                np.savez_compressed(f, meta=np.asarray(json.dumps(meta)), **arrays)
        elif path.suffix == ".json":
            tmp.write_text(json.dumps(d, indent=1))
        else:
            raise HarmonizeError(f"{path}: save the harmonizer as .json or .npz")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_harmonizer(path: Path | str) -> Harmonizer:
    """Load a harmonizer saved by :func:`save_harmonizer` (no pickle: JSON and plain arrays only)."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                d = json.loads(str(z["meta"]))
                d["state"] = {k.removeprefix("state."): z[k] for k in z.files if k.startswith("state.")}
        else:
            d = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HarmonizeError(f"{path}: cannot read harmonizer ({type(exc).__name__}: {exc})") from exc
    return harmonizer_from_dict(d, source=str(path))
