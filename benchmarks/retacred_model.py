"""The study's simple relation-extraction model: softmax regression over sparse lexical and entity features.

Feature sets are named so the re-evaluation part of
the study can compare several models of different strength.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from scipy import sparse

from knotwork.relations import RelationExample

FEATURE_SETS = {
    "sentence-bow": ("bow",),
    "between": ("between",),
    "heads": ("heads",),
    "heads+between": ("heads", "between"),
    "full": ("bow", "heads", "between", "order"),
}


def _features(ex: RelationExample, parts: tuple[str, ...]) -> list[str]:
    toks = [t.lower() for t in ex.tokens]
    subj_first = ex.subj_start < ex.obj_start
    lo = (ex.subj_end if subj_first else ex.obj_end) + 1
    hi = ex.obj_start if subj_first else ex.subj_start
    between = toks[lo:hi]
    feats: list[str] = []
    if "bow" in parts:
        feats += [f"w={t}" for t in toks]
    if "heads" in parts:
        s, o = toks[ex.subj_end], toks[ex.obj_end]
        feats += [f"sh={s}", f"oh={o}", f"pair={s}|{o}"]
        # Direction matters in SemEval (relation reads subject -> object): tie head words to the order.
        feats += [f"sh_o={s}|{subj_first}", f"oh_o={o}|{subj_first}"]
    if "between" in parts:
        d = "sf" if subj_first else "of"
        feats += [f"b={t}|{d}" for t in between]
        feats += [f"bb={a}_{b}|{d}" for a, b in zip(between, between[1:], strict=False)]
        feats.append(f"blen={min(len(between), 10)}|{d}")
        if between:
            feats += [f"bfirst={between[0]}|{d}", f"blast={between[-1]}|{d}"]
    if "order" in parts:
        feats.append(f"subj_first={subj_first}")
    return feats


class Featurizer:
    """Binary sparse features over a vocabulary of features seen at least ``min_count`` times in training."""

    def __init__(self, feature_set: str = "full", min_count: int = 2) -> None:
        self.parts = FEATURE_SETS[feature_set]
        self.min_count = min_count

    def fit(self, examples: list[RelationExample]) -> Featurizer:
        counts = Counter(f for ex in examples for f in set(_features(ex, self.parts)))
        self.vocab_ = {f: i for i, f in enumerate(sorted(f for f, c in counts.items() if c >= self.min_count))}
        return self

    def transform(self, examples: list[RelationExample]) -> sparse.csr_matrix:
        rows, cols = [], []
        for r, ex in enumerate(examples):
            for c in {self.vocab_[f] for f in _features(ex, self.parts) if f in self.vocab_}:
                rows.append(r)
                cols.append(c)
        data = np.ones(len(rows), dtype=np.float32)
        return sparse.csr_matrix((data, (rows, cols)), shape=(len(examples), len(self.vocab_)))


class SoftmaxRegression:
    """Multinomial logistic regression trained full-batch with Adam in torch (one thread, seeded locally).

    scikit-learn's lbfgs took minutes per fit on this shared 2-core machine; 200 full-batch Adam steps over the
    sparse design matrix take about a second and reach the same kind of fit.
    """

    def __init__(self, n_classes: int, *, l2: float = 1e-4, steps: int = 200, lr: float = 0.05, seed: int = 0) -> None:
        self.n_classes, self.l2, self.steps, self.lr, self.seed = n_classes, l2, steps, lr, seed

    @staticmethod
    def _tensor(x: sparse.csr_matrix):
        import torch

        coo = x.tocoo()
        idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
        return torch.sparse_coo_tensor(idx, torch.from_numpy(coo.data), coo.shape).coalesce()

    def fit(self, x: sparse.csr_matrix, y: np.ndarray) -> SoftmaxRegression:
        import torch

        gen = torch.Generator().manual_seed(self.seed)
        xt = self._tensor(x)
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
        self.w_ = (0.01 * torch.randn(x.shape[1], self.n_classes, generator=gen)).requires_grad_()
        self.b_ = torch.zeros(self.n_classes, requires_grad=True)
        opt = torch.optim.Adam([self.w_, self.b_], lr=self.lr)
        for _ in range(self.steps):
            opt.zero_grad()
            logits = torch.sparse.mm(xt, self.w_) + self.b_
            loss = torch.nn.functional.cross_entropy(logits, yt) + self.l2 * (self.w_ * self.w_).sum()
            loss.backward()
            opt.step()
        return self

    def predict_proba(self, x: sparse.csr_matrix) -> np.ndarray:
        import torch

        with torch.no_grad():
            logits = torch.sparse.mm(self._tensor(x), self.w_) + self.b_
            return torch.softmax(logits, dim=1).double().numpy()


def fit_predict_proba(train: list[RelationExample], y: np.ndarray, test: list[RelationExample], n_classes: int, *,
                      feature_set: str = "full", l2: float = 1e-4, steps: int = 200, seed: int = 0) -> np.ndarray:
    """Fit features and model on ``train`` (labels ``y``) and return probabilities on ``test``, shape (n, K)."""
    feat = Featurizer(feature_set).fit(train)
    model = SoftmaxRegression(n_classes, l2=l2, steps=steps, seed=seed).fit(feat.transform(train), y)
    return model.predict_proba(feat.transform(test))


def out_of_fold_probs(examples: list[RelationExample], y: np.ndarray, n_classes: int, *, folds: int = 5,
                      feature_set: str = "full", steps: int = 200, seed: int = 0) -> np.ndarray:
    """K-fold out-of-sample predicted probabilities, shape (n, n_classes), as confident learning requires."""
    probs = np.zeros((len(y), n_classes))
    order = np.random.default_rng(seed).permutation(len(y))
    for k in range(folds):
        held = order[k::folds]
        train = np.setdiff1d(order, held)
        probs[held] = fit_predict_proba([examples[i] for i in train], y[train], [examples[i] for i in held],
                                        n_classes, feature_set=feature_set, steps=steps, seed=seed + k)
    return probs
