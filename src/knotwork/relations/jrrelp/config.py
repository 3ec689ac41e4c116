"""The frozen training configuration of a JRRELP (or baseline) relation-extraction run."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from knotwork._errors import JrrelpError

ENCODERS = ("palstm", "transformer")
BATCHNORM = ("batch", "running")
OPTIMIZERS = ("sgd", "adam", "adamw")
RELATION_COUPLING = ("reference", "joint")

# The paper's λ per backbone (§4): 1 for PA-LSTM, 0.01 for the pretrained transformer (SpanBERT).
DEFAULT_LAMBDA = {"palstm": 1.0, "transformer": 0.01}


def _help(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run; defaults follow the paper's PA-LSTM configuration where it has one.

    ``lambda_kglp = lambda_coupling = 0`` is the plain RE baseline; the paper ties both to one λ
    (:func:`TrainConfig.jrrelp`), and setting one of them to 0 gives the paper's ablations.

    ``relation_coupling`` says how the relation table R enters the RE classifier when a KG term is on (the
    baseline always has a plain linear classifier with a bias, as the reference code's baseline):

    - ``"reference"``: as the released PA-LSTM code (``JRRELP-PALSTM/model/rnn.py``): R is its own table
      (``nn.Embedding``, N(0, 1) init) and the RE logits are ``r̂ @ R.detach().T`` with no bias, so only the KG
      losses train R;
    - ``"joint"``: R is the classifier's weight and the logits are ``r̂ @ R.T + b`` (paper eq. 2 and the SpanBERT
      code), so R is trained by all three losses.

    Left at ``None`` it is what the released code of the encoder does: ``"reference"`` for the PA-LSTM,
    ``"joint"`` for a transformer (the SpanBERT code's classifier rows are R).
    """

    encoder: str = field(default="palstm", metadata=_help("palstm or transformer"))
    lambda_kglp: float = field(default=0.0, metadata=_help("weight of the link-prediction loss"))
    lambda_coupling: float = field(default=0.0, metadata=_help("weight of the coupling loss"))
    node_key: str = field(default="type", metadata=_help("KG nodes: 'type' (paper), 'head' or an extra field"))
    min_node_count: int = field(default=1, metadata=_help("rarer nodes map to <unk>"))
    negative_policy: str = field(default="observed", metadata=_help("'observed' or 'all_ones' for no_relation"))
    label_smoothing: float = field(default=0.0, metadata=_help("KG target smoothing (C-GCN used 0.1)"))
    relation_coupling: str | None = field(
        default=None,
        metadata=_help("'reference' (R detached in the RE logits, no bias: the PA-LSTM code) or 'joint' (R is the "
                       "classifier weight, with a bias); None: the encoder's released code"),
    )
    negative_label: str = "no_relation"
    epochs: int = 100
    batch_size: int = 50
    optimizer: str = "sgd"
    lr: float = 1.0
    head_lr: float | None = field(default=None, metadata=_help("lr of non-backbone parameters; None = lr"))
    weight_decay: float = 0.0
    lr_decay: float = field(default=0.9, metadata=_help("SGD: multiply lr when dev F1 stalls"))
    decay_after: int = field(
        default=11,
        metadata=_help("SGD: decay only after this epoch (the PA-LSTM code: once its dev history holds > 10 epochs)"),
    )
    warmup: float = field(default=0.1, metadata=_help("transformer: linear warm-up fraction"))
    max_grad_norm: float = 5.0
    patience: int = field(default=10, metadata=_help("stop after this many epochs without a better dev F1"))
    seed: int = 0
    # PA-LSTM
    vocab_min_count: int = 2
    lowercase: bool = True
    entity_masking: str = field(default="type", metadata=_help("'type' replaces spans by SUBJ-/OBJ-<type>"))
    embedding_dim: int = 300
    position_dim: int = 30
    hidden_dim: int = 200
    attention_dim: int = 200
    num_layers: int = 2
    dropout: float = 0.5
    word_dropout: float = 0.04
    # transformer
    max_length: int = 128
    # ConvE
    conve_width: int = 10
    conve_channels: int = 32
    conve_input_dropout: float = 0.2
    conve_feature_dropout: float = 0.2
    conve_hidden_dropout: float = 0.3
    conve_batchnorm: str = field(
        default="batch",
        metadata=_help("'batch': ConvE's BatchNorm normalises by batch statistics in training (ConvE); 'running': by "
                       "its running statistics throughout, for exact data-parallel equality"),
    )

    def __post_init__(self) -> None:
        """Refuse an impossible setting with :class:`~knotwork._errors.JrrelpError` naming the parameter."""
        if self.encoder not in ENCODERS:
            raise JrrelpError(f"The 'encoder' parameter of TrainConfig must be one of {ENCODERS}. Got {self.encoder!r}.")
        if self.optimizer not in OPTIMIZERS:
            raise JrrelpError(
                f"The 'optimizer' parameter of TrainConfig must be one of {OPTIMIZERS}. Got {self.optimizer!r}."
            )
        if self.relation_coupling is None:
            object.__setattr__(self, "relation_coupling", "reference" if self.encoder == "palstm" else "joint")
        if self.relation_coupling not in RELATION_COUPLING:
            raise JrrelpError(
                f"The 'relation_coupling' parameter of TrainConfig must be one of {RELATION_COUPLING}. "
                f"Got {self.relation_coupling!r}."
            )
        if self.conve_batchnorm not in BATCHNORM:
            raise JrrelpError(
                f"The 'conve_batchnorm' parameter of TrainConfig must be one of {BATCHNORM}. Got {self.conve_batchnorm!r}."
            )
        for name in ("lambda_kglp", "lambda_coupling", "weight_decay", "lr", "label_smoothing", "warmup"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise JrrelpError(f"The {name!r} parameter of TrainConfig must be >= 0 and finite. Got {value}.")
        for name in ("epochs", "batch_size", "patience", "hidden_dim", "embedding_dim", "conve_width", "min_node_count"):
            if getattr(self, name) < 1:
                raise JrrelpError(f"The {name!r} parameter of TrainConfig must be >= 1. Got {getattr(self, name)}.")
        if self.lr <= 0:
            raise JrrelpError(f"The 'lr' parameter of TrainConfig must be > 0. Got {self.lr}.")
        if self.head_lr is not None and not (math.isfinite(self.head_lr) and self.head_lr > 0):
            raise JrrelpError(f"The 'head_lr' parameter of TrainConfig must be finite and > 0. Got {self.head_lr}.")
        if self.warmup > 1 or self.label_smoothing >= 1:
            raise JrrelpError(
                f"TrainConfig needs warmup in [0, 1] and label_smoothing in [0, 1). Got {self.warmup} and "
                f"{self.label_smoothing}."
            )
        if self.encoder == "palstm":
            for name, dim in (("embedding_dim", self.embedding_dim), ("hidden_dim", self.hidden_dim)):
                if dim % self.conve_width:
                    raise JrrelpError(
                        f"{name}={dim} must be a multiple of conve_width={self.conve_width} (ConvE reshapes it)."
                    )

    @property
    def uses_kg(self) -> bool:
        return self.lambda_kglp > 0 or self.lambda_coupling > 0

    @property
    def classifier(self) -> str:
        """The RE classifier built: ``"linear"`` for the baseline, else :attr:`relation_coupling`."""
        return self.relation_coupling if self.uses_kg else "linear"  # type: ignore[return-value]

    @classmethod
    def jrrelp(cls, encoder: str = "palstm", lam: float | None = None, **kwargs) -> TrainConfig:
        """JRRELP with the paper's tied λ (default per encoder: 1 for PA-LSTM, 0.01 for a transformer)."""
        lam = DEFAULT_LAMBDA[encoder] if lam is None else lam
        return cls(encoder=encoder, lambda_kglp=lam, lambda_coupling=lam, **kwargs)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise KeyError(f"unknown TrainConfig keys: {unknown}")
        return cls(**data)
