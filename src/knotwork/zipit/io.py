"""Reading ZipIt! inputs from files, each checked before any work: safetensors checkpoints and images in .npz.

Every refusal is a :class:`~knotwork.zipit.ZipitError` whose one line names the file and the item (tensor,
array, image) and says what is wrong. The algorithms in :mod:`knotwork.zipit` never read files; the CLI and the
benchmark scripts come through here.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from knotwork._errors import ZipitError, check_finite
from knotwork._io import open_npz
from knotwork.zipit.models import build_from_state, state_difference

__all__ = ["NORMALIZATIONS", "load_checkpoint", "load_images", "load_labels", "load_models", "npz_arrays"]

#: Per-channel (mean, std) of the data sets the reference models were trained on; "none" keeps [0, 1] pixels.
NORMALIZATIONS: dict[str, tuple[list[float], list[float]] | None] = {
    "none": None,
    "mnist": ([0.1307], [0.3081]),
    "cifar10": ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
}


def _exists(path: Path) -> None:
    if not path.is_file():
        raise ZipitError(f"{path}: {'is a folder, not a file' if path.is_dir() else 'no such file'}")


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors checkpoint, refused when the file is unreadable or a tensor is not finite.

    Raises
    ------
    knotwork.zipit.ZipitError
        A missing file; a file that is not safetensors or is truncated (the file named); a tensor with NaN or
        inf values (the file and tensor named).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    _exists(path)
    try:
        state = load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ZipitError(f"{path}: not a readable safetensors checkpoint ({err})") from None
    if not state:
        raise ZipitError(f"{path}: the checkpoint holds no tensors")
    for key, tensor in state.items():
        check_finite(tensor, f"{path}: tensor {key!r}", error=ZipitError)
    return state


def load_models(paths: Sequence[str | os.PathLike[str]], arch: str, *, width: int) -> list[nn.Module]:
    """Rebuild ``arch`` around each checkpoint after checking that all checkpoints have the same tensors.

    Raises
    ------
    knotwork.zipit.ZipitError
        Any refusal of :func:`load_checkpoint`; a checkpoint whose tensor names or shapes differ from the first
        one's (the tensor and both files named); checkpoints that are not ``arch`` at ``width`` (the file and
        the first missing, unexpected or misshapen tensor named).
    """
    paths = [Path(p) for p in paths]
    states = [load_checkpoint(p) for p in paths]
    first, ref = paths[0], states[0]
    for path, state in zip(paths[1:], states[1:], strict=True):
        diff = state_difference(state, ref, str(first))
        if diff is not None:
            raise ZipitError(f"{path}: {diff}; the checkpoints must share one architecture")
    models = []
    for path, state in zip(paths, states, strict=True):
        try:
            models.append(build_from_state(arch, state, width=width))
        except ZipitError as err:
            raise ZipitError(f"{path}: {err}") from None
    return models


def load_images(path: str | os.PathLike[str], *, key: str = "x_train", normalize: str = "none",
                limit: int | None = None) -> torch.Tensor:
    """The first ``limit`` images of array ``key`` of an .npz, as float (N, C, H, W), normalised.

    uint8 images are scaled to [0, 1]; (N, H, W) gains a channel axis and (N, H, W, C) with C in {1, 3} is
    moved to (N, C, H, W); then ``NORMALIZATIONS[normalize]`` is applied per channel. Labels are never read.

    Raises
    ------
    knotwork.zipit.ZipitError
        A missing or unreadable file, a missing array (the arrays present are listed), an array that is not
        images (dtype or rank), no images, an image with NaN or inf values (the file, array and image index
        named), or a normalisation whose channel count differs from the images'.
    """
    path = Path(path)
    _exists(path)
    if normalize not in NORMALIZATIONS:
        raise ZipitError(f"unknown normalisation {normalize!r}; choose one of {sorted(NORMALIZATIONS)}")
    archive = _open_npz(path)
    with archive:
        if key not in archive.files:
            raise ZipitError(f"{path}: has no array {key!r}; it has {sorted(archive.files)}")
        try:
            x = archive[key]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise ZipitError(f"{path}: array {key!r} cannot be read ({err})") from None
    where = f"{path}: array {key!r}"
    if x.dtype != np.uint8 and x.dtype.kind != "f":
        raise ZipitError(f"{where} has dtype {x.dtype}; images must be uint8 or float")
    if x.ndim not in (3, 4):
        raise ZipitError(f"{where} has shape {x.shape}; images must be (N, H, W), (N, C, H, W) or (N, H, W, C)")
    x = x[:limit]
    if len(x) == 0:
        raise ZipitError(f"{where} holds no images")
    if x.dtype.kind == "f":
        finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if not finite.all():
            i = int(np.argmin(finite))
            bad = int((~finite).sum())
            more = f" (and {bad - 1} more image{'s' if bad > 2 else ''})" if bad > 1 else ""
            raise ZipitError(f"{where} image {i} holds NaN or inf values{more}")
    t = torch.from_numpy(np.ascontiguousarray(x))
    t = t.float().div(255) if t.dtype == torch.uint8 else t.float()
    if t.ndim == 3:
        t = t.unsqueeze(1)
    elif t.shape[-1] in (1, 3) and t.shape[1] not in (1, 3):
        t = t.permute(0, 3, 1, 2)
    stats = NORMALIZATIONS[normalize]
    if stats is not None:
        mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in stats)
        if mean.shape[1] != t.shape[1]:
            raise ZipitError(f"{where} has {t.shape[1]} channel(s) but --normalize {normalize} is for "
                             f"{mean.shape[1]}")
        t = (t - mean) / std
    return t


def _open_npz(path: Path) -> np.lib.npyio.NpzFile:
    """An .npz archive opened without unpickling, refused (naming the file) when it is not one."""
    return open_npz(path, error=ZipitError, expected="of named arrays")


def npz_arrays(path: str | os.PathLike[str]) -> list[str]:
    """The names of the arrays of an .npz (nothing is loaded), refused when it is not a readable archive."""
    path = Path(path)
    _exists(path)
    archive = _open_npz(path)
    with archive:
        return list(archive.files)


def load_labels(path: str | os.PathLike[str], *, key: str = "y_train", limit: int | None = None) -> torch.Tensor:
    """The first ``limit`` class ids of array ``key`` of an .npz, as a long tensor of shape (N,).

    Raises
    ------
    knotwork.zipit.ZipitError
        A missing or unreadable file or array (the arrays present are listed), an array that is not one integer
        per image (dtype or rank; integral floats are accepted), no labels, or a negative label (index named).
    """
    path = Path(path)
    files = npz_arrays(path)
    if key not in files:
        raise ZipitError(f"{path}: has no array {key!r}; it has {sorted(files)}")
    where = f"{path}: array {key!r}"
    try:
        with np.load(path, allow_pickle=False) as archive:
            y = archive[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ZipitError(f"{where} cannot be read ({err})") from None
    if y.ndim != 1:
        raise ZipitError(f"{where} has shape {y.shape}; labels must be one class id per image, shape (N,)")
    y = y[:limit]
    if len(y) == 0:
        raise ZipitError(f"{where} holds no labels")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            raise ZipitError(f"{where} label {int(np.argmax(bad))} = {y[int(np.argmax(bad))]!r} is not an integer")
    elif y.dtype.kind not in "iu":
        raise ZipitError(f"{where} has dtype {y.dtype}; labels must be integer class ids")
    if (y < 0).any():
        i = int(np.argmax(y < 0))
        raise ZipitError(f"{where} label {i} = {int(y[i])} is negative; class ids start at 0")
    return torch.from_numpy(y.astype(np.int64))
