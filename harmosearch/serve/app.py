"""The JSON API and the page of `harmosearch serve`: FastAPI over `Index`, and nothing more.

Every search is an `Index` method run in a worker thread, so the event loop never waits for a
model. Files are only ever named by image id: the original comes from `Index.image_file`, which
refuses paths that leave the photo folder, and thumbnails are made from it once and cached by
content hash. Errors are JSON objects with a one-line "detail", and what the server sends names
no folder of its own: absolute paths in messages, warnings and an index's settings are cut to
their last part. Every request first passes `guard` (Host, Origin, token, body size).
"""

from __future__ import annotations

import functools
import math
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from harmosearch.errors import DataError, HarmosearchError, QueryError
from harmosearch.limits import MAX_K, MAX_NEGATIVES, MAX_QUERY_CHARS
from harmosearch.search import Index, SearchResponse
from harmosearch.serve.access import Access
from harmosearch.serve.guard import Guard

STATIC = Path(__file__).parent / "static"
THUMBNAIL_SIDE = 256
T = TypeVar("T")
ImageId = Annotated[int, PathParam(ge=0, description="row of the index's images table")]
Phrase = Annotated[str, Field(max_length=MAX_QUERY_CHARS)]
# An absolute path in a message: "/" where no word, "~", "." or URL goes on before it.
ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/…-])/[^\s'\"(),;:]+")


class Match(BaseModel):
    text: str
    score: float
    box: list[float] = Field(description="x0, y0, x1, y1 in pixels of the original image (after EXIF rotation)")
    count: int | None = Field(None, description="instances found, when the query counts this lexeme")
    instances: list[list[float]] | None = Field(None, description="the box of each instance counted")
    negated: bool | None = Field(None, description="the query asks for its absence ('without a hat')")
    presence: float | None = Field(None, description="a negated lexeme's presence, 0 to 1")


class Hit(BaseModel):
    rank: int
    path: str = Field(description="relative to the index's photo folder")
    score: float
    global_score: float
    lexemes: list[Match]
    image_id: int = Field(description="for /images/{image_id}, /thumbnails/{image_id}, /similar and /region")
    width: int
    height: int


class Ranking(BaseModel):
    query: str
    lexemes: list[str]
    results: list[Hit]
    warnings: list[str]


class Options(BaseModel):
    # Unknown fields are refused by name: a client newer than the server learns which option is
    # missing instead of getting results that silently ignore it. Values are checked by `Index`
    # itself, so that a refused query reads the same through the server and in-process.
    model_config = ConfigDict(extra="forbid")

    k: int | None = Field(None, description=f"number of results, 1 to {MAX_K} (default: search.k)")
    min_score: float | None = Field(None, description="drop results scoring below this")


class TextQuery(Options):
    text: str = Field(
        "",
        max_length=MAX_QUERY_CHARS,
        description='what to look for, e.g. "red umbrella near bench" (a longer text is refused: cut it first)',
    )
    alpha: float | None = Field(
        None, description="weight of the global score in [0, 1] (default: search.alpha; phrase_alpha for one lexeme)"
    )
    global_only: bool = Field(False, description="plain CLIP ranking, no regions")
    negatives: list[Phrase] = Field([], description=f"push down images showing these (at most {MAX_NEGATIVES})")
    relations: bool = Field(
        True, description="use the query's relations (left of, near, ...); false ranks lexemes alone"
    )
    relation_weight: float | None = Field(None, description="weight of the relations (default: search.relation_weight)")
    after: str | None = Field(None, description="taken at or after this date: 2024, 2024-07, 2024-07-15")
    before: str | None = Field(None, description="taken before this date (same forms)")
    under: list[str] = Field([], max_length=64, description="only photos under these folders of the photo root")
    sort: str = Field("score", description="order of the k best: score, or date (newest first)")
    refine: bool | None = Field(
        None,
        description="look at the best search.rerank results again on their re-encoded pictures: boxes that fit, "
        "and those results reordered by how well the crop around each box matches its words "
        "(default: search.refine)",
    )


class ImageQuery(Options):
    image_id: int = Field(description="an indexed image")


class RegionQuery(ImageQuery):
    box: tuple[float, float, float, float] = Field(description="x0, y0, x1, y1 in pixels of that image")
    alpha: float = Field(0.0, description="weight of the images' global similarity in [0, 1] (0: regions only)")


def thumbnail(index: Index, image_id: int, cache: Path) -> Path:
    """A JPEG of at most THUMBNAIL_SIDE pixels a side, made once per image content (and video time)."""
    index.image_file(image_id)  # checked every time: a cached thumbnail is the picture too
    sha = str(index.reader.images["sha256"][image_id])
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise DataError(f"image {image_id} has no content hash in the index; re-run harmosearch index")
    seconds = float(index.reader.images["frame_time"][image_id])
    name = sha if math.isnan(seconds) else f"{sha}-{seconds:.3f}"
    target = cache / str(THUMBNAIL_SIDE) / sha[:2] / f"{name}.jpg"
    if target.is_file():
        return target
    image = index.picture(image_id, THUMBNAIL_SIDE)[0]
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}")
    image.save(partial, "JPEG", quality=85)
    os.replace(partial, target)
    return target


class Served:
    """The indexes of one app by name, and how requests reach them: one search at a time per
    model, file reads in worker threads, unknown names and ids as 404s, no folder of this
    machine named in an answer."""

    def __init__(self, indexes: dict[str, Index], thumbnails: Path) -> None:
        self.indexes = indexes
        self.thumbnails = thumbnails
        # The folders a message may name, longest first: the pattern would split a name with spaces.
        folders = {thumbnails, *(f for i in indexes.values() for f in (i.path, i.photos_root))}
        named = {str(f) for folder in folders for f in (folder, folder.resolve())}
        self.folders = sorted((f for f in named if len(f) > 1), key=len, reverse=True)
        # One search at a time per model. Index is safe to share between threads (50 concurrent
        # searches gave the sequential answers either way), but on 2 CPU cores they finished in
        # 0.82-0.89 s one at a time against 0.98-1.03 s all at once, and queued requests hold no thread.
        self.limiters: dict[int, anyio.CapacityLimiter] = {}
        for index in indexes.values():
            self.limiters.setdefault(id(index.encoder), anyio.CapacityLimiter(1))

    def index(self, name: str) -> Index:
        if name not in self.indexes:
            raise HTTPException(404, f"no index named {name!r}; this server has {', '.join(sorted(self.indexes))}")
        return self.indexes[name]

    def image_of(self, name: str, image_id: int) -> Index:
        index = self.index(name)
        if image_id >= index.n_images:
            raise HTTPException(404, f"no image {image_id} in index {name!r} (it holds {index.n_images})")
        return index

    async def on_model(self, index: Index, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(
            functools.partial(call, *args, **kwargs), limiter=self.limiters[id(index.encoder)]
        )

    async def on_disk(self, call: Callable[..., T], *args: Any) -> T:
        try:
            return await anyio.to_thread.run_sync(functools.partial(call, *args))
        except QueryError as exc:  # the file leads outside the photo folder
            raise HTTPException(403, self.scrub(one_line(exc))) from None

    def ranking(self, response: SearchResponse) -> JSONResponse:
        """`SearchResponse.to_dict()` plus what a page needs to fetch and draw each result."""
        body = response.to_dict()
        for item, result in zip(body["results"], response.results, strict=True):
            item.update(image_id=result.image_id, width=result.width, height=result.height)
        body["warnings"] = [self.scrub(warning) for warning in response.warnings]
        return JSONResponse(body)

    def scrub(self, value: Any) -> Any:
        """`value` (a text, or lists and dicts of them) with every absolute path cut to its last
        part, "/home/me/photos" to "…/photos"."""
        if isinstance(value, dict):
            return {key: self.scrub(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.scrub(item) for item in value]
        if not isinstance(value, str):
            return value
        for folder in self.folders:
            value = value.replace(folder, _last_part(folder))
        return ABSOLUTE_PATH.sub(lambda found: _last_part(found.group()), value)


def create_app(indexes: dict[str, Index], thumbnails: Path, access: Access | None = None) -> FastAPI:
    """The app serving these indexes by name; thumbnails are cached under `thumbnails`. `access`
    says whom it answers (default: any client on this machine that names it by address or as
    localhost)."""
    import harmosearch

    app = FastAPI(
        title="harmosearch",
        version=harmosearch.__version__,
        description="Region-aware image search: each lexeme of a query is matched to the region it describes.",
    )
    served = Served(indexes, thumbnails)
    docs = tuple(u for u in (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url) if u)
    app.add_middleware(Guard, access=access or Access(), docs=docs)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe(exc.errors())}, status_code=422)

    @app.exception_handler(HarmosearchError)
    async def refused(_: Request, exc: HarmosearchError) -> JSONResponse:
        status = 400 if isinstance(exc, QueryError) else 404 if isinstance(exc, DataError) else 500
        return JSONResponse({"detail": served.scrub(one_line(exc))}, status_code=status)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    _add_index_routes(app, served)
    _add_search_routes(app, served)
    _add_file_routes(app, served)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _add_index_routes(app: FastAPI, served: Served) -> None:
    @app.get("/api/health", summary="Liveness, for clients checking a discovery file")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "pid": os.getpid(),
            "indexes": {name: index.reader.manifest["generation"] for name, index in served.indexes.items()},
        }

    @app.get("/api/indexes", summary="The indexes served, by name")
    async def list_indexes() -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "images": index.n_images,
                "regions": index.reader.n_regions,
                "model": served.scrub(index.encoder.identity.spec),
                "generation": index.reader.manifest["generation"],
            }
            for name, index in served.indexes.items()
        ]

    @app.get("/api/indexes/{name}", summary="What an index holds: counts, model, configuration, size")
    async def index_info(name: str) -> dict[str, Any]:
        index = served.index(name)
        info = await anyio.to_thread.run_sync(index.info)
        del info["path"], info["photos_root"]  # where the index and its photos lie here is the server's business
        return {"name": name, **served.scrub(info)}


def _add_search_routes(app: FastAPI, served: Served) -> None:
    @app.post("/api/indexes/{name}/search", response_model=Ranking, summary="Search by text")
    async def search(name: str, query: TextQuery) -> JSONResponse:
        index = served.index(name)
        response = await served.on_model(
            index,
            index.search,
            query.text,
            k=query.k,
            alpha=query.alpha,
            global_only=query.global_only,
            negatives=tuple(query.negatives),
            min_score=query.min_score,
            relations=query.relations,
            relation_weight=query.relation_weight,
            after=query.after,
            before=query.before,
            under=tuple(query.under),
            sort=query.sort,
            refine=query.refine,
        )
        return served.ranking(response)

    @app.post("/api/indexes/{name}/similar", response_model=Ranking, summary="More like an indexed image")
    async def similar(name: str, query: ImageQuery) -> JSONResponse:
        index = served.index(name)
        response = await served.on_model(index, index.similar, query.image_id, k=query.k, min_score=query.min_score)
        return served.ranking(response)

    @app.post("/api/indexes/{name}/region", response_model=Ranking, summary="Search by a box drawn on an indexed image")
    async def region(name: str, query: RegionQuery) -> JSONResponse:
        index = served.index(name)
        response = await served.on_model(
            index,
            index.search_region,
            query.image_id,
            query.box,
            k=query.k,
            alpha=query.alpha,
            min_score=query.min_score,
        )
        return served.ranking(response)


def _add_file_routes(app: FastAPI, served: Served) -> None:
    image_headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

    @app.get("/api/indexes/{name}/images/{image_id}", summary="The original image file", response_class=FileResponse)
    async def original(name: str, image_id: ImageId) -> FileResponse:
        index = served.image_of(name, image_id)
        return FileResponse(await served.on_disk(index.image_file, image_id), headers=image_headers)

    @app.get(
        "/api/indexes/{name}/thumbnails/{image_id}",
        summary=f"A JPEG of at most {THUMBNAIL_SIDE} pixels a side",
        response_class=FileResponse,
    )
    async def small(name: str, image_id: ImageId) -> FileResponse:
        index = served.image_of(name, image_id)
        path = await served.on_disk(thumbnail, index, image_id, served.thumbnails)
        return FileResponse(path, media_type="image/jpeg", headers=image_headers)


def _last_part(path: str) -> str:
    name = path.rstrip("/.").rsplit("/", 1)[-1]
    return f"…/{name}" if name else "…"


def one_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def describe(errors: Any) -> str:
    """Pydantic's validation errors as one line a user can act on."""
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
        if error.get("type") == "extra_forbidden":
            parts.append(f"unknown option {where!r}")
        elif error.get("type") == "json_invalid":
            parts.append("the request body is not valid JSON")
        else:
            parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"
