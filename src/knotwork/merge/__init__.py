"""knotwork.merge: merge LoRA adapters of one base model with TA / TIES / DARE, directly or after KnOTS alignment.

The names below are imported on first use (PEP 562), so ``knotwork.merge.registry`` and ``knotwork.merge.errors``
load without torch and the CLI starts instantly.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "LoraAdapter": "adapters",
    "LoraModule": "adapters",
    "check_compatible": "adapters",
    "load_adapter": "adapters",
    "write_adapter": "adapters",
    "write_merged_model": "model_io",
    "BaseModel": "model_io",
    "resolve_model_dir": "model_io",
    "MergeSpec": "spec",
    "run_merge": "save",
    "Alignment": "align",
    "dense_knots_align": "align",
    "knots_align": "align",
    "MergeResult": "api",
    "adapter_factors": "api",
    "merge_adapters": "api",
    "merge_modules": "api",
    "MergeConfig": "config",
    "AdapterError": "errors",
    "METHODS": "registry",
    "available_methods": "registry",
    "get_method": "registry",
    "knots": "registry",
    "save_merged_adapter": "save",
}

__all__ = [
    "METHODS",
    "AdapterError",
    "Alignment",
    "LoraAdapter",
    "LoraModule",
    "MergeConfig",
    "MergeResult",
    "adapter_factors",
    "available_methods",
    "check_compatible",
    "dense_knots_align",
    "get_method",
    "knots",
    "knots_align",
    "load_adapter",
    "merge_adapters",
    "merge_modules",
    "save_merged_adapter",
    "write_adapter",
    "write_merged_model",
    "BaseModel",
    "resolve_model_dir",
    "MergeSpec",
    "run_merge",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from knotwork.merge.adapters import (
        LoraAdapter,
        LoraModule,
        check_compatible,
        load_adapter,
        write_adapter,
    )
    from knotwork.merge.align import Alignment, dense_knots_align, knots_align
    from knotwork.merge.api import MergeResult, adapter_factors, merge_adapters, merge_modules
    from knotwork.merge.config import MergeConfig
    from knotwork.merge.errors import AdapterError
    from knotwork.merge.model_io import BaseModel, resolve_model_dir, write_merged_model
    from knotwork.merge.registry import METHODS, available_methods, get_method, knots
    from knotwork.merge.save import run_merge, save_merged_adapter
    from knotwork.merge.spec import MergeSpec
