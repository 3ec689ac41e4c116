"""Train (and cache) the base models of the ZipIt! experiments: one model per task per (split, seed) pair.

Usage: ``python benchmarks/zipit_train.py mnist cifar10 [--cache DIR]`` (resumes: cached checkpoints are
skipped). ``zipit_experiment.py`` calls :func:`train_setting` itself for the models it misses; running this
script first only lets the training of several settings proceed in parallel processes.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zipit_data import (  # noqa: E402
    CACHE,
    SETTINGS,
    build_model,
    ckpt_path,
    class_split,
    class_vectors,
    load_data,
    save_checkpoint,
)

from knotwork.zipit.training import train_on_task  # noqa: E402

log = logging.getLogger("zipit_train")


def train_setting(name: str, cache: Path = CACHE, data: dict | None = None) -> None:
    """Train every base model of setting ``name`` that ``cache`` does not hold yet."""
    setting = SETTINGS[name]
    todo = [(p, w) for p in range(setting.pairs) for w in "AB" if not ckpt_path(setting, p, w, cache).exists()]
    if not todo:
        return
    data = data or load_data(setting)
    vectors = class_vectors(setting, data["names"], cache)
    for pair, which in todo:
        classes, seed = class_split(pair)["AB".index(which)], 2 * pair + "AB".index(which)
        model = build_model(setting, vectors, seed)
        x, y = data["x_train"], data["y_train"]
        if setting.n_train is not None:
            keep = torch.isin(y, torch.tensor(classes)).nonzero().squeeze(1)[: setting.n_train]
            x, y = x[keep], y[keep]
        t0 = time.time()
        train_on_task(model, x, y, classes, epochs=setting.epochs, lr=setting.lr, augment=setting.augment,
                      batch_size=setting.batch_size, seed=seed)
        secs = time.time() - t0
        with torch.no_grad():
            xt, yt = data["x_test"], data["y_test"]
            mask = torch.isin(yt, torch.tensor(classes))
            logits = torch.cat([model(xt[mask][i:i + 1000]) for i in range(0, int(mask.sum()), 1000)])
            acc = (torch.tensor(classes)[logits[:, classes].argmax(1)] == yt[mask]).float().mean().item()
        meta = {"setting": name, "pair": pair, "which": which, "classes": classes, "seed": seed,
                "epochs": setting.epochs, "train_seconds": round(secs, 1), "task_test_acc": round(acc, 4)}
        save_checkpoint(model.state_dict(), ckpt_path(setting, pair, which, cache), meta)
        log.warning("%s pair %d %s: task acc %.4f in %.0fs", name, pair, which, acc, secs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS), metavar="SETTING",
                        help=f"any of {list(SETTINGS)} (default: all)")
    parser.add_argument("--cache", type=Path, default=CACHE, help="folder of the cached base models")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for name in args.settings:
        train_setting(name, args.cache)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    sys.exit(main())
