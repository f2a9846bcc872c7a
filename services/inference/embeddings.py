"""Sentence embeddings (all-MiniLM-L6-v2 by default), normalized for cosine search."""

from __future__ import annotations

import threading
from typing import Any


class Embedder:
    def __init__(self, path: str, device: str, name: str) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.model = SentenceTransformer(path, device=device, local_files_only=True)
        self.dimensions = int(self.model.get_embedding_dimension()
                              if hasattr(self.model, "get_embedding_dimension")
                              else self.model.get_sentence_embedding_dimension())
        self.max_tokens = int(self.model.max_seq_length)
        self._lock = threading.Lock()  # one encode at a time; each call is already a batch

    def count_tokens(self, texts: list[str]) -> int:
        tokenizer: Any = self.model.tokenizer
        return sum(min(len(ids), self.max_tokens) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"])

    def embed(self, texts: list[str], batch_size: int = 64) -> list[list[float]]:
        with self._lock:
            vectors = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False)
        return vectors.tolist()
