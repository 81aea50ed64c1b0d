"""`harmosearch index`: walk a photo folder, encode what changed, commit a new index generation.

Incremental by (path, size, mtime), then content hash: unchanged files keep their vectors,
renamed or touched files reuse them by hash, deleted files drop out, and only new or edited
files are encoded. A video is one file with many rows (one per sampled frame): its frames are
reused, re-encoded or removed together. Each row also holds its file's capture time, camera and
GPS position (`media.metadata`). Encoded batches are staged on disk as they finish, so an
interrupted run resumes without encoding them again; the index itself changes only by the final
manifest swap, which also stores the index's calibration (`search.calibration`).
An update keeps the model, region and video settings and FAISS type the index was built with,
unless the caller set them (then the index must be rebuilt).

The rooms: `plan` (what changed since the last generation), `engines` (who encodes: `local` or
`ray`, both through `encode`), `assemble` (the new generation from old rows and staged chunks),
`boxes` (user boxes), `report` (what a run did) and `build` (`build_index`, which runs them in
turn).
"""

from harmosearch.indexing.boxes import load_user_boxes
from harmosearch.indexing.build import build_index, default_index_path
from harmosearch.indexing.report import IndexReport

__all__ = ["IndexReport", "build_index", "default_index_path", "load_user_boxes"]
