"""The one place that turns user / item embeddings into top-K lists and ranks.

Everything works on user chunks with a preallocated score buffer and CSR
masks; no users x items matrix is ever built. Scores are inner products; ties
go to the lower item id; results do not depend on chunk size, thread count or
backend.

- ``topk(user_emb, item_emb, k, exclude=None, users=None, *, backend, chunk_size)``
- ``top_users(user_emb, item_emb, k, exclude=None, items=None)``: item side
- ``rank_of(user_emb, item_emb, users, items, *, chunk_size)``
- ``iter_score_chunks(user_emb, item_emb, users=None, chunk_size=None)``
"""
from .chunks import iter_score_chunks
from .ranks import rank_of
from .engine import BACKENDS, DEFAULT_BACKEND, top_users, topk

__all__ = ["topk", "top_users", "rank_of", "iter_score_chunks", "BACKENDS", "DEFAULT_BACKEND"]
