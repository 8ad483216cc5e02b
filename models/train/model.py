"""The reference DCN-v2 fraud model, as pixguard's Candle model (src/model/dcn.rs) reimplements it.

Input: standardised numeric features [B, n_numeric] (float) and categorical indices
[B, n_categorical] (int64), both produced by `pixguard features` from the package's feature spec.

    x0     = concat(numeric, embedding_1(cat_1), ..., embedding_k(cat_k))   # spec order
    x_l+1  = x0 * (W_l x_l + b_l) + x_l                                      # full-rank cross layers
    h      = ReLU(... ReLU(V_1 x_L + c_1) ...)                               # MLP
    logit  = u h + d;  score = sigmoid(logit)

Tensor names (safetensors): embeddings.<feature>.weight [cardinality, dim], cross.<l>.weight
[d0, d0], cross.<l>.bias [d0], mlp.<j>.weight [width_j, width_j-1], mlp.<j>.bias [width_j],
head.weight [1, width], head.bias [1].
"""
from __future__ import annotations

import math

import torch
from torch import nn


def embedding_dim(cardinality: int) -> int:
    """fastai's rule of thumb, capped at 16: 1.6 * cardinality^0.56."""
    return max(2, min(16, round(1.6 * cardinality**0.56)))


class DCNv2(nn.Module):
    def __init__(self, n_numeric: int, categorical: list[tuple[str, int, int]], cross_layers: int, mlp: list[int]):
        """categorical: (feature name, cardinality, embedding dim) in spec order."""
        super().__init__()
        self.names = [name for name, _, _ in categorical]
        self.embeddings = nn.ModuleDict({name: nn.Embedding(card, dim) for name, card, dim in categorical})
        d0 = n_numeric + sum(dim for _, _, dim in categorical)
        self.d0 = d0
        self.cross = nn.ModuleList([nn.Linear(d0, d0) for _ in range(cross_layers)])
        widths = [d0, *mlp]
        self.mlp = nn.ModuleList([nn.Linear(a, b) for a, b in zip(widths, widths[1:])])
        self.head = nn.Linear(widths[-1], 1)
        for layer in self.cross:
            # Start each cross layer near the identity map x_l+1 = x_l so deep stacks train stably.
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
        for emb in self.embeddings.values():
            nn.init.normal_(emb.weight, std=1.0 / math.sqrt(emb.embedding_dim))

    def logit(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        parts = [numeric]
        for i, name in enumerate(self.names):
            parts.append(self.embeddings[name](categorical[:, i]))
        x0 = torch.cat(parts, dim=1)
        x = x0
        for layer in self.cross:
            x = x0 * layer(x) + x
        h = x
        for layer in self.mlp:
            h = torch.relu(layer(h))
        return self.head(h)  # [B, 1]

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """Fraud probability, [B, 1]."""
        return torch.sigmoid(self.logit(numeric, categorical))
