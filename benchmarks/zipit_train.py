"""Train (and cache) the base models of the ZipIt! experiments: one model per task per (split, seed) pair.

Usage: ``python benchmarks/zipit_train.py mnist cifar10`` (resumes: cached checkpoints are skipped).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zipit_data import SETTINGS, build_model, ckpt_path, class_split, class_vectors, load_data, save_atomic  # noqa: E402

from knotwork.zipit.training import train_on_task  # noqa: E402


def train_setting(name: str) -> None:
    setting = SETTINGS[name]
    data = load_data(setting)
    vectors = class_vectors(setting, data["names"])
    for pair in range(setting.pairs):
        task_a, task_b = class_split(pair)
        for which, classes, seed in (("A", task_a, 2 * pair), ("B", task_b, 2 * pair + 1)):
            path = ckpt_path(setting, pair, which)
            if path.exists():
                continue
            model = build_model(setting, vectors, seed)
            x, y = data["x_train"], data["y_train"]
            if setting.n_train is not None:
                keep = torch.isin(y, torch.tensor(classes)).nonzero().squeeze(1)[: setting.n_train]
                x, y = x[keep], y[keep]
            t0 = time.time()
            train_on_task(model, x, y, classes, epochs=setting.epochs, lr=setting.lr, augment=setting.augment,
                          batch_size=setting.batch_size,
                          seed=seed, progress=False)
            secs = time.time() - t0
            with torch.no_grad():
                xt, yt = data["x_test"], data["y_test"]
                mask = torch.isin(yt, torch.tensor(classes))
                logits = torch.cat([model(xt[mask][i:i + 1000]) for i in range(0, int(mask.sum()), 1000)])
                acc = (torch.tensor(classes)[logits[:, classes].argmax(1)] == yt[mask]).float().mean().item()
            meta = {"setting": name, "pair": pair, "which": which, "classes": classes, "seed": seed,
                    "epochs": setting.epochs, "train_seconds": round(secs, 1), "task_test_acc": round(acc, 4)}
            save_atomic(model.state_dict(), path, meta)
            logging.warning("%s pair %d %s: task acc %.4f in %.0fs", name, pair, which, acc, secs)


if __name__ == "__main__":
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    for name in sys.argv[1:] or list(SETTINGS):
        train_setting(name)
