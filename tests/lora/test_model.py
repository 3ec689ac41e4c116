"""LoRALinear against a dense reference, PEFT as an independent oracle for the saved format, delta handling."""

from __future__ import annotations

import pytest
import torch

from knotwork._errors import MergeError, OutputError
from knotwork._io import is_knotwork_output
from knotwork.lora.io import adapter_deltas, read_peft_adapter, save_peft_adapter
from knotwork.lora.model import (
    LoRALinear,
    LoraSpec,
    added_deltas,
    embed_texts,
    inject_lora,
    lora_deltas,
    lora_disabled,
    lora_state_dict,
    mean_pool,
)
from tests.lora.conftest import make_tiny_bert


def _randomize_lora(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_lora_linear_equals_dense_update():
    g = torch.Generator().manual_seed(0)
    base = torch.nn.Linear(6, 5)
    mod = LoRALinear(base, LoraSpec(r=2, alpha=6.0, dropout=0.0), generator=g)
    with torch.no_grad():
        mod.lora_B.weight.copy_(torch.randn(5, 2, generator=g))
    x = torch.randn(4, 6, generator=g)
    ref = x @ (base.weight + 3.0 * mod.lora_B.weight @ mod.lora_A.weight).T + base.bias  # alpha/r = 3
    torch.testing.assert_close(mod(x), ref)
    torch.testing.assert_close(mod.delta_weight(), 3.0 * mod.lora_B.weight @ mod.lora_A.weight)


def test_fresh_lora_is_the_base_model(tiny_bert, minilm_tokenizer):
    before = embed_texts(tiny_bert, minilm_tokenizer, ["a short text", "another one here"])
    names = inject_lora(tiny_bert, LoraSpec(r=4, alpha=4.0))
    assert len(names) == 2 * 4  # 2 layers x (query, key, value, attention.output.dense)
    assert "encoder.layer.0.attention.output.dense" in names and "encoder.layer.0.output.dense" not in names
    torch.testing.assert_close(embed_texts(tiny_bert, minilm_tokenizer, ["a short text", "another one here"]), before)
    trainable = {n for n, p in tiny_bert.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)


def test_inject_lora_rejects_unknown_target(tiny_bert):
    with pytest.raises(ValueError, match="target module 'q_proj' matches no module"):
        inject_lora(tiny_bert, LoraSpec(target_modules=("query", "q_proj")))


def test_saved_adapter_loads_in_peft_with_identical_outputs(tmp_path, minilm_tokenizer):
    peft = pytest.importorskip("peft")
    spec = LoraSpec(r=4, alpha=8.0, dropout=0.0)
    ours = make_tiny_bert()
    inject_lora(ours, spec, seed=3)
    _randomize_lora(ours)
    save_peft_adapter(lora_state_dict(ours), spec, tmp_path / "ad", base_model="tiny")
    with pytest.raises(OutputError, match="exists; pass --force"):
        save_peft_adapter(lora_state_dict(ours), spec, tmp_path / "ad")
    assert is_knotwork_output(tmp_path / "ad")

    theirs = peft.PeftModel.from_pretrained(make_tiny_bert(), str(tmp_path / "ad")).eval()
    batch = minilm_tokenizer(["merging adapters", "is the whole story"], padding=True, return_tensors="pt")
    with torch.no_grad():
        a = ours(**batch).last_hidden_state
        b = theirs(**batch).last_hidden_state
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

    lora, spec2 = read_peft_adapter(tmp_path / "ad")
    assert spec2 == spec
    deltas = adapter_deltas(lora, spec2)
    for name, d in lora_deltas(ours).items():
        torch.testing.assert_close(deltas[name], d)


def test_added_deltas_equals_lora_forward_and_restores_weights(minilm_tokenizer):
    spec = LoraSpec(r=4, alpha=4.0, dropout=0.0)
    wrapped = make_tiny_bert()
    inject_lora(wrapped, spec)
    _randomize_lora(wrapped)
    plain = make_tiny_bert()
    w0 = {k: v.clone() for k, v in plain.state_dict().items()}
    texts = ["one", "two words", "and three words"]
    with added_deltas(plain, lora_deltas(wrapped)):
        merged = embed_texts(plain, minilm_tokenizer, texts)
    torch.testing.assert_close(merged, embed_texts(wrapped, minilm_tokenizer, texts), rtol=1e-5, atol=1e-5)
    for k, v in plain.state_dict().items():
        assert torch.equal(v, w0[k]), k
    with lora_disabled(wrapped):
        torch.testing.assert_close(embed_texts(wrapped, minilm_tokenizer, texts),
                                   embed_texts(plain, minilm_tokenizer, texts))
    with pytest.raises(MergeError, match="no such module"), added_deltas(plain, {"encoder.nope": torch.zeros(1, 1)}):
        pass


def test_mean_pool_ignores_padding():
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    m = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(mean_pool(h, m), torch.tensor([[2.0, 3.0]]))


def test_embed_texts_keeps_input_order(tiny_bert, minilm_tokenizer):
    texts = ["a much longer sentence than the others", "short", "medium length one"]
    together = embed_texts(tiny_bert, minilm_tokenizer, texts, batch_size=2)
    for i, t in enumerate(texts):
        torch.testing.assert_close(together[i], embed_texts(tiny_bert, minilm_tokenizer, [t])[0], rtol=1e-4,
                                   atol=1e-5)


def test_saved_adapter_gets_normal_permissions_and_force_replaces_only_knotwork_folders(tmp_path):
    import os
    import stat

    lora = {"m.lora_A.weight": torch.zeros(1, 2), "m.lora_B.weight": torch.zeros(2, 1)}
    spec = LoraSpec(r=1, alpha=1.0, target_modules=("m",))
    umask = os.umask(0o022)
    try:
        save_peft_adapter(lora, spec, tmp_path / "ad", extra_files={"note.txt": "x"})
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "ad").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "ad" / "adapter_config.json").stat().st_mode) == 0o644
    assert (tmp_path / "ad" / "note.txt").read_text() == "x"
    assert not list(tmp_path.glob(".*"))  # no temp leftovers
    save_peft_adapter(lora, spec, tmp_path / "ad", force=True)  # our own output: replaced
    assert not (tmp_path / "ad" / "note.txt").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("user data")
    with pytest.raises(OutputError, match="not a knotwork output"):
        save_peft_adapter(lora, spec, mine, force=True)
    assert (mine / "keep.txt").read_text() == "user data"


def test_read_peft_adapter_names_the_corrupt_file(tmp_path):
    spec = LoraSpec(r=1, alpha=1.0, target_modules=("m",))
    save_peft_adapter({"m.lora_A.weight": torch.zeros(1, 2), "m.lora_B.weight": torch.zeros(2, 1)}, spec,
                      tmp_path / "ad")
    (tmp_path / "ad" / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(MergeError, match=r"adapter_model.safetensors: not a readable safetensors file"):
        read_peft_adapter(tmp_path / "ad")
    with pytest.raises(MergeError, match=r"nope: adapter folder not found"):
        read_peft_adapter(tmp_path / "nope")
