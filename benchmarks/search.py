"""Search latency, ANN recall and memory per vector, at 10k / 100k / 1M clustered vectors.

    python benchmarks/search.py [--sizes 10000,100000,1000000] [--dim 512] [--queries 200]

For every size: numpy brute force (a matrix-vector scan, as rclip searches), FAISS Flat for one
query and for a batch of 3 lexemes in one call, harmosearch's single-query search of the same Flat
index (one BLAS product over FAISS's storage), HNSW32, IVF + Flat, IVF + SQ8 and SQfp16 (the
exact index harmosearch picks by default, lossless for its float16 vectors);
p50/p95 latency per query, recall@10 against exact search, bytes per stored vector. Then the
end-to-end latency of a warm `Index.search` (text encoding, search, fusion, metadata) over an
index holding the largest number of regions. Results are appended to benchmarks/results/search.jsonl
and plotted to benchmarks/results/search.png.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, append_result

from harmosearch.store import search_vectors


def clustered(n: int, dim: int, rng: np.random.Generator, clusters: int = 2000) -> np.ndarray:
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    out = np.empty((n, dim), np.float32)
    for lo in range(0, n, 100_000):
        hi = min(n, lo + 100_000)
        out[lo:hi] = centres[rng.integers(clusters, size=hi - lo)] + 0.6 * rng.standard_normal(
            (hi - lo, dim), dtype=np.float32
        )
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def queries_near(data: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    picks = data[rng.integers(len(data), size=count)]
    q = picks + 0.3 * rng.standard_normal(picks.shape, dtype=np.float32) / np.sqrt(data.shape[1])
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def latencies(fn, queries: np.ndarray) -> list[float]:
    out = []
    for q in queries:
        start = time.perf_counter()
        fn(q)
        out.append(time.perf_counter() - start)
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def index_bytes(index) -> int:
    return len(faiss.serialize_index(index))


def run_size(n: int, dim: int, n_queries: int, rng: np.random.Generator, hnsw_max: int) -> list[dict]:
    # harmosearch stores float16 vectors; every method searches the same float16-exact values.
    data = clustered(n, dim, rng).astype(np.float16).astype(np.float32)
    queries = queries_near(data, n_queries, rng)
    flat = faiss.IndexFlatIP(dim)
    flat.add(data)
    _, truth = flat.search(queries, 10)  # batched: FAISS's BLAS path, the exact reference
    rows = []

    def numpy_scan(q):
        scores = data @ q
        top = np.argpartition(-scores, 10)[:10]
        return top[np.argsort(-scores[top])]

    lat = latencies(numpy_scan, queries)
    rows.append(
        {
            "method": "numpy scan",
            "latencies": lat,
            "recall@10": recall([numpy_scan(q) for q in queries[:50]], truth[:50]),
            "bytes_per_vector": 4 * dim,
        }
    )
    lat = latencies(lambda q: flat.search(q[None], 10), queries)
    rows.append({"method": "faiss Flat", "latencies": lat, "recall@10": 1.0, "bytes_per_vector": index_bytes(flat) / n})
    triples = queries[: (len(queries) // 3) * 3].reshape(-1, 3, dim)
    lat = [t / 3 for t in latencies(lambda q3: flat.search(q3, 10), triples)]
    rows.append(
        {
            "method": "faiss Flat, 3 lexemes per call",
            "latencies": lat,
            "recall@10": 1.0,
            "bytes_per_vector": index_bytes(flat) / n,
        }
    )
    # harmosearch's search of a Flat index: one query is one BLAS matrix-vector product.
    lat = latencies(lambda q: search_vectors(flat, q[None], 10), queries)
    _, found = search_vectors(flat, queries, 10)
    rows.append(
        {
            "method": "harmosearch Flat (BLAS scan)",
            "latencies": lat,
            "recall@10": recall(found, truth),
            "bytes_per_vector": index_bytes(flat) / n,
        }
    )
    rows += factory_rows(data, queries, truth, rng, hnsw_max)
    for row in rows:
        lat = np.array(row.pop("latencies")) * 1000
        row.update(
            {"n": n, "dim": dim, "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95))}
        )
    return rows


def factory_rows(
    data: np.ndarray, queries: np.ndarray, truth: np.ndarray, rng: np.random.Generator, hnsw_max: int
) -> list[dict]:
    """Latencies, recall@10, size and build time of the approximate FAISS indexes over `data`."""
    n, dim = data.shape
    rows = []
    nlist = max(16, int(4 * np.sqrt(n)))
    train = data[rng.choice(n, size=min(n, 60 * nlist), replace=False)]
    specs = [(f"IVF{nlist},Flat", {"nprobe": 16}), (f"IVF{nlist},SQ8", {"nprobe": 16}), ("SQfp16", {})]
    # SQfp16 is harmosearch's auto exact index: lossless for float16 vectors.
    if n <= hnsw_max:
        specs.insert(0, ("HNSW32", {"efSearch": 64}))
    for spec, params in specs:
        start = time.perf_counter()
        index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            index.train(train)
        index.add(data)
        build = time.perf_counter() - start
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.nprobe = params["nprobe"]
        if "efSearch" in params:
            index.hnsw.efSearch = params["efSearch"]
        lat = latencies(lambda q, index=index: index.search(q[None], 10), queries)
        _, found = index.search(queries, 10)
        rows.append(
            {
                "method": f"faiss {spec}" + (f" nprobe {params['nprobe']}" if "nprobe" in params else ""),
                "latencies": lat,
                "recall@10": recall(found, truth),
                "bytes_per_vector": index_bytes(index) / n,
                "build_s": build,
            }
        )
    return rows


def random_index(
    work: Path, n_regions: int, encoder: Any, config: Any, rng: np.random.Generator, per_image: int
) -> tuple[dict, float]:
    """An index at WORK/idx of n_regions clustered random region vectors in the encoder's space,
    per_image to an image: (its manifest, seconds to write it)."""
    from harmosearch.store import IndexData, write_generation

    dim = encoder.identity.embed_dim
    n_images = n_regions // per_image
    regions = clustered(n_images * per_image, dim, rng)
    image_ids = np.repeat(np.arange(n_images, dtype=np.int32), per_image)
    boxes = rng.uniform(0, 100, size=(len(image_ids), 4)).astype(np.float32)
    boxes[:, 2:] += boxes[:, :2]
    data = IndexData(
        images={
            "path": np.array([f"img{i:07d}.jpg" for i in range(n_images)], dtype=object),
            "size": np.ones(n_images, np.int64),
            "mtime_ns": np.ones(n_images, np.int64),
            "sha256": np.array([str(i) for i in range(n_images)], dtype=object),
            "width": np.full(n_images, 224, np.int32),
            "height": np.full(n_images, 224, np.int32),
        },
        regions={
            "image_id": image_ids,
            "x0": boxes[:, 0],
            "y0": boxes[:, 1],
            "x1": boxes[:, 2],
            "y1": boxes[:, 3],
            "nx0": boxes[:, 0] / 224,
            "ny0": boxes[:, 1] / 224,
            "nx1": boxes[:, 2] / 224,
            "ny1": boxes[:, 3] / 224,
            "scale": np.full(len(image_ids), 0.5, np.float32),
        },
        global_vectors=regions[::per_image].copy(),
        region_vectors=regions,
    )
    start = time.perf_counter()
    manifest = write_generation(work / "idx", data, encoder.identity.to_dict(), config.to_dict(), "auto", work, None)
    return manifest, time.perf_counter() - start


def end_to_end(n_regions: int, model: str, rng: np.random.Generator, per_image: int = 48) -> dict:
    """Warm Index.search over an index of n_regions random region vectors in the model's space,
    per_image regions to an image (31 at --detail normal on the small-object scenes, 76 at high)."""
    from harmosearch.config import load_config
    from harmosearch.model.encoder import load_encoder
    from harmosearch.search import Index

    config = load_config(overrides={"encoder.model": model, "encoder.device": "cpu"})
    encoder = load_encoder(config)
    work = Path(tempfile.mkdtemp(prefix="harmosearch-search-"))
    try:
        manifest, build = random_index(work, n_regions, encoder, config, rng, per_image)
        n_images = n_regions // per_image
        index = Index(work / "idx", config, encoder=encoder)
        queries = [
            "red circle",
            "small blue star to the left of a white ring",
            "yellow square above a green cross",
        ] * 20
        index.search(queries[0])
        lat = np.array(latencies(lambda q: index.search(str(q), k=10), np.array(queries, dtype=object))) * 1000
        # Relation queries with and without their relations, alternating, so both see the same load.
        relational = ["small blue star to the left of a white ring", "yellow square above a green cross"] * 30
        with_rel, without_rel = [], []
        for q in relational:
            for use, times in ((True, with_rel), (False, without_rel)):
                start = time.perf_counter()
                index.search(q, k=10, relations=use)
                times.append((time.perf_counter() - start) * 1000)
        ratio = float(np.median(np.array(with_rel) / np.array(without_rel)))
        return {
            "n_regions": n_images * per_image,
            "n_images": n_images,
            "regions_per_image": per_image,
            "dim": encoder.identity.embed_dim,
            "index_types": manifest["index_types"],
            "build_s": build,
            "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)),
            "relation_queries_p50_ms": float(np.percentile(with_rel, 50)),
            "relation_queries_without_relations_p50_ms": float(np.percentile(without_rel, 50)),
            "relations_over_no_relations": ratio,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def plot(rows: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for method in dict.fromkeys(r["method"].split(" nprobe")[0].replace(str(r.get("nlist", "")), "") for r in rows):
        pts = [(r["n"], r["p50_ms"]) for r in rows if r["method"].split(" nprobe")[0] == method]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=method)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("stored region vectors")
    ax.set_ylabel("p50 latency per query (ms)")
    ax.set_title("harmosearch: search latency (one query, 2 CPU threads)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--hnsw-max", type=int, default=100_000, help="skip HNSW (slow to build here) above this")
    parser.add_argument("--model", default="harmo-tiny")
    parser.add_argument("--e2e-regions", type=int, default=1_000_000)
    parser.add_argument("--regions-per-image", type=int, default=48, help="of the end-to-end index")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        for row in run_size(n, args.dim, args.queries, rng, args.hnsw_max):
            rows.append(row)
            print(
                f"n={n:>8} {row['method']:34s} p50 {row['p50_ms']:8.3f} ms  p95 {row['p95_ms']:8.3f} ms  "
                f"recall@10 {row['recall@10']:.3f}  {row['bytes_per_vector']:7.1f} B/vector"
            )
    for n in dict.fromkeys(r["n"] for r in rows):
        p50 = {r["method"]: r["p50_ms"] for r in rows if r["n"] == n}
        scan = p50["numpy scan"]
        print(
            f"n={n:>8} exact search / numpy scan (goal <= 1): SQfp16 (auto) {p50['faiss SQfp16'] / scan:.2f}, "
            f"Flat {p50['harmosearch Flat (BLAS scan)'] / scan:.2f}; plain faiss Flat {p50['faiss Flat'] / scan:.2f}"
        )
    e2e = end_to_end(args.e2e_regions, args.model, rng, args.regions_per_image) if args.e2e_regions else None
    if e2e:
        print(
            f"end-to-end warm query over {e2e['n_regions']:,} regions ({e2e['index_types']}): "
            f"p50 {e2e['p50_ms']:.1f} ms, p95 {e2e['p95_ms']:.1f} ms"
        )
        print(
            f"relation queries: p50 {e2e['relation_queries_p50_ms']:.1f} ms with relations, "
            f"{e2e['relation_queries_without_relations_p50_ms']:.1f} ms without; paired ratio "
            f"{e2e['relations_over_no_relations']:.3f} (goal <= 1.2)"
        )
    path = append_result("search", {"rows": rows, "end_to_end": e2e})
    RESULTS.mkdir(exist_ok=True)
    plot(rows, RESULTS / "search.png")
    print(f"appended to {path}; plot: {RESULTS / 'search.png'}")


if __name__ == "__main__":
    main()
