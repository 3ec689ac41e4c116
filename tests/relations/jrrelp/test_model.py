"""JRRELPModel: RE logits ignore KG inputs, gradients reach R from the KG loss, λ = 0 switches a term off."""

from __future__ import annotations

import pytest
import torch

from knotwork.relations.jrrelp import JRRELPOutput, TrainConfig, build_model, jrrelp_loss

from .helpers import synthetic_examples

CFG = dict(
    embedding_dim=20, hidden_dim=20, attention_dim=10, position_dim=5, num_layers=1, conve_width=5,
    conve_channels=4, vocab_min_count=1, entity_masking="type",
)


@pytest.fixture(scope="module")
def setup():
    examples = synthetic_examples(40, seed=0)
    torch.manual_seed(0)
    model, feat, kg = build_model(examples, TrainConfig(**CFG))
    batch = feat.collate([feat(ex) for ex in examples[:8]])
    subjects, labels = kg.example_queries(examples[:8])
    return model, kg, batch, torch.tensor(subjects), torch.tensor(labels)


def test_eval_logits_do_not_depend_on_kg_inputs(setup):
    model, kg, batch, subjects, labels = setup
    model.eval()
    plain = model(batch).re_logits
    with_kg = model(batch, subjects, labels)
    other_kg = model(batch, torch.zeros_like(subjects), torch.zeros_like(labels))
    assert with_kg.kglp_logits is not None and with_kg.coupling_logits is not None
    torch.testing.assert_close(with_kg.re_logits, plain, rtol=0, atol=0)
    torch.testing.assert_close(other_kg.re_logits, plain, rtol=0, atol=0)
    # ... while the KG logits do depend on them, so the check above is not vacuous.
    assert not torch.allclose(with_kg.kglp_logits, other_kg.kglp_logits)


def test_classifier_weight_is_R(setup):
    model, *_ = setup
    assert model.relation_embeddings.data_ptr() == model.classifier.weight.data_ptr()


def test_kglp_loss_alone_sends_gradient_to_R_rows_of_batch_relations(setup):
    model, kg, batch, subjects, labels = setup
    model.train()
    model.zero_grad()
    out = model(batch, subjects, labels, coupling=False)
    targets = kg.targets(subjects, labels)
    torch.nn.functional.binary_cross_entropy_with_logits(out.kglp_logits, targets).backward()
    grad = model.classifier.weight.grad
    used = set(labels.tolist())
    for r in range(len(kg.relations)):
        if r in used:
            assert grad[r].abs().sum() > 0, f"no gradient for relation {r} from L_KGLP"
        else:
            assert grad[r].abs().sum() == 0
    # The node embeddings are rows of the word table, which therefore also receive gradient.
    assert model.encoder.word_embeddings.weight.grad.abs().sum() > 0
    # The RE bias is not part of L_KGLP.
    assert model.classifier.bias.grad is None or model.classifier.bias.grad.abs().sum() == 0


def test_coupling_loss_reaches_the_encoder_but_not_R(setup):
    model, kg, batch, subjects, labels = setup
    model.train()
    model.zero_grad()
    out = model(batch, subjects, labels, kglp=False)
    torch.nn.functional.binary_cross_entropy_with_logits(out.coupling_logits, kg.targets(subjects, labels)).backward()
    assert model.encoder.lstm.weight_hh_l0.grad.abs().sum() > 0
    assert model.classifier.weight.grad is None or model.classifier.weight.grad.abs().sum() == 0


def test_zero_lambda_means_no_term_and_no_gradient(setup):
    model, kg, batch, subjects, labels = setup
    model.train()
    model.zero_grad()
    out = model(batch, subjects, labels)
    terms = jrrelp_loss(out, labels, kg.targets(subjects, labels), lambda_kglp=0.0, lambda_coupling=0.0)
    torch.testing.assert_close(terms.total, torch.nn.functional.cross_entropy(out.re_logits, labels))
    terms.total.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.conve.parameters())


def test_loss_is_weighted_sum():
    torch.manual_seed(1)
    out = JRRELPOutput(torch.randn(4, 3), torch.randn(4, 5), torch.randn(4, 5))
    labels, targets = torch.tensor([0, 1, 2, 0]), torch.randint(0, 2, (4, 5)).float()
    t = jrrelp_loss(out, labels, targets, lambda_kglp=0.5, lambda_coupling=2.0)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected = (
        torch.nn.functional.cross_entropy(out.re_logits, labels)
        + 0.5 * bce(out.kglp_logits, targets)
        + 2.0 * bce(out.coupling_logits, targets)
    )
    torch.testing.assert_close(t.total, expected)
    with pytest.raises(ValueError, match="lambda_coupling=1.0 > 0 but the coupling logits or the KG targets"):
        jrrelp_loss(JRRELPOutput(out.re_logits), labels, None, lambda_kglp=0.0, lambda_coupling=1.0)


# ---------------------------------------------------------------- relation_coupling="reference" (the PA-LSTM code)


@pytest.fixture(scope="module")
def reference_setup():
    examples = synthetic_examples(40, seed=0)
    torch.manual_seed(0)
    config = TrainConfig.jrrelp("palstm", **CFG)
    model, feat, kg = build_model(examples, config)
    batch = feat.collate([feat(ex) for ex in examples[:8]])
    subjects, labels = kg.example_queries(examples[:8])
    return model, kg, batch, torch.tensor(subjects), torch.tensor(labels)


def test_the_classifier_follows_the_config():
    assert TrainConfig.jrrelp("palstm").relation_coupling == "reference"
    assert TrainConfig.jrrelp("transformer").relation_coupling == "joint"
    assert TrainConfig.jrrelp("palstm").classifier == "reference"
    assert TrainConfig(relation_coupling="reference").classifier == "linear"  # baseline: plain linear, as the code
    assert TrainConfig.jrrelp("palstm", relation_coupling="joint").classifier == "joint"
    with pytest.raises(ValueError, match="'relation_coupling' parameter of TrainConfig must be one of"):
        TrainConfig(relation_coupling="tied")


def test_reference_logits_are_r_hat_times_r_without_bias(reference_setup):
    model, _, batch, _, _ = reference_setup
    model.eval()
    assert not hasattr(model, "classifier") and model.relation_embeddings is model.relation_table.weight
    rep = model.encoder(batch)
    torch.testing.assert_close(model(batch).re_logits, rep @ model.relation_table.weight.T)
    # R is drawn from N(0, 1), as nn.Embedding in the released code.
    assert 0.8 < float(model.relation_table.weight.detach().std()) < 1.2


def test_reference_re_loss_never_moves_r_but_kglp_does(reference_setup):
    model, kg, batch, subjects, labels = reference_setup
    model.train()
    model.zero_grad()
    out = model(batch, subjects, labels)
    torch.nn.functional.cross_entropy(out.re_logits, labels).backward()
    assert model.relation_table.weight.grad is None
    assert model.encoder.lstm.weight_hh_l0.grad.abs().sum() > 0  # the RE loss still trains the encoder
    model.zero_grad()
    out = model(batch, subjects, labels, coupling=False)
    torch.nn.functional.binary_cross_entropy_with_logits(out.kglp_logits, kg.targets(subjects, labels)).backward()
    grad = model.relation_table.weight.grad
    assert set(torch.nonzero(grad.abs().sum(1)).flatten().tolist()) == set(labels.tolist())
