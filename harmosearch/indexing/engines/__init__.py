"""Engines that run the encode stage of `harmosearch index`: `local` (this process and its
DataLoader workers, in `engines.local`) and `ray` (actors on a Ray cluster, in `engines.ray`).
Every engine encodes through `indexing.encode.encode_files` and stages what it encodes in the
same chunks, so the index it leads to is the same, and an interrupted run resumes with either
engine."""
