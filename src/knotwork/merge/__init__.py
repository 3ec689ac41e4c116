"""knotwork.merge: merge LoRA adapters of one base model with TA / TIES / DARE, directly or after KnOTS alignment."""

from knotwork.merge.adapters import (
    LoraAdapter,
    LoraModule,
    check_compatible,
    load_adapter,
    write_adapter,
    write_dense_model,
)
from knotwork.merge.align import Alignment, dense_knots_align, knots_align
from knotwork.merge.api import MergeResult, adapter_factors, merge_adapters, merge_modules
from knotwork.merge.config import MergeConfig
from knotwork.merge.errors import AdapterError
from knotwork.merge.registry import METHODS, available_methods, get_method, knots
from knotwork.merge.save import save_merged_adapter

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
    "write_dense_model",
]
