"""Reading MNIST-format ``.npz`` files and writing results atomically (the only file access of this package)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_mnist(path: str | Path) -> dict[str, np.ndarray]:
    """Load an MNIST-format ``.npz``: ``x_*`` uint8 ``(n, 28, 28)`` images and ``y_*`` labels 0-9.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When a key is missing or an array has the wrong shape or values, naming the file and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MNIST file not found: {path}")
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in MNIST_KEYS if k not in f.files]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing}; expected {list(MNIST_KEYS)}.")
        data = {k: f[k] for k in MNIST_KEYS}
    for split in ("train", "test"):
        x, y = data[f"x_{split}"], data[f"y_{split}"]
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise ValueError(f"{path}: 'x_{split}' must have shape (n, 28, 28); got {x.shape}.")
        if y.shape != (x.shape[0],):
            raise ValueError(f"{path}: 'y_{split}' must have shape ({x.shape[0]},); got {y.shape}.")
        if y.size and (y.min() < 0 or y.max() > 9):
            raise ValueError(f"{path}: 'y_{split}' has labels outside 0-9 (min {y.min()}, max {y.max()}).")
    return data


def to_features(images: np.ndarray) -> np.ndarray:
    """Flatten ``(n, 28, 28)`` images to float32 ``(n, 784)`` in [0, 1] (uint8 pixels are divided by 255)."""
    x = images.reshape(len(images), -1).astype(np.float32)
    return x / 255.0 if images.dtype == np.uint8 else x


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Write to a temporary file in the same folder, then ``os.replace`` it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode() if isinstance(text, str) else text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj) -> None:
    """Atomic JSON write (indented, keys in insertion order)."""
    write_atomic(path, json.dumps(obj, indent=1))
