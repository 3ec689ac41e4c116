"""The JRRELP model: an RE encoder whose relation table R is shared with a ConvE link predictor."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from knotwork._errors import JrrelpError
from knotwork.relations.jrrelp.conve import ConvEInteraction


@dataclass(frozen=True)
class JRRELPOutput:
    """Logits of one forward pass; the KG logits are ``None`` when no KG inputs were given."""

    re_logits: torch.Tensor  # (B, n_relations)
    kglp_logits: torch.Tensor | None = None  # (B, n_objects): ConvE(e_s, R[r])
    coupling_logits: torch.Tensor | None = None  # (B, n_objects): ConvE(e_s, r̂)


@dataclass(frozen=True)
class LossTerms:
    """The three JRRELP losses and their weighted sum (eq. 14)."""

    total: torch.Tensor
    re: torch.Tensor
    kglp: torch.Tensor
    coupling: torch.Tensor


def jrrelp_loss(
    output: JRRELPOutput,
    labels: torch.Tensor,
    targets: torch.Tensor | None,
    *,
    lambda_kglp: float,
    lambda_coupling: float,
    global_count: int | None = None,
) -> LossTerms:
    """``L = L_RE + λ_KGLP · L_KGLP + λ_COUPLING · L_COUPLING`` (JRRELP eq. 8–14).

    ``L_RE`` is cross-entropy over relations. ``L_KGLP`` and ``L_COUPLING`` are binary cross-entropy between the
    multi-hot object targets and ConvE's logits given the gold relation embedding R[r] (KGLP) or the RE
    representation r̂ (coupling), averaged over batch and objects as in the released code. A term whose λ is 0
    is reported as 0 and contributes no gradient.

    ``global_count`` is for data-parallel training, where the batch is one process's share of a global batch of
    that many examples: each term is then its sum over the share divided by the global count (times the number
    of objects for the KG terms), so the terms summed over processes are the global batch's means.

    Raises
    ------
    knotwork._errors.JrrelpError
        When a λ is negative, or a term with λ > 0 lacks its logits or targets.
    """
    if lambda_kglp < 0 or lambda_coupling < 0:
        raise JrrelpError(f"lambdas must be >= 0, got lambda_kglp={lambda_kglp}, lambda_coupling={lambda_coupling}")
    if global_count is None:
        re = F.cross_entropy(output.re_logits, labels)
    else:
        re = F.cross_entropy(output.re_logits, labels, reduction="sum") / global_count
    zero = re.new_zeros(())
    terms = {}
    for name, lam, logits in (
        ("kglp", lambda_kglp, output.kglp_logits),
        ("coupling", lambda_coupling, output.coupling_logits),
    ):
        if lam == 0:
            terms[name] = zero
            continue
        if logits is None or targets is None:
            raise JrrelpError(f"lambda_{name}={lam} > 0 but the {name} logits or the KG targets are missing")
        if global_count is None:
            terms[name] = F.binary_cross_entropy_with_logits(logits, targets)
        else:
            bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
            terms[name] = bce / (global_count * logits.shape[1])
    total = re + lambda_kglp * terms["kglp"] + lambda_coupling * terms["coupling"]
    return LossTerms(total, re, terms["kglp"], terms["coupling"])


CLASSIFIERS = ("linear", "joint", "reference")


class JRRELPModel(nn.Module):
    """RE model plus the ConvE link predictor that shares its parameters (Stoica et al., arXiv 2012.04812).

    The node (entity) embeddings are rows of the encoder's input embedding table. How the relation table R of
    the link predictor meets the RE classifier is ``classifier``:

    - ``"joint"``: R **is** the RE classifier's weight and the RE logits are ``r̂ @ R.T + b`` (paper eq. 2, the
      SpanBERT code): R gets gradient from all three losses;
    - ``"reference"``: the released PA-LSTM code. R is its own table (``nn.Embedding``, N(0, 1) init) and the RE
      logits are ``r̂ @ R.detach().T`` with no bias, so the RE loss never moves R; only L_KGLP does (the
      coupling loss uses r̂, not R);
    - ``"linear"``: the plain baseline classifier ``r̂ @ W.T + b``; W still serves as R if KG logits are asked for.

    Parameters
    ----------
    encoder : nn.Module
        Has ``output_dim``, ``embedding_dim``, ``forward(batch) -> (B, output_dim)`` and
        ``node_embeddings(ids (N, L)) -> (N, embedding_dim)``.
    n_relations : int
    subject_node_tokens, object_node_tokens : Tensor of shape (n_subjects, L) and (n_objects, L), int
        Token ids (padded with the encoder's pad id) whose embeddings represent each KG node.
    classifier : {"joint", "reference", "linear"}, default "joint"
    conve_width : int
        Width of ConvE's images; must divide both ``encoder.embedding_dim`` and ``encoder.output_dim``.
    conve_channels, input_dropout, feature_dropout, hidden_dropout, conve_batchnorm
        Passed to :class:`ConvEInteraction` (``conve_batchnorm`` as its ``batchnorm``).
    """

    def __init__(
        self,
        encoder: nn.Module,
        n_relations: int,
        subject_node_tokens: torch.Tensor,
        object_node_tokens: torch.Tensor,
        *,
        classifier: str = "joint",
        conve_width: int = 10,
        conve_channels: int = 32,
        input_dropout: float = 0.2,
        feature_dropout: float = 0.2,
        hidden_dropout: float = 0.3,
        conve_batchnorm: str = "batch",
    ) -> None:
        super().__init__()
        if classifier not in CLASSIFIERS:
            raise JrrelpError(f"classifier must be one of {CLASSIFIERS}, got {classifier!r}")
        self.encoder = encoder
        self.classifier_kind = classifier
        if classifier == "reference":
            self.relation_table = nn.Embedding(n_relations, encoder.output_dim)  # R, N(0, 1) as in the code
        else:
            self.classifier = nn.Linear(encoder.output_dim, n_relations)  # weight (n_relations, output_dim) is R
        self.register_buffer("subject_node_tokens", subject_node_tokens.long(), persistent=True)
        self.register_buffer("object_node_tokens", object_node_tokens.long(), persistent=True)
        self.conve = ConvEInteraction(
            encoder.embedding_dim,
            encoder.output_dim,
            width=conve_width,
            channels=conve_channels,
            input_dropout=input_dropout,
            feature_dropout=feature_dropout,
            hidden_dropout=hidden_dropout,
            batchnorm=conve_batchnorm,
        )
        self.object_bias = nn.Parameter(torch.zeros(object_node_tokens.shape[0]))

    @property
    def relation_embeddings(self) -> torch.Tensor:
        """R, shape (n_relations, output_dim): the table itself (the classifier weight unless ``"reference"``)."""
        if self.classifier_kind == "reference":
            return self.relation_table.weight
        return self.classifier.weight

    def re_logits(self, rep: torch.Tensor) -> torch.Tensor:
        """RE logits of sentence representations r̂ (B, output_dim) -> (B, n_relations)."""
        if self.classifier_kind == "reference":
            return rep @ self.relation_table.weight.detach().T
        return self.classifier(rep)

    def forward(
        self,
        batch: dict[str, torch.Tensor],
        subject_nodes: torch.Tensor | None = None,
        relations: torch.Tensor | None = None,
        *,
        kglp: bool = True,
        coupling: bool = True,
    ) -> JRRELPOutput:
        """RE logits, and the KG logits when ``subject_nodes`` (and, for KGLP, gold ``relations``) are given.

        The RE logits never depend on the KG inputs: at test time call ``model(batch)``.
        """
        rep = self.encoder(batch)  # r̂: (B, output_dim)
        re_logits = self.re_logits(rep)
        if subject_nodes is None or not (kglp or coupling):
            return JRRELPOutput(re_logits)
        e_s = self.encoder.node_embeddings(self.subject_node_tokens[subject_nodes])  # (B, De)
        e_o = self.encoder.node_embeddings(self.object_node_tokens)  # (n_objects, De)
        kglp_logits = None
        if kglp:
            if relations is None:
                raise JrrelpError("the KGLP term needs the gold relations of the batch")
            kglp_logits = self.conve(e_s, self.relation_embeddings[relations], e_o, self.object_bias)
        coupling_logits = self.conve(e_s, rep, e_o, self.object_bias) if coupling else None
        return JRRELPOutput(re_logits, kglp_logits, coupling_logits)
