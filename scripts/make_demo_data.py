"""Build the real-sentence sample that `knotwork demo` ships: `python scripts/make_demo_data.py`.

Reads ../shared/data/text/{mr,subj,trec} (see shared/data/README.md) and writes
src/knotwork/lora/demo_data/<task>/{train,val,test}.jsonl, labels.json and SOURCES.md. Deterministic: the same
source files give the same bytes (tests/lora/test_demo_data.py checks this). Each split is sampled from the
same split of its source, among sentences of at most MAX_WORDS tokens (short sentences are cheap to embed on a
CPU); lines are copied verbatim, in the order of a RandomState(0) permutation of the candidates.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: demo task -> (source folder under shared/data/text, corpus, citation)
TASKS = {
    "sentiment": ("mr", "MR, movie-review sentences (sentence polarity v1.0; shared/data's 80/10/10 split)",
                  "Pang & Lee 2005, Seeing Stars: Exploiting Class Relationships for Sentiment Categorization "
                  "with Respect to Rating Scales, ACL"),
    "subjectivity": ("subj", "SUBJ (subjectivity v1.0; shared/data's 80/10/10 split)",
                     "Pang & Lee 2004, A Sentimental Education: Sentiment Analysis Using Subjectivity "
                     "Summarization Based on Minimum Cuts, ACL"),
    "question": ("trec", "TREC question classification, coarse labels (test is the official TREC-10 test; val "
                 "a fixed 10 % of the official train)",
                 "Li & Roth 2002, Learning Question Classifiers, COLING"),
}
SIZES = {"train": 320, "val": 32, "test": 100}
MAX_WORDS = 20
SOURCE = "harvardnlp/sent-conv-torch@d61ded09c99c0199d8c5bca946cd65864de2b296:data/"


def sample_lines(path: Path, n: int, *, exclude: set[str] = frozenset()) -> list[str]:
    """``n`` lines of a JSONL split, verbatim: short, distinct sentences not in `exclude`, in a seeded order."""
    seen, candidates = set(exclude), []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = json.loads(line)["text"]
        if len(text.split()) <= MAX_WORDS and text not in seen:
            seen.add(text)
            candidates.append(line)
    if len(candidates) < n:
        raise SystemExit(f"{path}: only {len(candidates)} sentences of <= {MAX_WORDS} tokens; need {n}")
    order = np.random.RandomState(0).permutation(len(candidates))[:n]
    return [candidates[i] for i in order]


def sources_page(files: dict[str, int]) -> str:
    rows = "\n".join(f"| {task} | {corpus} | {src} | {cite} |" for task, (src, corpus, cite) in TASKS.items())
    sizes = ", ".join(f"{k} {v}" for k, v in SIZES.items())
    return f"""# The demo's sentences: a small sample of public research corpora

`knotwork demo` trains, merges and scores LoRA adapters on these real labelled sentences. They were copied
verbatim by `scripts/make_demo_data.py` from the project's shared copies of the corpora (shared/data/text/),
which were converted from
{SOURCE}
(MIT; the corpora themselves are the authors' research releases with no explicit licence). Cite the corpora
when you use them:

| task | corpus | shared/data folder | cite |
|---|---|---|---|
{rows}

Per task: {sizes} sentences, each split sampled from the same split of the corpus, among sentences of at
most {MAX_WORDS} whitespace tokens, without repeats and with no train sentence that is also in val or test. Each
file holds one `{{"text": str, "label": int}}` object per line; `labels.json` lists the label names in id order.
The data files take {sum(files.values()) / 1000:.1f} kB ({len(files)} files).
"""


def build(shared: Path, out: Path) -> dict[str, int]:
    """Write every demo data file under `out`; returns ``{relative path: bytes}``."""
    files: dict[str, bytes] = {}
    for task, (src, _, _) in TASKS.items():
        folder = shared / "text" / src
        files[f"{task}/labels.json"] = (folder / "labels.json").read_bytes()
        held: set[str] = set()
        for split in ("test", "val", "train"):  # train last: it may not repeat a val or test sentence
            lines = sample_lines(folder / f"{split}.jsonl", SIZES[split], exclude=held if split == "train" else set())
            held.update(json.loads(line)["text"] for line in lines)
            files[f"{task}/{split}.jsonl"] = ("\n".join(lines) + "\n").encode("utf-8")
    sizes = {name: len(data) for name, data in files.items()}
    files["SOURCES.md"] = sources_page(sizes).encode("utf-8")
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    return {name: len(data) for name, data in files.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data", help="the shared data folder")
    ap.add_argument("--out", type=Path, default=ROOT / "src" / "knotwork" / "lora" / "demo_data")
    args = ap.parse_args(argv)
    sizes = build(args.shared, args.out)
    print(f"wrote {len(sizes)} files, {sum(sizes.values()) / 1000:.1f} kB, to {args.out}")


if __name__ == "__main__":
    main()
