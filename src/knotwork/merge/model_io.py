"""Streaming model I/O: find a base model offline, read its weights lazily, write base + delta shard by shard."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from knotwork._errors import MergeError
from knotwork._io import PathLike, atomic_dir

logger = logging.getLogger(__name__)

INDEX_NAME = "model.safetensors.index.json"
#: Top-level files holding the base's weights in another format. They are not copied to a merged model: they
#: would disagree with its merged weights, and a loader that prefers them would silently load the base.
_OTHER_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".bin.index.json")
#: Top-level folders holding exports of the base (sentence-transformers ships ONNX and OpenVINO copies).
_OTHER_WEIGHT_DIRS = ("onnx", "openvino")

#: An update: a tensor, or a function of no argument computing it when its shard is written.
Delta = torch.Tensor | Callable[[], torch.Tensor]


def resolve_model_dir(name_or_path: PathLike) -> Path:
    """The folder of a base model: a local folder, or the cached snapshot of a Hugging Face model id.

    The hub cache is read offline (``HF_HUB_CACHE``, read when called, else huggingface_hub's default); the
    snapshot is the one ``refs/main`` names. knotwork never downloads.

    Parameters
    ----------
    name_or_path : str or path-like
        A folder, or a model id such as ``"sentence-transformers/all-MiniLM-L6-v2"``.

    Returns
    -------
    Path
        The model folder (for a cached id, its ``snapshots/<commit>`` folder).

    Raises
    ------
    MergeError
        When ``name_or_path`` is a file, or neither a folder nor a model id found in the cache.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise MergeError(f"{name_or_path}: is a file; a base model is a folder or a Hugging Face model id")
    from huggingface_hub import constants, snapshot_download

    # huggingface_hub reads HF_HUB_CACHE once, at import; read it here so a later setting counts.
    cache = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
    try:
        return Path(snapshot_download(str(name_or_path), cache_dir=cache, local_files_only=True))
    except (OSError, ValueError):  # LocalEntryNotFoundError is an OSError, HFValidationError a ValueError
        raise MergeError(
            f"{name_or_path}: neither a folder nor a model id in the Hugging Face cache ({cache}); knotwork never "
            f"downloads, so fetch it first (huggingface-cli download {name_or_path}) or pass its folder"
        ) from None


class BaseModel:
    """A model folder whose safetensors weights are read lazily, one tensor at a time.

    The layout is read from the safetensors headers only: a single ``model.safetensors``; shards named by
    ``model.safetensors.index.json`` (its ``weight_map``); or, with no index, every top-level ``*.safetensors``.

    Parameters
    ----------
    path : str or path-like
        The model folder (see :func:`resolve_model_dir` for model ids).

    Attributes
    ----------
    path : Path
        The folder.
    shards : list of str
        The weight files, as file names inside ``path``, in order.
    weight_map : dict of str to str
        Tensor key -> the shard file holding it.

    Raises
    ------
    MergeError
        When the folder holds no safetensors weights (``.bin``-only bases are refused: streaming needs
        safetensors), when the index names a missing shard or a key its shard lacks, or when two files hold the
        same key.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise MergeError(f"{self.path}: base model folder not found")
        index = self.path / INDEX_NAME
        if index.is_file():
            try:
                listed = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise MergeError(f"{index}: not a safetensors index with a weight_map ({err})") from None
            self.shards = sorted(set(listed.values()))
        else:
            listed = None
            self.shards = sorted(p.name for p in self.path.glob("*.safetensors"))
        if not self.shards:
            bins = sorted(p.name for p in self.path.glob("*.bin")) + sorted(p.name for p in self.path.glob("*.pt*"))
            found = f"only {', '.join(bins[:3])}" if bins else "no *.safetensors file"
            raise MergeError(
                f"{self.path}: base model has {found}; merging a base streams safetensors weights, so convert it "
                "first (transformers: model.save_pretrained(folder, safe_serialization=True))"
            )
        self.weight_map: dict[str, str] = {}
        self._headers: dict[str, tuple[tuple[int, ...], str]] = {}  # key -> (shape, safetensors dtype)
        for shard in self.shards:
            for key, info in _read_header(self.path / shard).items():
                if key in self.weight_map:
                    raise MergeError(f"{self.path}: tensor {key!r} is in both {self.weight_map[key]} and {shard}")
                self.weight_map[key] = shard
                self._headers[key] = info
        for key, shard in (listed or {}).items():
            if self.weight_map.get(key) != shard:
                raise MergeError(f"{index}: names {key!r} in {shard}, which does not hold it")

    def __repr__(self) -> str:
        return f"BaseModel({str(self.path)!r}, shards={len(self.shards)}, tensors={len(self.weight_map)})"

    def shape(self, key: str) -> tuple[int, ...]:
        """The shape of tensor ``key``, from its shard's header (no data read)."""
        return self._headers[key][0]

    def get_tensor(self, key: str) -> torch.Tensor:
        """Read one tensor from its shard."""
        from safetensors import safe_open

        with safe_open(self.path / self.weight_map[key], framework="pt") as fh:
            return fh.get_tensor(key)

    def iter_shard(self, shard: str) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(key, tensor)`` for every tensor of one shard, read one at a time."""
        from safetensors import safe_open

        with safe_open(self.path / shard, framework="pt") as fh:
            for key in fh.keys():
                yield key, fh.get_tensor(key)

    def find_weight_key(self, module: str) -> str:
        """The key of the base weight an adapter ``module`` updates.

        Tried in order: ``<module>.weight``; a unique key ending in ``.<module>.weight`` (the base carries a
        prefix the adapter lacks); then the same with leading parts of ``module`` dropped, one at a time (the
        adapter carries a wrapper prefix, such as ``model.`` or ``bert.``, the base lacks).

        Raises
        ------
        MergeError
            Naming the module and the folder, when no key or several keys match.
        """
        exact = f"{module}.weight"
        if exact in self.weight_map:
            return exact
        parts = module.split(".")
        for i in range(len(parts)):
            tail = ".".join(parts[i:]) + ".weight"
            hits = sorted(k for k in self.weight_map if k == tail or k.endswith("." + tail))
            if len(hits) == 1:
                return hits[0]
            if hits:  # a shorter tail only matches more keys
                raise MergeError(
                    f"module {module!r}: matches {len(hits)} weights of the base model {self.path} "
                    f"({', '.join(hits[:4])}{', ...' if len(hits) > 4 else ''}); name it in full"
                )
        raise MergeError(f"module {module!r}: no weight for it in the base model {self.path}")


def _read_header(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{key: (shape, dtype)}`` of a safetensors file, from its header alone."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as fh:
            return {k: (tuple(fh.get_slice(k).get_shape()), fh.get_slice(k).get_dtype()) for k in fh.keys()}
    except FileNotFoundError:
        raise MergeError(f"{path}: weight file not found") from None
    except Exception as err:  # safetensors raises its own SafetensorError on a corrupt header
        raise MergeError(f"{path}: not a readable safetensors file ({err})") from None


def write_merged_model(
    out_dir: PathLike,
    base: BaseModel,
    deltas: Mapping[str, Delta],
    *,
    shapes: Mapping[str, Sequence[int]] | None = None,
    fan_in_fan_out: bool = False,
    force: bool = False,
    inputs: Iterable[PathLike] = (),
    report: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
    extra_files: Callable[[], Mapping[str, str]] | None = None,
) -> Path:
    """Write ``base`` plus one update per module as a model folder in the base's layout, one shard at a time.

    Each shard of the base is written under its own name with the same tensors, each updated weight being
    ``base + delta`` added in at least float32 and cast back to the base dtype, so dtypes, shapes and the index
    are unchanged (the index is copied as is). Every other file and subfolder of the base is copied, except
    copies of the weights in another format (top-level ``.bin``, ``.pt``, ... files, ``onnx/``, ``openvino/``),
    which would disagree with the merged weights. Memory holds one shard's tensors and one delta at most.

    Parameters
    ----------
    out_dir : str or path-like
        The output folder, written atomically with a ``.knotwork.json`` marker; never inside the base.
    base : BaseModel
        The base model.
    deltas : mapping of str to Tensor or callable
        Adapter module name -> its update, Tensor of shape (d_out, d_in), or a function of no argument that
        returns it; a function is called once, when its weight's shard is written.
    shapes : mapping of str to tuple of int, optional
        The shape each callable's update will have, so that it is checked before any work; an update without a
        known shape is checked when computed (the output still never appears half-written).
    fan_in_fan_out : bool, default=False
        The base stores weights as (d_in, d_out) (GPT-2's Conv1D): each update is transposed before adding.
    force : bool, default=False
        Replace a previous knotwork output at ``out_dir``.
    inputs : iterable of path-like, default=()
        Further inputs (the adapters) that the output must not be or lie in; the base folder is always one.
    report : mapping, optional
        Stored in the output's marker.
    device : str or torch.device, default="cpu"
        Where each addition runs.
    extra_files : callable, optional
        Called once every shard is written; returns ``{file name: text}`` to write into the folder too (the
        merge report, which knows the timings only at the end).

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    MergeError
        Before anything is written, naming the module, key and shapes: a module with no (or no single) base
        weight, two modules updating one weight, or an update whose shape is not the weight's.
    """
    out_dir = Path(out_dir)
    keys: dict[str, str] = {}  # weight key -> module
    for module, delta in deltas.items():
        key = base.find_weight_key(module)
        if key in keys:
            raise MergeError(f"modules {keys[key]!r} and {module!r} both update {key!r} of {base.path}")
        keys[key] = module
        if isinstance(delta, torch.Tensor):
            _check_shape(base, module, key, delta.shape, fan_in_fan_out)
        elif shapes is not None and module in shapes:
            _check_shape(base, module, key, shapes[module], fan_in_fan_out)
    with atomic_dir(out_dir, inputs=[base.path, *inputs], force=force, report=report) as tmp:
        for shard in base.shards:
            _write_shard(tmp / shard, base, shard, {k: (m, deltas[m]) for k, m in keys.items()}, fan_in_fan_out, device)
        _copy_other_files(base, tmp)
        for name, text in (extra_files() if extra_files is not None else {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
    return out_dir


def _check_shape(base: BaseModel, module: str, key: str, shape: Sequence[int], fan_in_fan_out: bool) -> None:
    update = tuple(shape)[::-1] if fan_in_fan_out else tuple(shape)
    if update != base.shape(key):
        how = ", transposed for fan_in_fan_out," if fan_in_fan_out else ""
        raise MergeError(
            f"module {module!r}: base weight {key!r} of {base.path} has shape {base.shape(key)}, "
            f"the update{how} has {update}"
        )


def _write_shard(
    out: Path,
    base: BaseModel,
    shard: str,
    updates: Mapping[str, tuple[str, Delta]],
    fan_in_fan_out: bool,
    device: str | torch.device,
) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    tensors = {}
    with safe_open(base.path / shard, framework="pt") as fh:
        # transformers refuses a checkpoint without a "format" entry; a base that lacks it gets "pt".
        metadata = fh.metadata() or {"format": "pt"}
        for key in fh.keys():
            weight = fh.get_tensor(key)
            if key in updates:
                module, delta = updates[key]
                delta = delta if isinstance(delta, torch.Tensor) else delta()
                _check_shape(base, module, key, delta.shape, fan_in_fan_out)
                update = delta.T if fan_in_fan_out else delta
                # Add in float32 at least: a bf16 sum would round a small update away (float64 stays float64).
                acc = torch.promote_types(weight.dtype, torch.float32)
                weight = (weight.to(device, acc) + update.to(device, acc)).to("cpu", weight.dtype)
            tensors[key] = weight.contiguous()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata=metadata)


def _copy_other_files(base: BaseModel, out: Path) -> None:
    """Copy every file of ``base`` that is not a rewritten shard or a weight copy in another format."""
    skipped, shards = [], set(base.shards)
    for root, dirs, files in os.walk(base.path, followlinks=True):
        rel_root = Path(root).relative_to(base.path)
        if rel_root == Path("."):
            skipped += [d + "/" for d in dirs if d in _OTHER_WEIGHT_DIRS]
            dirs[:] = [d for d in dirs if d not in _OTHER_WEIGHT_DIRS]
        (out / rel_root).mkdir(parents=True, exist_ok=True)
        for name in files:
            rel = rel_root / name
            if rel.as_posix() in shards:
                continue
            if rel_root == Path(".") and name.endswith(_OTHER_WEIGHTS):
                skipped.append(name)
                continue
            shutil.copy2(Path(root) / name, out / rel)  # follows links: a hub snapshot links into blobs/
    if skipped:
        logger.warning("%s: not copied to the merged model (base weights in another format): %s",
                       base.path, ", ".join(sorted(skipped)))


# ----------------------------------------------------------------------------- streaming safetensors writer

_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL"}


class SafetensorsWriter:
    """Write a safetensors file tensor by tensor, never holding more than the tensor being added.

    Tensor bytes go to a scratch file beside ``path`` as they come; :meth:`close` writes the header (which must
    come first in the format and needs every offset) and then the bytes. Use as a context manager; on an error
    the scratch file is removed and ``path`` is not written.
    """

    def __init__(self, path: PathLike, *, metadata: Mapping[str, str] | None = None) -> None:
        self.path = Path(path)
        self._scratch = self.path.with_name(self.path.name + ".data")
        self._fh = open(self._scratch, "wb")  # noqa: SIM115 - closed in close()/__exit__
        self._entries: dict[str, dict[str, Any]] = {}
        self._offset = 0
        self.metadata = dict(metadata or {"format": "pt"})

    def add(self, key: str, tensor: torch.Tensor) -> None:
        if key in self._entries:
            raise ValueError(f"tensor {key!r} added twice")
        t = tensor.detach().to("cpu").contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""
        self._fh.write(memoryview(data))
        size = t.numel() * t.element_size()
        self._entries[key] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape),
                              "data_offsets": [self._offset, self._offset + size]}
        self._offset += size

    def close(self) -> None:
        self._fh.close()
        header = json.dumps({"__metadata__": self.metadata, **self._entries}, separators=(",", ":")).encode()
        header += b" " * (-len(header) % 8)  # the format aligns the data to 8 bytes
        with open(self.path, "wb") as out, open(self._scratch, "rb") as data:
            out.write(len(header).to_bytes(8, "little"))
            out.write(header)
            shutil.copyfileobj(data, out, 16 << 20)
        self._scratch.unlink()

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._fh.close()
            self._scratch.unlink(missing_ok=True)
