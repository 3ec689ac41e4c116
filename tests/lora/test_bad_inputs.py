"""Bad input to `knotwork lora train|eval` and `knotwork demo`: refused before any work, with one line naming the
item, exit code 2, inputs untouched and nothing written (tests/cli_contract.refused)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from tests.cli_contract import refused
from tests.lora.conftest import make_tiny_bert


def _task(root: Path, labels=("negative", "positive"), rows=None, splits=("train", "val", "test")) -> Path:
    rows = rows if rows is not None else [{"text": f"{w} film {i}", "label": y}
                                          for i in range(4) for w, y in (("awful", 0), ("great", 1))]
    root.mkdir(parents=True)
    (root / "labels.json").write_text(json.dumps(list(labels)))
    for split in splits:
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _adapter(root: Path, module: str = "encoder.layer.0.attention.self.query", d: int = 32) -> Path:
    from knotwork.lora.io import save_peft_adapter
    from knotwork.lora.model import LoraSpec

    spec = LoraSpec(r=2, alpha=2.0, target_modules=(module.rsplit(".", 1)[-1],))
    lora = {f"{module}.lora_A.weight": torch.ones(2, d), f"{module}.lora_B.weight": torch.ones(d, 2)}
    return save_peft_adapter(lora, spec, root)


@dataclass
class Case:
    args: list
    match: str
    inputs: list = field(default_factory=list)
    out: Path | None = None
    usage: bool = False


def _train(tmp, *extra, task=None, out=None):
    task = task or _task(tmp / "data" / "s")
    out = out or tmp / "adapters"
    return Case(["lora", "train", str(task), "--out", str(out), "--batch-size", "4", *extra], "", [task], out)


def _with(case: Case, match: str, **kw) -> Case:
    case.match = match
    for k, v in kw.items():
        setattr(case, k, v)
    return case


def _rows_task(tmp, text: str) -> Path:
    root = _task(tmp / "data" / "s")
    (root / "train.jsonl").write_text(text)
    return root


def c_missing_task_folder(tmp):
    return _with(_train(tmp, task=tmp / "absent"), r"absent: task folder not found", inputs=[])


def c_no_train_split(tmp):
    return _with(_train(tmp, task=_task(tmp / "data" / "s", splits=("val", "test"))),
                 r"s: task folder lacks split file\(s\): train.jsonl")


def c_no_labels_json(tmp):
    root = _task(tmp / "data" / "s")
    (root / "labels.json").unlink()
    return _with(_train(tmp, task=root), r"s: task folder has no labels.json")


def c_labels_json_not_json(tmp):
    root = _task(tmp / "data" / "s")
    (root / "labels.json").write_text("[negative, positive")
    return _with(_train(tmp, task=root), r"labels.json: not a readable JSON list of label names")


def c_one_label(tmp):
    return _with(_train(tmp, task=_task(tmp / "data" / "s", labels=("only",))),
                 r"s/labels.json: a task needs at least 2 labels")


def c_duplicate_label_names(tmp):
    return _with(_train(tmp, task=_task(tmp / "data" / "s", labels=("a", "a"))), r"labels.json: duplicate label names")


# Bad train.jsonl contents: (file text, the one line's pattern, naming the file and line).
TRAIN_FILES = {
    "malformed_jsonl_line": ('{"text": "a", "label": 0}\n{"text": "b", "label": \n', r"s/train.jsonl:2: not valid JSON"),
    "row_without_label": ('{"text": "a"}\n', r"train.jsonl:1: expected an object"),
    "unknown_label_id": ("".join(json.dumps({"text": f"t{i}", "label": y}) + "\n" for i, y in enumerate([0, 1, 7])),
                         r"train.jsonl:3: label 7 is not in labels.json \(ids 0..1\)"),
    "label_name_not_id": ('{"text": "a", "label": "positive"}\n',
                          r"train.jsonl:1: label must be an integer id, got 'positive'"),
    "empty_text": ('{"text": "  ", "label": 0}\n', r"train.jsonl:1: empty or non-string text"),
    "empty_task": ("\n", r"s/train.jsonl: no examples"),
}


def c_not_utf8(tmp):
    root = _task(tmp / "data" / "s")
    (root / "train.jsonl").write_bytes(b'{"text": "caf\xe9", "label": 0}\n')
    return _with(_train(tmp, task=root), r"train.jsonl: not UTF-8 text")


# Impossible training options: (option, value, the one line's pattern); each a case of its own.
TRAIN_OPTIONS = {
    "epochs_zero": ("--epochs", "0", r"--epochs must be an integer >= 1; got 0"),
    "max_steps_negative": ("--max-steps", "-3", r"--max-steps must be an integer >= 0; got -3"),
    "patience_negative": ("--patience", "-1", r"--patience must be an integer >= 0; got -1"),
    "eval_every_negative": ("--eval-every", "-5", r"--eval-every must be an integer >= 0; got -5"),
    "dropout_one": ("--dropout", "1", r"--dropout must be in \[0, 1\); got 1.0"),
    "dropout_negative": ("--dropout", "-0.1", r"--dropout must be in \[0, 1\); got -0.1"),
    "logit_scale_zero": ("--logit-scale", "0", r"--logit-scale must be a finite number > 0; got 0.0"),
    "logit_scale_nan": ("--logit-scale", "nan", r"--logit-scale must be a finite number > 0; got nan"),
    "batch_size_zero": ("--batch-size", "0", r"--batch-size must be an integer >= 1; got 0"),
    "batch_larger_than_train": ("--batch-size", "16", r"s/train.jsonl: 8 examples, fewer than --batch-size 16"),
    "lr_nan": ("--lr", "nan", r"--lr must be a finite number > 0; got nan"),
    "lr_inf": ("--lr", "inf", r"--lr must be a finite number > 0; got inf"),
    "lr_negative": ("--lr", "-0.001", r"--lr must be a finite number > 0; got -0.001"),
    "rank_zero": ("--rank", "0", r"--rank must be an integer >= 1; got 0"),
    "rank_alias_zero": ("--r", "0", r"--rank must be an integer >= 1; got 0"),
    "alpha_zero": ("--alpha", "0", r"--alpha must be a finite number > 0; got 0.0"),
    "max_length_zero": ("--max-length", "0", r"--max-length must be an integer >= 1; got 0"),
}


def c_steps_is_gone(tmp):  # training runs by epochs; --max-steps is the cap
    return _with(_train(tmp, "--steps", "80"), r"No such option: --steps", usage=True)


def c_unknown_baseline(tmp):
    return _with(_train(tmp, "--baseline", "knn"), r"'knn' is not one of 'probe', 'majority', 'none'", usage=True)


def c_unknown_device(tmp):
    return _with(_train(tmp, "--device", "tpu"), r"'tpu' is not one of 'cpu', 'cuda', 'mps'", usage=True)


def c_device_cuda_without_a_gpu(tmp):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    return _with(_train(tmp, "--device", "cuda"), r"--device cuda: no CUDA device is available on this machine")


def c_no_val_and_too_few_examples_for_the_batch(tmp):
    task = _task(tmp / "data" / "s", splits=("train", "test"))
    return _with(_train(tmp, "--batch-size", "8", task=task),
                 r"s/train.jsonl: 7 examples after holding 10% out for validation, fewer than --batch-size 8")


def c_out_is_the_task_folder(tmp):
    task = _task(tmp / "data" / "s")
    return _with(_train(tmp, task=task, out=task), r"s/s: the output lies inside the input folder .*data/s")


def c_out_holds_the_task_folder(tmp):
    task = _task(tmp / "data" / "s")
    return _with(_train(tmp, task=task, out=tmp / "data"), r"data/s: the output is an input")


def c_out_task_folder_not_knotwork_with_force(tmp):
    mine = tmp / "adapters" / "s"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    case = _train(tmp, "--force")
    return _with(case, r"adapters/s: exists and is not a knotwork output", inputs=[*case.inputs, mine])


def c_out_is_a_file(tmp):
    (tmp / "adapters").write_text("a file")
    return _with(_train(tmp), r"adapters: exists as a file")


def c_two_tasks_same_name(tmp):
    a, b = _task(tmp / "a" / "s"), _task(tmp / "b" / "s")
    case = _train(tmp, task=a)
    case.args.insert(3, str(b))
    return _with(case, r"b/s: a second task named 's'", inputs=[a, b])


def _eval(tmp, *extra, adapter=None):
    task = _task(tmp / "data" / "s")
    args = ["lora", "eval", str(task), *(["--adapter", str(adapter)] if adapter else []), *extra]
    return Case(args, "", [task, *([adapter] if adapter and adapter.exists() else [])])


def c_eval_missing_adapter(tmp):
    return _with(_eval(tmp, adapter=tmp / "nope"), r"nope: adapter directory not found")


def c_eval_corrupt_adapter(tmp):
    ad = _adapter(tmp / "ad")
    (ad / "adapter_model.safetensors").write_bytes(b"\x00garbage")
    return _with(_eval(tmp, adapter=ad), r"ad/adapter_model.safetensors")


def c_eval_adapter_without_config(tmp):
    ad = _adapter(tmp / "ad")
    (ad / "adapter_config.json").unlink()
    return _with(_eval(tmp, adapter=ad), r"ad: missing adapter_config.json")


def c_eval_adapter_with_nan(tmp):
    from safetensors.torch import save_file

    ad = _adapter(tmp / "ad")
    m = "base_model.model.encoder.layer.0.attention.self.query"
    save_file({f"{m}.lora_A.weight": torch.full((2, 32), float("nan")), f"{m}.lora_B.weight": torch.ones(32, 2)},
              str(ad / "adapter_model.safetensors"))
    return _with(_eval(tmp, adapter=ad), r"adapter_model.safetensors: module .*query.*non-finite")


def c_eval_unknown_split(tmp):
    return _with(_eval(tmp, "--split", "tset"), r"'tset' is not one of 'train', 'val', 'test'", usage=True)


def c_eval_missing_split_file(tmp):
    task = _task(tmp / "data" / "s", splits=("train",))
    return Case(["lora", "eval", str(task)], r"s: task folder lacks split file\(s\): test.jsonl", [task])


def c_eval_negative_limit(tmp):
    return _with(_eval(tmp, "--limit", "-1"), r"--limit must be an integer >= 0; got -1")


def c_eval_json_over_foreign_file_with_force(tmp):
    (tmp / "r.json").write_text('{"mine": 1}')
    case = _eval(tmp, "--json", str(tmp / "r.json"), "--force")
    return _with(case, r"r.json: exists and is not a knotwork output", out=tmp / "r.json")


def c_eval_json_inside_task_folder(tmp):
    case = _eval(tmp)
    target = case.inputs[0] / "scores.json"
    case.args += ["--json", str(target)]
    return _with(case, r"scores.json: the output lies inside the input folder", out=target)


def c_demo_out_dot_force(tmp):
    (tmp / "precious.txt").write_text("do not delete")
    return Case(["demo", "--out", ".", "--force"], r"\.: is the current folder", [tmp / "precious.txt"], out=tmp)


def c_demo_out_parent_of_cwd(tmp):
    (tmp / "precious.txt").write_text("do not delete")
    # inputs, not out: the folder above tmp is shared with other test sessions, its listing may change meanwhile
    return Case(["demo", "--out", "..", "--force"], r"\.\.: is the current folder or holds it", [tmp])


def c_demo_out_foreign_folder_force(tmp):
    mine = tmp / "work"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    return Case(["demo", "--out", str(mine), "--force"], r"work: exists and is not a knotwork output", [mine],
                out=mine)


def c_demo_steps_zero(tmp):
    return Case(["demo", "--out", str(tmp / "d"), "--steps", "0"], r"--steps must be an integer >= 1; got 0",
                out=tmp / "d")


def c_demo_out_is_a_file(tmp):
    (tmp / "d").write_text("x")
    return Case(["demo", "--out", str(tmp / "d")], r"d: exists as a file", out=tmp / "d")


# ---- knotwork lora search (issue 15): refused before any adapter is read or any model loaded

def _search(tmp, *extra, names=("s", "q"), adapters=None, tasks=None, out=None):
    tasks = tasks if tasks is not None else [_task(tmp / "data" / n) for n in names]
    adapters = adapters if adapters is not None else [_adapter(tmp / "ad" / n) for n in names]
    out = out or tmp / "merged"
    args = ["lora", "search", *map(str, adapters), *[a for t in tasks for a in ("--tasks", str(t))], "--out", str(out),
            *extra]
    return Case(args, "", [*tasks, *[a for a in adapters if a.exists()]], out)


# (extra options, the one line's pattern); each a case of its own.
SEARCH_OPTIONS = {
    "search_scale_grid_not_a_number": (("--scale-grid", "0.2,x"), r"--scale-grid: item 2 \('x'\) is not a number"),
    "search_scale_grid_nan": (("--scale-grid", "nan"), r"--scale-grid: item 1 must be a finite number; got nan"),
    "search_scale_grid_empty": (("--scale-grid", ""), r"--scale-grid: the grid is empty"),
    "search_topk_grid_zero": (("--topk-grid", "50,0"), r"--topk-grid: item 2 must be a percentage in \(0, 100\]; got 0"),
    "search_topk_grid_over_100": (("--topk-grid", "150"), r"--topk-grid: item 1 must be a percentage in \(0, 100\]"),
    "search_drop_grid_one": (("--method", "knots-dare-ties", "--drop-grid", "0.5,1"),
                             r"--drop-grid: item 2 must be a probability in \[0, 1\); got 1.0"),
    "search_grid_the_method_does_not_search": (("--method", "ta", "--topk-grid", "20"),
                                               r"--topk-grid: --method ta does not search topk \(it searches scale\)"),
    "search_drop_grid_for_ties": (("--drop-grid", "0.5"), r"--drop-grid: --method knots-ties does not search drop_rate"),
    "search_ties_without_rank": (("--method", "ties"), r"--method ties gives a full-rank update.*--rank K"),
    "search_rank_zero": (("--rank", "0"), r"--rank must be an integer >= 1; got 0"),
    "search_negative_limit": (("--limit", "-1"), r"--limit must be an integer >= 0; got -1"),
    "search_max_length_zero": (("--max-length", "0"), r"--max-length must be an integer >= 1; got 0"),
}


def c_search_unknown_method(tmp):
    return _with(_search(tmp, "--method", "knots"), r"'knots' is not one of", usage=True)


def c_search_unknown_criterion(tmp):
    return _with(_search(tmp, "--criterion", "best"), r"'best' is not one of 'pertask', 'joint'", usage=True)


def c_search_more_adapters_than_tasks(tmp):
    case = _search(tmp, tasks=[_task(tmp / "data" / "s")])
    return _with(case, r"2 adapters for 1 task folders: adapters and --tasks are matched by order")


def c_search_adapters_in_another_order(tmp):
    tasks = [_task(tmp / "data" / n) for n in ("s", "q")]
    return _with(_search(tmp, tasks=tasks, adapters=[_adapter(tmp / "ad" / n) for n in ("q", "s")]),
                 r"ad/q: adapter 1 is named like task 2 'q'; adapters and --tasks are matched by order")


def c_search_task_without_val_split(tmp):
    tasks = [_task(tmp / "data" / "s", splits=("train", "test")), _task(tmp / "data" / "q")]
    return _with(_search(tmp, tasks=tasks), r"data/s: task folder lacks split file\(s\): val.jsonl")


def c_search_missing_adapter(tmp):
    return _with(_search(tmp, adapters=[_adapter(tmp / "ad" / "s"), tmp / "nope"]), r"nope: adapter directory not found")


def c_search_out_is_an_adapter(tmp):
    ad = _adapter(tmp / "ad" / "q")
    return _with(_search(tmp, adapters=[_adapter(tmp / "ad" / "s"), ad], out=ad), r"ad/q: the output is an input")


def c_search_out_holds_a_task_folder(tmp):
    return _with(_search(tmp, out=tmp / "data"), r"data: the output contains an input \(.*data/s\)")


def c_search_json_inside_out(tmp):
    case = _search(tmp, "--json", str(tmp / "merged" / "s.json"))
    return _with(case, r"s.json: --json may not be written inside --out")

CASES = {name[2:]: fn for name, fn in sorted(globals().items()) if name.startswith("c_")}
CASES.update({name: (lambda tmp, o=o, v=v, m=m: _with(_train(tmp, o, v), m)) for name, (o, v, m) in TRAIN_OPTIONS.items()})
CASES.update({name: (lambda tmp, t=t, m=m: _with(_train(tmp, task=_rows_task(tmp, t)), m))
              for name, (t, m) in TRAIN_FILES.items()})
CASES.update({name: (lambda tmp, o=o, m=m: _with(_search(tmp, *o), m)) for name, (o, m) in SEARCH_OPTIONS.items()})


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the demo cases resolve "." and ".." against the current folder
    case = CASES[name](tmp_path)
    refused(case.args, match=case.match, inputs=case.inputs, out=case.out, usage=case.usage)


def test_enough_cases():
    assert len(CASES) >= 20


def test_eval_adapter_that_does_not_fit_the_model(tmp_path, monkeypatch, minilm_tokenizer):
    import knotwork.lora.model as model_mod

    monkeypatch.setattr(model_mod, "load_base_encoder", lambda: (make_tiny_bert(), minilm_tokenizer, "tiny"))
    ad = _adapter(tmp_path / "ad", module="encoder.layer.9.attention.self.query")  # the tiny BERT has 2 layers
    case = _eval(tmp_path, adapter=ad)
    refused(case.args, match=r"ad: does not fit the MiniLM encoder .*layer.9.*no such module", inputs=case.inputs)


def test_search_adapter_that_does_not_fit_the_model(tmp_path, monkeypatch, minilm_tokenizer):
    import knotwork.lora.model as model_mod

    monkeypatch.setattr(model_mod, "load_base_encoder", lambda: (make_tiny_bert(), minilm_tokenizer, "tiny"))
    module = "encoder.layer.9.attention.self.query"  # the tiny BERT has 2 layers
    case = _search(tmp_path, adapters=[_adapter(tmp_path / "ad" / n, module=module) for n in ("s", "q")])
    refused(case.args, match=r"ad/s: does not fit the MiniLM encoder .*layer.9.*no such module", inputs=case.inputs,
            out=case.out)
