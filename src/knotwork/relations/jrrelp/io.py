"""Reading and writing JRRELP runs and link-prediction triples; the only file I/O of this subpackage."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RUN_FILES = ("config.json", "kg.json", "model.safetensors", "history.json", "metrics.json")


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write to a temporary file in the same folder, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_run_dir(run_dir: Path, *, force: bool) -> None:
    """Refuse to write into a run folder that already holds a run, unless ``force``."""
    existing = [name for name in RUN_FILES if (Path(run_dir) / name).exists()]
    if existing and not force:
        raise FileExistsError(f"{run_dir} already holds a run ({', '.join(existing)}); pass --force to overwrite")


def save_run(result: Any, run_dir: str | Path, *, metrics: Mapping[str, Any] | None = None, force: bool = False) -> Path:
    """Save a :class:`~knotwork.relations.jrrelp.train.TrainResult`: weights as safetensors, the rest as JSON."""
    from safetensors.torch import save_model

    from knotwork.relations.jrrelp.features import PALSTMFeaturizer

    run_dir = Path(run_dir)
    check_run_dir(run_dir, force=force)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = result.config.to_dict()
    extra: dict[str, Any] = {"version": result.version, "commit": result.commit, "best_epoch": result.best_epoch}
    if isinstance(result.featurizer, PALSTMFeaturizer):
        extra["vocab"] = list(result.featurizer.vocab.words)
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".model.", suffix=".safetensors")
    os.close(fd)
    try:
        save_model(result.model, tmp)  # handles shared tensors; we then rename atomically
        os.replace(tmp, run_dir / "model.safetensors")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    write_atomic(run_dir / "config.json", json.dumps({"config": config, **extra}, indent=2))
    write_atomic(run_dir / "kg.json", json.dumps(result.kg.to_dict()))
    write_atomic(run_dir / "history.json", json.dumps(result.history, indent=2))
    write_atomic(run_dir / "metrics.json", json.dumps(dict(metrics or {}), indent=2))
    return run_dir


def load_run(run_dir: str | Path, *, backbone: Any = None, tokenizer: Any = None) -> tuple[Any, Any, Any, Any]:
    """Rebuild ``(model, featurizer, kg, config)`` from :func:`save_run` output.

    Transformer runs need the same ``backbone`` architecture and ``tokenizer`` they were trained with; the
    saved weights replace the backbone's.

    Raises
    ------
    FileNotFoundError
        Naming the missing file.
    """
    from safetensors.torch import load_model

    from knotwork.relations.jrrelp.config import TrainConfig
    from knotwork.relations.jrrelp.features import Vocab
    from knotwork.relations.jrrelp.kg import RelationKG
    from knotwork.relations.jrrelp.train import assemble_model, palstm_parts, transformer_parts

    run_dir = Path(run_dir)
    for name in ("config.json", "kg.json", "model.safetensors"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name} is missing; is {run_dir} a run folder?")
    meta = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    config = TrainConfig.from_dict(meta["config"])
    kg = RelationKG.from_dict(json.loads((run_dir / "kg.json").read_text(encoding="utf-8")))
    if config.encoder == "palstm":
        featurizer, encoder, pad_id = palstm_parts(config, Vocab(tuple(meta["vocab"])))
    else:
        featurizer, encoder, pad_id = transformer_parts(config, backbone, tokenizer)
    model = assemble_model(config, kg, featurizer, encoder, pad_id)
    load_model(model, run_dir / "model.safetensors")
    model.eval()
    return model, featurizer, kg, config


def load_triples(path: str | Path) -> list[tuple[str, str, str]]:
    """Read ``head<TAB>relation<TAB>tail`` lines (ConvE's WN18RR/FB15k-237 format).

    Raises
    ------
    ValueError
        Naming the file and line of a malformed triple.
    """
    path = Path(path)
    triples = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) != 3 or not all(parts):
                raise ValueError(f"{path}:{lineno}: expected 'head<TAB>relation<TAB>tail', got {line!r}")
            triples.append((parts[0], parts[1], parts[2]))
    return triples
