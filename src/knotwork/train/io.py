"""Reading MNIST-format ``.npz`` files, checked array by array (the only file access of this package)."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from knotwork._errors import TrainError, check_finite
from knotwork._io import open_npz

MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")
#: Digits 0-9: the number of outputs of the MLP and the range every label must lie in.
N_CLASSES = 10


def load_mnist(path: str | Path) -> dict[str, np.ndarray]:
    """Load an MNIST-format ``.npz``: ``x_*`` images of shape ``(n, 28, 28)`` and ``y_*`` integer labels 0-9.

    The archive is opened with ``allow_pickle=False``: it holds plain numeric arrays or it is refused.

    Parameters
    ----------
    path : str or Path
        An ``.npz`` with the arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``. Images may be uint8
        (scaled by 1/255 in :func:`to_tensors`) or float (used as they are).

    Returns
    -------
    dict of str to ndarray
        The four arrays.

    Raises
    ------
    TrainError
        Naming the file and the array: a missing file, a file that is not an ``.npz`` archive, a pickled
        (object) array, a missing array, a wrong shape or dtype, an empty split, non-finite images, labels
        outside 0-9, or a label count that differs from the image count.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "no such file"
        raise TrainError(f"{path}: {what}; expected an MNIST-format .npz ({', '.join(MNIST_KEYS)})")
    with open_npz(path, error=TrainError, expected=f"with {', '.join(MNIST_KEYS)}") as archive:
        missing = [k for k in MNIST_KEYS if k not in archive.files]
        if missing:
            raise TrainError(f"{path}: missing arrays {', '.join(missing)}; expected {', '.join(MNIST_KEYS)}")
        data = {k: _read(archive, k, path) for k in MNIST_KEYS}
    for split in ("train", "test"):
        _check_split(data[f"x_{split}"], data[f"y_{split}"], split, path)
    return data


def _reason(err: BaseException) -> str:
    text = str(err)
    if "pickled" in text:  # numpy's fallback for a file that is neither .npy nor .npz
        return "neither .npz nor .npy data; pickles are never loaded"
    return " ".join(text.split()) or type(err).__name__


def _read(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        array = archive[key]
    except ValueError as err:
        if "allow_pickle" in str(err) or "pickled" in str(err):
            raise TrainError(
                f"{path}: array '{key}' holds Python objects (pickled data); knotwork loads only numeric arrays "
                "(allow_pickle=False)"
            ) from None
        raise TrainError(f"{path}: array '{key}' cannot be read ({_reason(err)})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise TrainError(f"{path}: array '{key}' cannot be read ({_reason(err)})") from None
    if not isinstance(array, np.ndarray):  # numpy hands back the raw bytes of a member that is not a .npy
        raise TrainError(f"{path}: array '{key}' cannot be read (the archive member is not a .npy array)")
    return array


def _check_split(x: np.ndarray, y: np.ndarray, split: str, path: Path) -> None:
    xk, yk = f"x_{split}", f"y_{split}"
    if x.dtype.kind not in "uif":
        raise TrainError(f"{path}: array '{xk}' has dtype {x.dtype}; expected numeric pixels")
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise TrainError(f"{path}: array '{xk}' must have shape (n, 28, 28); got {x.shape}")
    if len(x) == 0:
        raise TrainError(f"{path}: array '{xk}' is empty")
    check_finite(x, f"{path}: array '{xk}'", error=TrainError)
    if y.dtype.kind not in "iu":
        raise TrainError(f"{path}: array '{yk}' has dtype {y.dtype}; expected integer labels 0-{N_CLASSES - 1}")
    if y.ndim != 1:
        raise TrainError(f"{path}: array '{yk}' must have shape (n,); got {y.shape}")
    if len(y) != len(x):
        raise TrainError(f"{path}: array '{yk}' has {len(y)} labels but '{xk}' has {len(x)} images")
    bad = np.flatnonzero((y < 0) | (y >= N_CLASSES))
    if bad.size:
        raise TrainError(
            f"{path}: array '{yk}' holds label {y[bad[0]]} at row {bad[0]}, outside 0-{N_CLASSES - 1} "
            f"({bad.size} such row{'s' if bad.size != 1 else ''})"
        )


def to_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[Tensor, Tensor]:
    """Flatten ``(n, 28, 28)`` images to float32 ``(n, 784)`` (uint8 pixels divided by 255) and labels to int64."""
    x = images.reshape(len(images), -1).astype(np.float32)
    if images.dtype == np.uint8:
        x /= 255.0
    return torch.from_numpy(x), torch.from_numpy(np.asarray(labels, dtype=np.int64))
