"""The toy world of the backbone, training and reliability tests: films of three genres, named in their
descriptions, and a 2-layer BERT small enough to train in seconds."""

from __future__ import annotations

from crs_core.schema import Item

TINY_BERT = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64, "max_position_embeddings": 64}
GENRES = ("space horror", "romantic comedy", "heist thriller")


def films(n: int) -> list[Item]:
    """`n` films with ids 100.., film k of genre k % 3."""
    return [Item(100 + i, f"Film {i}", f"Film {i}: a {GENRES[i % 3]}") for i in range(n)]
