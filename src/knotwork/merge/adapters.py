"""Read PEFT LoRA adapters (no `peft` needed) and write merged results as PEFT adapters (dense merged models are
written by :mod:`knotwork.merge.model_io`).

Only this module and the CLI touch files. An adapter becomes a :class:`LoraAdapter`: per target module the factors
``A`` (r, d_in) and ``B`` (d_out, r) with PEFT's per-module scaling resolved from ``r``, ``lora_alpha``,
``use_rslora``, ``rank_pattern`` and ``alpha_pattern``. Updates are kept in the layer's (d_out, d_in) orientation,
``delta = scaling * B @ A``; ``fan_in_fan_out`` only matters when the update is added to a stored base weight.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from knotwork._errors import check_finite
from knotwork._io import atomic_dir, sha256_file
from knotwork.merge.config import is_finite_number
from knotwork.merge.errors import AdapterError

CONFIG_NAME = "adapter_config.json"
SAFETENSORS_NAME = "adapter_model.safetensors"
BIN_NAME = "adapter_model.bin"
_KEY_RE = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])(?:\.[^.]+)?\.weight$")
_PREFIX = "base_model.model."
# Keys of features this reader does not turn into a plain scaling * B @ A update: refuse them rather than drop them.
_UNSUPPORTED = {
    "lora_embedding_A": "embedding LoRA",
    "lora_embedding_B": "embedding LoRA",
    "lora_magnitude_vector": "DoRA (use_dora)",
    "modules_to_save": "modules_to_save",
    "lora_B.bias": "lora_bias",
}


@dataclass(frozen=True)
class _Factors:
    """Where one module's factors live: a safetensors file read on demand, or tensors already in memory.

    Picklable (a path and two keys), so Dask workers read the factors they merge themselves.
    """

    path: str
    key_A: str
    key_B: str
    tensors: tuple[torch.Tensor, torch.Tensor] | None = None  # (A, B), for .bin adapters read whole

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tensors is not None:
            return self.tensors
        from safetensors import safe_open

        with safe_open(self.path, framework="pt") as fh:
            return fh.get_tensor(self.key_A), fh.get_tensor(self.key_B)


@dataclass(frozen=True)
class LoraModule:
    """One adapted linear module: ``delta = scaling * B @ A`` of shape (d_out, d_in).

    The factors are read from the adapter file when asked for, so memory holds the modules being merged, not the
    whole adapter.
    """

    shape: tuple[int, int]  # (d_out, d_in)
    rank: int
    scaling: float
    factors: _Factors

    @property
    def A(self) -> torch.Tensor:  # (r, d_in)
        return self.factors()[0]

    @property
    def B(self) -> torch.Tensor:  # (d_out, r)
        return self.factors()[1]

    def delta(self) -> torch.Tensor:
        """The dense update in float32 (PEFT also upcasts half precision on CPU)."""
        A, B = self.factors()
        return self.scaling * (B.float() @ A.float())

    def scaled_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scaling * B, A)`` in float32, the form the merge consumes (the KnOTS alignment upcasts per module)."""
        A, B = self.factors()
        return self.scaling * B.float(), A.float()


@dataclass(frozen=True)
class LoraAdapter:
    """A PEFT LoRA adapter: its config and its adapted modules, sorted by name (factors read on demand)."""

    config: Mapping[str, Any]
    modules: Mapping[str, LoraModule]
    source: str = ""
    sha256: str = ""
    dtype: torch.dtype = torch.float32

    @property
    def base_model(self) -> str | None:
        return self.config.get("base_model_name_or_path")

    @property
    def fan_in_fan_out(self) -> bool:
        return bool(self.config.get("fan_in_fan_out", False))

    def deltas(self) -> dict[str, torch.Tensor]:
        """Dense float32 update per module, (d_out, d_in), scaling folded in."""
        return {name: mod.delta() for name, mod in self.modules.items()}


def _pattern_value(patterns: Mapping[str, Any], module: str, default: Any) -> Any:
    # PEFT's rule (peft.utils.other.get_pattern_key): the first key whose regex matches the end of the module name.
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


class _TensorFile:
    """A weights file's tensors: a safetensors file is read one tensor at a time; a .bin file is read whole."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.eager: dict[str, torch.Tensor] | None = None
        try:
            if path.name.endswith(".safetensors"):
                from safetensors import safe_open

                with safe_open(str(path), framework="pt") as fh:
                    self.keys = list(fh.keys())
                    self.shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in self.keys}
                return
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError:
            # torch's message here is a page of advice, including turning weights_only off: never do that for a file
            # from elsewhere, since unpickling runs arbitrary code.
            raise AdapterError(
                f"{path}: holds pickled Python objects besides tensors, so it cannot be loaded as weights only; "
                "knotwork does not unpickle such files (save the adapter as safetensors)"
            ) from None
        except Exception as err:  # corrupt or truncated files raise many different types
            raise AdapterError(f"{path}: cannot read adapter weights ({_first_line(err)})") from err
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise AdapterError(f"{path}: expected a state dict of tensors")
        self.eager = dict(state)
        self.keys = list(self.eager)
        self.shapes = {k: tuple(v.shape) for k, v in self.eager.items()}

    def get(self, key: str) -> torch.Tensor:
        if self.eager is not None:
            return self.eager[key]
        from safetensors import safe_open

        try:
            with safe_open(str(self.path), framework="pt") as fh:
                return fh.get_tensor(key)
        except Exception as err:  # a file truncated after its header
            raise AdapterError(f"{self.path}: cannot read tensor {key!r} ({_first_line(err)})") from None

    def factors(self, key_A: str, key_B: str) -> _Factors:
        if self.eager is not None:
            return _Factors(str(self.path), key_A, key_B, (self.eager[key_A], self.eager[key_B]))
        return _Factors(str(self.path), key_A, key_B)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


# field -> (is it valid, what it must be), for the adapter_config.json fields that decide the update
_CONFIG_FIELDS = {
    "r": (_positive_int, "a positive integer"),
    "lora_alpha": (is_finite_number, "a finite number"),
    "use_rslora": (lambda v: isinstance(v, bool), "true or false"),
    "fan_in_fan_out": (lambda v: isinstance(v, bool), "true or false"),
    "rank_pattern": (lambda v: v is None or isinstance(v, dict), "an object (module pattern -> rank)"),
    "alpha_pattern": (lambda v: v is None or isinstance(v, dict), "an object (module pattern -> alpha)"),
}


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _check_config(cfg_path: Path, config: Mapping[str, Any]) -> None:
    """Refuse a config field that is present but of the wrong type or out of range, naming file and field."""

    def refuse(field: str, expected: str, value: Any) -> None:
        raise AdapterError(f"{cfg_path}: field {field!r} must be {expected}; got {_short(value)}")

    for field, (ok, expected) in _CONFIG_FIELDS.items():
        if field in config and not ok(config[field]):
            refuse(field, expected, config[field])
    patterns = (("rank_pattern", _positive_int, "a positive integer"), ("alpha_pattern", is_finite_number, "a finite number"))
    for field, ok, expected in patterns:
        for key, value in (config.get(field) or {}).items():
            if not ok(value):
                refuse(f"{field}.{key}", expected, value)


def load_adapter(path: str | os.PathLike[str]) -> LoraAdapter:
    """Read a PEFT LoRA adapter directory.

    Reads ``adapter_config.json`` and ``adapter_model.safetensors`` (or ``adapter_model.bin`` through
    ``torch.load(weights_only=True)``), checks every tensor, and resolves each module's scaling
    (``lora_alpha / r``, or ``lora_alpha / sqrt(r)`` with ``use_rslora``; ``rank_pattern`` and ``alpha_pattern``
    are honoured with PEFT's matching rule).

    Parameters
    ----------
    path : path-like
        The adapter directory.

    Returns
    -------
    LoraAdapter

    Raises
    ------
    AdapterError
        Missing or corrupt files, a non-LoRA config, an unsupported feature (DoRA, embedding LoRA, lora_bias,
        modules_to_save), a rank that disagrees with the config, or non-finite weights; the message names the file
        and the module.
    """
    root = Path(path)
    if not root.is_dir():
        raise AdapterError(f"{root}: adapter directory not found")
    cfg_path = root / CONFIG_NAME
    if not cfg_path.is_file():
        raise AdapterError(f"{root}: missing {CONFIG_NAME}")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise AdapterError(f"{cfg_path}: malformed JSON ({err})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise AdapterError(f"{cfg_path}: cannot read the config ({_first_line(err)})") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{cfg_path}: expected a JSON object")
    _check_config(cfg_path, config)
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise AdapterError(f"{cfg_path}: peft_type is {peft_type!r}; only LORA adapters can be merged")
    if config.get("use_dora"):
        raise AdapterError(f"{cfg_path}: use_dora is set; DoRA updates are not scaling * B @ A and are not supported")

    weights = root / SAFETENSORS_NAME
    if not weights.is_file():
        weights = root / BIN_NAME
    if not weights.is_file():
        raise AdapterError(f"{root}: missing {SAFETENSORS_NAME} (or {BIN_NAME})")
    state = _TensorFile(weights)

    keys: dict[str, dict[str, str]] = {}
    dtypes = set()
    for key in state.keys:
        for marker, feature in _UNSUPPORTED.items():
            if marker in key:
                raise AdapterError(f"{weights}: tensor {key!r} belongs to {feature}, which knotwork cannot merge")
        match = _KEY_RE.match(key)
        if match is None:
            raise AdapterError(f"{weights}: unexpected tensor {key!r} (expected '<module>.lora_A.weight' / 'lora_B')")
        module = match["module"].removeprefix(_PREFIX)
        if len(state.shapes[key]) != 2:
            raise AdapterError(
                f"{weights}: module {module!r}: only Linear LoRA is supported, got a {len(state.shapes[key])}-D factor"
            )
        keys.setdefault(module, {})[match["which"]] = key
    if not keys:
        raise AdapterError(f"{weights}: no LoRA tensors found")

    r_default = int(config.get("r", 8))
    alpha_default = float(config.get("lora_alpha", r_default))
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    rslora = bool(config.get("use_rslora", False))
    modules: dict[str, LoraModule] = {}
    for name in sorted(keys):
        pair = keys[name]
        if set(pair) != {"A", "B"}:
            missing = "lora_B" if "A" in pair else "lora_A"
            raise AdapterError(f"{weights}: module {name!r} has no {missing} tensor")
        shape_A, shape_B = state.shapes[pair["A"]], state.shapes[pair["B"]]
        if shape_A[0] != shape_B[1]:
            raise AdapterError(f"{weights}: module {name!r}: lora_A is {shape_A} but lora_B is {shape_B}")
        r = int(_pattern_value(rank_pattern, name, r_default))
        if r != shape_A[0]:
            raise AdapterError(f"{weights}: module {name!r}: config says r={r} but lora_A has rank {shape_A[0]}")
        # Every tensor is read once here, one at a time, so bad weights are refused before any merge work.
        for which in ("A", "B"):
            tensor = state.get(pair[which])
            check_finite(tensor, f"{weights}: module {name!r}: lora_{which}", error=AdapterError)
            dtypes.add(tensor.dtype)
        alpha = float(_pattern_value(alpha_pattern, name, alpha_default))
        scaling = alpha / math.sqrt(r) if rslora else alpha / r
        modules[name] = LoraModule(shape=(shape_B[0], shape_A[1]), rank=r, scaling=scaling,
                                   factors=state.factors(pair["A"], pair["B"]))
    dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32
    return LoraAdapter(config=config, modules=modules, source=str(root), sha256=sha256_file(weights), dtype=dtype)


def check_compatible(adapters: Iterable[LoraAdapter]) -> None:
    """Refuse adapters that do not share a base model, a module set, and module shapes.

    Raises
    ------
    AdapterError
        Names the two adapters and the first module (or base model) where they differ.
    """
    adapters = list(adapters)
    if not adapters:
        raise AdapterError("no adapters given")
    ref = adapters[0]
    for other in adapters[1:]:
        if ref.base_model and other.base_model and ref.base_model != other.base_model:
            raise AdapterError(
                f"adapters have different base models: {ref.source} is for {ref.base_model!r}, "
                f"{other.source} is for {other.base_model!r}"
            )
        if ref.fan_in_fan_out != other.fan_in_fan_out:
            raise AdapterError(f"adapters disagree on fan_in_fan_out: {ref.source} vs {other.source}")
        missing = sorted(set(ref.modules) ^ set(other.modules))
        if missing:
            raise AdapterError(
                f"adapters target different modules: {missing[0]!r} is in only one of {ref.source} and {other.source}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            )
        for name, mod in ref.modules.items():
            if mod.shape != other.modules[name].shape:
                raise AdapterError(
                    f"module {name!r} has shape {mod.shape} in {ref.source} but {other.modules[name].shape} "
                    f"in {other.source}"
                )


# --------------------------------------------------------------------------------------------- writing


def write_adapter(
    out_dir: str | os.PathLike[str],
    factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | Iterable[tuple[str, tuple[torch.Tensor, torch.Tensor]]],
    *,
    base_config: Mapping[str, Any],
    dtype: torch.dtype | None = torch.float32,
    force: bool = False,
    inputs: Iterable[str] = (),
    extra_files: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
) -> Path:
    """Write ``{module: (B, A)}`` (or an iterable of ``(module, (B, A))``) as a PEFT LoRA adapter of scaling 1.

    Every module gets ``r = lora_alpha = its rank`` through ``rank_pattern`` / ``alpha_pattern`` (the most common
    rank is the default), so PEFT's ``alpha / r`` is exactly 1 and ``B @ A`` is the update. Modules are written
    as they come, so an iterable that computes them one at a time never holds the whole adapter.

    The folder is written through :func:`knotwork._io.atomic_dir`: it appears whole or not at all, with the marker
    ``.knotwork.json`` inside; an existing folder is replaced only with ``force`` and only when it is a previous
    knotwork output; ``out_dir`` may not be, contain or lie inside one of ``inputs``. ``extra_files`` (name -> text,
    or a function returning that, called after the last module) are written into it too (the merge report).
    ``dtype=None`` keeps each factor's dtype.

    Raises
    ------
    knotwork._errors.OutputError
        When ``out_dir`` may not be written (see above).
    """
    from knotwork.merge.model_io import SafetensorsWriter

    out_dir = Path(out_dir)
    items = factors.items() if isinstance(factors, Mapping) else factors
    with atomic_dir(out_dir, inputs=inputs, force=force) as tmp:
        ranks: dict[str, int] = {}
        with SafetensorsWriter(tmp / SAFETENSORS_NAME) as writer:
            for name, (B, A) in items:
                ranks[name] = int(A.shape[0])
                writer.add(f"{_PREFIX}{name}.lora_A.weight", A if dtype is None else A.to(dtype))
                writer.add(f"{_PREFIX}{name}.lora_B.weight", B if dtype is None else B.to(dtype))
        values = list(ranks.values())
        r = max(set(values), key=values.count) if values else 1
        pattern = {re.escape(name): k for name, k in ranks.items() if k != r}
        keep = ("task_type", "base_model_name_or_path", "revision", "fan_in_fan_out", "bias", "inference_mode")
        config = {k: base_config[k] for k in keep if k in base_config}
        config.update(
            peft_type="LORA",
            r=r,
            lora_alpha=r,
            use_rslora=False,
            rank_pattern=pattern,
            alpha_pattern=dict(pattern),
            target_modules=sorted(ranks),  # full names: a suffix like "dense" would also match unadapted layers
            lora_dropout=0.0,
            bias=config.get("bias", "none"),
        )
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        files = extra_files() if callable(extra_files) else (extra_files or {})
        for fname, text in files.items():
            (tmp / fname).write_text(text, encoding="utf-8")
    return out_dir
