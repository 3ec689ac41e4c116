"""knotwork.lora: LoRA fine-tuning of MiniLM on text tasks, with per-task and joint (union-of-labels) evaluation.

Importing this package imports torch; the CLI imports it inside its commands only.
"""

from knotwork.lora.baselines import fit_logistic_regression, linear_probe_accuracy, majority_accuracy
from knotwork.lora.evaluate import EvalResult, TaskEvaluator, accuracy, hits_at_k, score_embeddings
from knotwork.lora.io import adapter_deltas, read_peft_adapter, save_peft_adapter, write_peft_files
from knotwork.lora.model import (
    TARGET_MODULES,
    LoRALinear,
    LoraSpec,
    added_deltas,
    embed_texts,
    inject_lora,
    load_base_encoder,
    lora_deltas,
    lora_state_dict,
    tokenize_texts,
)
from knotwork.lora.search import DROP_GRID, SCALE_GRID, TOPK_GRID, SearchResult, coordinate_search
from knotwork.lora.tasks import (
    LABEL_PHRASES,
    JointLabels,
    TextSplit,
    TextTask,
    build_joint_labels,
    label_phrase,
    load_text_task,
    read_label_names,
    task_data_sha256,
)
from knotwork.lora.train import TrainConfig, TrainResult, TrainState, train_adapter

__all__ = [
    "DROP_GRID", "LABEL_PHRASES", "SCALE_GRID", "TARGET_MODULES", "TOPK_GRID", "EvalResult", "JointLabels",
    "LoRALinear", "LoraSpec", "SearchResult", "TaskEvaluator", "TextSplit", "TextTask", "TrainConfig", "TrainResult",
    "TrainState", "accuracy", "adapter_deltas", "added_deltas", "build_joint_labels", "coordinate_search",
    "embed_texts", "fit_logistic_regression", "hits_at_k", "inject_lora", "label_phrase", "linear_probe_accuracy",
    "load_base_encoder", "load_text_task", "lora_deltas", "lora_state_dict", "majority_accuracy", "read_label_names",
    "read_peft_adapter", "save_peft_adapter", "score_embeddings", "task_data_sha256", "tokenize_texts",
    "train_adapter", "write_peft_files",
]
