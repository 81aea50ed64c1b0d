"""Searching an index: the query as a pipeline of stages.

    query -> filters -> retrieve -> score -> fuse -> rank -> rerank -> results

`query` puts the text, image and --not phrases in vectors and lays the call's options over the
settings; `filters` decides which images may be returned; `retrieve` finds candidates in the
approximate indexes; `score` rescores them exactly from the stored vectors (lexemes against
regions, `relations` between the boxes chosen, rivals from `contrast`); `fuse` makes one score;
`rank` orders, keeps a video's best frame, applies the minimum score and the index's
`calibration`; `rerank` looks at the best results again on their pictures (`box_search`,
`crops`) with --refine; `results` builds what the caller gets. `Index` (index.py) opens an index
and wires the stages; the bench and the calibration call the same stages.
"""

from harmosearch.limits import MAX_QUERY_CHARS
from harmosearch.search.index import Index, open_index
from harmosearch.search.results import LexemeMatch, RelationMatch, Result, SearchResponse

__all__ = ["MAX_QUERY_CHARS", "Index", "LexemeMatch", "RelationMatch", "Result", "SearchResponse", "open_index"]
