"""Reading and writing JRRELP runs, ConvE runs and link-prediction triples; the only file I/O of this subpackage.

Run folders are written through :func:`knotwork._io.atomic_dir`: assembled under a temporary name, marked as a
knotwork output and renamed into place, so a killed run leaves nothing half-written and ``force`` replaces only a
previous knotwork output.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from knotwork._errors import JrrelpError
from knotwork._io import PathLike, atomic_dir, umask_mode

SPLITS = ("train", "valid", "test")


def _write_json(path: Path, obj: Any, *, indent: int | None = 2) -> None:
    path.write_text(json.dumps(obj, indent=indent), encoding="utf-8")


def _write_weights(model: Any, path: Path) -> None:
    """safetensors ``save_model`` (it handles the shared R / classifier tensors), with the umask's permissions."""
    from safetensors.torch import save_model

    save_model(model, str(path))
    path.chmod(umask_mode(0o666))  # safetensors creates the file 0600


def save_run(
    result: Any,
    run_dir: str | Path,
    *,
    metrics: Mapping[str, Any] | None = None,
    force: bool = False,
    inputs: Iterable[PathLike] = (),
) -> Path:
    """Save a :class:`~knotwork.relations.jrrelp.train.TrainResult`: weights as safetensors, the rest as JSON.

    The folder holds ``model.safetensors``, ``config.json`` (the config, vocabulary, version, commit),
    ``kg.json``, ``history.json`` and ``metrics.json``; it appears complete or not at all.

    Raises
    ------
    knotwork._errors.OutputError
        When ``run_dir`` exists (without ``force``, or when it is not a knotwork output), or is an input.
    """
    from knotwork.relations.jrrelp.features import PALSTMFeaturizer

    extra: dict[str, Any] = {"version": result.version, "commit": result.commit, "best_epoch": result.best_epoch}
    if isinstance(result.featurizer, PALSTMFeaturizer):
        extra["vocab"] = list(result.featurizer.vocab.words)
    with atomic_dir(run_dir, inputs=inputs, force=force, report={"kind": "jrrelp-run", **dict(metrics or {})}) as tmp:
        _write_weights(result.model, tmp / "model.safetensors")
        _write_json(tmp / "config.json", {"config": result.config.to_dict(), **extra})
        _write_json(tmp / "kg.json", result.kg.to_dict(), indent=None)
        _write_json(tmp / "history.json", result.history)
        _write_json(tmp / "metrics.json", dict(metrics or {}))
    return Path(run_dir)


def _require(run_dir: Path, names: Sequence[str]) -> None:
    for name in names:
        if not (run_dir / name).is_file():
            raise JrrelpError(f"{run_dir / name} is missing; is {run_dir} a run folder?")


def load_run(run_dir: str | Path, *, backbone: Any = None, tokenizer: Any = None) -> tuple[Any, Any, Any, Any]:
    """Rebuild ``(model, featurizer, kg, config)`` from :func:`save_run` output.

    Transformer runs need the same ``backbone`` architecture and ``tokenizer`` they were trained with; the
    saved weights replace the backbone's.

    Raises
    ------
    knotwork._errors.JrrelpError
        Naming the missing file.
    """
    from safetensors.torch import load_model

    from knotwork.relations.jrrelp.config import TrainConfig
    from knotwork.relations.jrrelp.features import Vocab
    from knotwork.relations.jrrelp.kg import RelationKG
    from knotwork.relations.jrrelp.train import assemble_model, palstm_parts, transformer_parts

    run_dir = Path(run_dir)
    _require(run_dir, ("config.json", "kg.json", "model.safetensors"))
    meta = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    # Runs saved before `relation_coupling` existed had R as the classifier weight, with a bias.
    config = TrainConfig.from_dict({"relation_coupling": "joint", **meta["config"]})
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
    """Read ``head<TAB>relation<TAB>tail`` lines (ConvE's WN18RR/FB15k-237 format); blank lines are skipped.

    Raises
    ------
    knotwork._errors.JrrelpError
        Naming the file and line of a triple without exactly three columns, or with an empty one.
    """
    path = Path(path)
    triples = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) != 3:
                raise JrrelpError(
                    f"{path}:{lineno}: expected 'head<TAB>relation<TAB>tail' (3 columns), got {len(parts)} "
                    f"column{'s' if len(parts) != 1 else ''}: {line[:80]!r}"
                )
            if not all(parts):
                empty = ("head", "relation", "tail")[parts.index("")]
                raise JrrelpError(f"{path}:{lineno}: the {empty} column is empty: {line[:80]!r}")
            triples.append((parts[0], parts[1], parts[2]))
    return triples


def triple_files(folder: str | Path) -> dict[str, Path]:
    """``{split: folder/<split>.txt or .tsv}`` for train, valid and test, refused naming the first missing file.

    Raises
    ------
    knotwork._errors.JrrelpError
        When ``folder`` is not a folder, a split is missing, or a split is there both as .txt and as .tsv.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise JrrelpError(f"{folder}: no such data folder (expected train, valid and test .txt or .tsv inside)")
    files = {}
    for split in SPLITS:
        found = [folder / f"{split}{ext}" for ext in (".txt", ".tsv") if (folder / f"{split}{ext}").is_file()]
        if not found:
            raise JrrelpError(
                f"{folder / split}.txt: missing {split} split (expected {split}.txt or {split}.tsv, "
                "head<TAB>relation<TAB>tail lines)"
            )
        if len(found) > 1:
            raise JrrelpError(f"{found[1]}: {split} split given twice, as {found[0].name} and {found[1].name}; keep one")
        files[split] = found[0]
    return files


def save_conve_run(
    model: Any,
    triples: Any,
    config: Any,
    run_dir: str | Path,
    *,
    history: Sequence[Mapping[str, Any]] = (),
    metrics: Mapping[str, Any] | None = None,
    force: bool = False,
    inputs: Iterable[PathLike] = (),
) -> Path:
    """Save a ConvE model trained by :func:`~knotwork.relations.jrrelp.linkpred.train_conve`.

    The folder holds ``model.safetensors``, ``config.json`` (the :class:`ConvEConfig` and the sizes),
    ``entities.json`` and ``relations.json`` (names in id order), ``history.json`` and ``metrics.json``.
    """
    from knotwork import __version__

    meta = {"config": config.to_dict(), "n_entities": triples.n_entities, "n_relations": triples.n_relations,
            "version": __version__}
    with atomic_dir(run_dir, inputs=inputs, force=force, report={"kind": "conve-run", **dict(metrics or {})}) as tmp:
        _write_weights(model, tmp / "model.safetensors")
        _write_json(tmp / "config.json", meta)
        _write_json(tmp / "entities.json", list(triples.entities), indent=None)
        _write_json(tmp / "relations.json", list(triples.relations), indent=None)
        _write_json(tmp / "history.json", list(history))
        _write_json(tmp / "metrics.json", dict(metrics or {}))
    return Path(run_dir)


def load_conve_run(run_dir: str | Path) -> tuple[Any, tuple[str, ...], tuple[str, ...], Any]:
    """Rebuild ``(model, entities, relations, config)`` from :func:`save_conve_run` output (model in eval mode)."""
    from safetensors.torch import load_model

    from knotwork.relations.jrrelp.linkpred import ConvE, ConvEConfig

    run_dir = Path(run_dir)
    _require(run_dir, ("config.json", "entities.json", "relations.json", "model.safetensors"))
    meta = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    config = ConvEConfig(**meta["config"])
    entities = tuple(json.loads((run_dir / "entities.json").read_text(encoding="utf-8")))
    relations = tuple(json.loads((run_dir / "relations.json").read_text(encoding="utf-8")))
    model = ConvE.from_config(len(entities), 2 * len(relations), config)
    load_model(model, str(run_dir / "model.safetensors"))
    model.eval()
    return model, entities, relations, config
