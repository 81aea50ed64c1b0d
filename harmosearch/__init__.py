"""harmosearch: region-aware image search with HarmoCLIP.

import harmosearch
index = harmosearch.open_index("indexes/photos")
for r in index.search("red umbrella near bench", k=5).results:
    print(r.rank, r.path, r.score, [(m.text, m.box) for m in r.lexemes])
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["build_index", "load_encoder", "open_index"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import harmosearch` (and `harmosearch --help`) never pulls in torch or faiss.
    if name == "open_index":
        from harmosearch.search import open_index

        return open_index
    if name == "build_index":
        from harmosearch.indexing import build_index

        return build_index
    if name == "load_encoder":
        from harmosearch.model.encoder import load_encoder

        return load_encoder
    raise AttributeError(f"module 'harmosearch' has no attribute {name!r}")
