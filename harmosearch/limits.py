"""How much one query may ask for, in one place: the library, the CLI and the server refuse the
same. Standard library only, so that the CLI and the server's client can import it cheaply (the
server's limits on requests themselves, such as the body size, are in serve/guard.py).

A text longer than MAX_QUERY_CHARS is cut to it, with a warning, by an in-process search (the
model reads at most 77 tokens of it anyway); the server refuses one with a 422, so a client cuts
it before sending and adds the same warning (`cut_query`).
"""

from __future__ import annotations

from harmosearch.errors import QueryError

MAX_QUERY_CHARS = 1000
MAX_NEGATIVES = 16  # --not phrases: each is one more text encoding and one more score per region
MAX_K = 1000  # results: each is a row of boxes and scores to build, send and draw


def cut_query(text: str) -> tuple[str, str | None]:
    """The query text as searched (its first MAX_QUERY_CHARS characters) and the warning saying
    it was cut, None when it was not."""
    if len(text) <= MAX_QUERY_CHARS:
        return text, None
    return text[:MAX_QUERY_CHARS], f"query truncated to its first {MAX_QUERY_CHARS} characters"


def check_k(k: int) -> None:
    if k > MAX_K:
        raise QueryError(f"k must be at most {MAX_K}, got {k}")


def check_negatives(negatives: tuple[str, ...]) -> None:
    if len(negatives) > MAX_NEGATIVES:
        raise QueryError(f"at most {MAX_NEGATIVES} --not phrases (negatives) per query, got {len(negatives)}")
