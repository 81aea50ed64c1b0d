"""Benchmark tables of what things cost: indexing, the CPU paths and their fidelity, detail,
search latency, vector search, queries, start-up and training (see gen_benchmarks)."""

from __future__ import annotations

from typing import Any

from gen_quality import detail_figures
from gen_records import (
    NONE,
    SPEED_MODEL,
    Record,
    get,
    latest,
    ms,
    named,
    number,
    of_bundled,
    on_cpu,
    pct,
    per_1000,
    table,
)


def indexing() -> str:
    """Images per second, end to end, by model and machine."""
    default_model = latest("footprint.jsonl")
    rows = []
    if default_model:
        d = default_model.data
        rows.append(
            [
                "ViT-B-16 (the default model's architecture), 320 px scenes",
                f"{d['cores']} CPU cores, load average {d['load_average_after'][0]:.0f}",
                number(d["images_per_s"], 2),
                per_1000(d["images_per_s"]),
                default_model.name,
            ]
        )
    for fmt in ("png", "jpg"):
        found = latest(
            "encode.jsonl",
            lambda r, fmt=fmt: on_cpu(r) and r.data.get("format") == fmt and r.data.get("model") == SPEED_MODEL,
        )
        rate = get(found, "images_per_s", "end-to-end build_index")
        without_trust = get(found, "images_per_s", "end-to-end build_index, region trust taken out")
        cores = get(found, "machine", "cpus")
        rows.append(
            [
                f"harmo-tiny, 224 px {fmt.upper()} scenes",
                f"{cores} CPU cores"
                + (f", load average {load[0]:.0f}" if (load := get(found, "load_average_before")) else ""),
                number(rate or without_trust),
                per_1000(rate or without_trust),
                named(found) + ("" if rate or found is None else " (per photo: region trust, a fixed cost, left out)"),
            ]
        )
    gpu = latest("encode.jsonl", lambda r: not on_cpu(r) and r.data.get("model") == SPEED_MODEL)
    rate = get(gpu, "images_per_s", "end-to-end build_index")
    rows.append(
        [
            "harmo-tiny, 224 px PNG scenes",
            str(get(gpu, "machine", "cuda")),
            number(rate),
            per_1000(rate),
            named(gpu),
        ]
    )
    return table(["model, pictures", "machine", "images/s, end to end", "1,000 pictures", "record"], rows)


def detail_cost() -> str:
    """What --detail high and --refine cost with the bundled model."""
    found = latest("small_objects_cost.jsonl")
    d = found.data if found else {}
    rows = []
    for detail in ("normal", "high"):
        queries = (d.get("query_seconds") or {}).get(detail) or {}
        rows.append(
            [
                f"`--detail {detail}`",
                number((d.get("regions_over_global_time") or {}).get(detail), 2),
                number((d.get("regions_per_image") or {}).get(detail)),
                number((d.get("index_bytes_per_image") or {}).get(detail, 0) / 1024),
                ms(queries.get("off")),
                ms(queries.get("1.5")),
                named(found),
            ]
        )
    header = [
        "harmo-tiny, 2 CPU cores",
        "indexing time over `--global-only`",
        "regions per image",
        "KiB per image",
        "ms per query",
        "ms per query with `--refine`",
        "record",
    ]
    return table(header, rows)


def search_latency() -> str:
    """Warm Index.search over a million region vectors, at the region counts per image of today's
    normal and high detail (the detail-cost record)."""
    counts = get(latest("small_objects_cost.jsonl"), "regions_per_image") or {}
    rows = []
    for detail, per_image in sorted(counts.items(), key=lambda item: item[1]):
        wanted = round(per_image)
        found = latest("search.jsonl", lambda r, w=wanted: get(r, "end_to_end", "regions_per_image") == w)
        e2e = get(found, "end_to_end") or {}
        rows.append(
            [
                f"{e2e.get('n_regions', 0):,}",
                f"{wanted} (`--detail {detail}`)",
                (e2e.get("index_types") or {}).get("regions", NONE),
                number(e2e.get("p50_ms")),
                number(e2e.get("p95_ms")),
                number(e2e.get("relations_over_no_relations"), 2),
                named(found),
            ]
        )
    header = ["region vectors", "per image", "FAISS index", "p50 ms", "p95 ms", "relations / none", "record"]
    return table(header, rows)


def vector_search() -> str:
    """FAISS and numpy searches of one query at 1M 512-d vectors: latency, recall, bytes."""
    found = latest("search.jsonl", lambda r: any(row["n"] == 1_000_000 for row in r.data["rows"]))
    rows = [
        [
            row["method"],
            number(row["p50_ms"], 2),
            number(row["p95_ms"], 2),
            number(row["recall@10"], 3),
            number(row["bytes_per_vector"], 0),
        ]
        for row in (found.data["rows"] if found else [])
        if row["n"] == 1_000_000
    ]
    note = f"\n\nRecord: {named(found)}; vectors of {found.data['rows'][0]['dim']} dimensions." if found else ""
    return table(["1,000,000 vectors", "p50 ms", "p95 ms", "recall@10", "bytes per vector"], rows) + note


def query_costs() -> str:
    """The rivals, and queries through a running server."""
    rivals = latest("contrast_cost.jsonl")
    served = latest("serve.jsonl")
    median = get(rivals, "median_ms") or {}
    ratio = get(rivals, "over_off") or {}
    warm = get(served, "warm_ms") or {}
    kinds = (
        ("off", "off"),
        ("the model's own 48 (`trained`)", "own"),
        ("everyday, ~1,500 (the default)", "everyday"),
        ("everyday, every region of an image weighed", "everyday, every region"),
        ("a file of 4,096", "file 4096"),
    )
    rows = [
        [f"rivals: {name}", number(median.get(key)), f"{ratio[key]:.2f}x" if key in ratio else NONE, named(rivals)]
        for name, key in kinds
        if key in median
    ]
    rows += [
        [f"demo index: {name}", number((warm.get(key) or {}).get("p50")), NONE, named(served)]
        for name, key in (("in-process", "in-process"), ("through `harmosearch serve` (HTTP)", "http, client"))
    ]
    return table(["warm query", "p50 ms", "over no rivals", "record"], rows)


def startup() -> str:
    """How long `--help` takes against the interpreter's own start (benchmarks/startup.py)."""
    found = latest("startup.jsonl")
    wall, cpu = get(found, "median_wall_s") or {}, get(found, "median_cpu_s") or {}
    rows = [[f"`{name}`", number(wall.get(name), 3), number(cpu.get(name), 3), named(found)] for name in wall]
    heavy = get(found, "heavy_imports")
    note = "" if heavy is None else f"\n\nHeavy modules imported by `--help`: {', '.join(heavy) or 'none'}."
    return table(["command", "wall (s)", "CPU (s)", "record"], rows) + note


def query_threads() -> str:
    """A warm query at one thread per OpenMP and BLAS pool (the default) against the pools as
    they are (benchmarks/query_threads.py)."""
    found = latest("query_threads.jsonl")
    one, own = "one thread per pool", "pools as they are"
    rows = [
        [f"{query!r}", number(times.get(one)), number(times.get(own)), named(found)]
        for query, times in (get(found, "median_ms_per_query") or {}).items()
    ]
    ratio = get(found, "own_counts_over_one")
    note = f"\n\nThe pools as they are: {ratio:.2f}x the time at one thread each (paired over rounds)." if ratio else ""
    return table(["warm query", f"{one} (ms)", f"{own} (ms)", "record"], rows) + note


def training() -> str:
    rows = []
    for where, fits in (("CPU", on_cpu), ("GPU", lambda r: not on_cpu(r))):
        found = latest("train_step.jsonl", fits)
        for losses, seconds in (get(found, "seconds_per_step") or {}).items():
            batch = get(found, "batch")
            label = losses.replace("+", " + ").replace("(a)", " (caption)").replace("(b)", " (crop)")
            rows.append([where, label, ms(seconds), number(batch / seconds, 0), named(found)])
    return table(["device", "losses (batch 64, harmo-tiny-vit)", "ms per step", "samples/s", "record"], rows)


def cpu_runtime_record() -> Record | None:
    """The latest record of benchmarks/cpu_runtime.py that compares the default path with fp32."""
    return latest(
        "cpu_runtime.jsonl",
        lambda r: "fp32 (torch)" in r.data["images_per_s"] and "default" in r.data["settings"],
    )


def features_in_words(features: list[str], probe: float | None = None) -> str:
    """What a record's CPU does natively, and the int8 probe's speed-up where it measured one."""
    words = {"bf16": "native bf16", "vnni": "VNNI"}
    found = [words[f] for f in features if f in words]
    said = " and ".join(found) if found else "neither native bf16 nor VNNI"
    return said if probe is None or "vnni" in features else f"{said} (int8 measured {probe:.2f}× fp32 by its probe)"


def emulated_bf16(d: dict[str, Any], path: str) -> bool:
    return path.startswith("bf16") and "bf16" not in d["cpu_features"] and bool(d.get("emulated_images"))


def cpu_paths() -> str:
    """Indexing speed and fidelity of each CPU inference path, on one CPU in one run."""
    found = cpu_runtime_record()
    if found is None:
        return "not measured"
    d = found.data
    rows = []
    for path, rate in d["images_per_s"].items():
        fidelity = d["fidelity_to_fp32"][path]
        taken_by = [f"`{name}`" for name, resolved in d["settings"].items() if resolved == path]
        emulated = emulated_bf16(d, path)
        regions = fidelity["region_cosine"]
        rows.append(
            [
                path + (" (emulated: no native bf16)" if emulated else ""),
                f"{rate:.2f} ({d['emulated_images'] if emulated else d['images']} photos)",
                number((d.get("images_per_s_whole_build") or {}).get(path), 2),
                f"{d['speed_over_fp32'][path]:.2f}×",
                f"{fidelity['global_cosine']:.4f}",
                f"{regions:.4f}" if regions == regions else "– (other regions)",
                ", ".join(taken_by),
            ]
        )
    cpu = f"{d['machine']['cpus']} CPU cores with {features_in_words(d['cpu_features'], d.get('int8_probe'))}"
    load = d.get("load_average_before")
    cpu += f", load average {load[0]:.0f}" if load else ""
    header = [
        "path",
        "images/s per photo",
        "images/s, whole build",
        "over fp32",
        "cosine to fp32: global",
        "regions",
        "settings that take it",
    ]
    if d.get("trust_skipped_in_rounds"):
        note = (
            "\n\nImages/s per photo: builds without their region trust measurement, a fixed cost per build "
            "(boxes of up to 128 pictures encoded, whatever the library's size)."
        )
    elif "per_image" in d:
        note = (
            "\n\nImages/s per photo: the build's own time less its region trust measurement, a fixed cost "
            "per build (boxes of up to 128 pictures encoded, whatever the library's size); the whole build's rate "
            "beside."
        )
    else:
        note = ""
    high = d["settings"].get("default, high detail")
    if high in d["speed_over_fp32"]:
        note += (
            f" At `--detail high` along this CPU's default path a photo takes {1 / d['speed_over_fp32'][high]:.1f}× "
            "its time at the default detail in fp32; issue #32 makes high detail the default only where it costs "
            "no more than that, so the default detail stays normal."
        )
    return f"{d['model']} on {cpu}, record {found.name}:\n\n" + table(header, rows) + note


def cpu_fidelity() -> str:
    """Today's bundled model's bench on test scenes along each CPU path (its latest record each)."""
    rows = []
    for precision in ("fp32", "bf16", "int8"):
        found = latest(
            "bench_cpu_paths.jsonl",
            lambda r, p=precision: of_bundled(r) and (r.data.get("model") or {}).get("precision") == p,
        )
        if found is None:
            continue
        modes = get(found, "tasks", "retrieval", "modes") or {}
        rows.append(
            [
                f"{precision} ({found.data['model']['runtime']})",
                *(pct((modes.get(mode) or {}).get("t2i_R@1")) for mode in ("global", "fused", "relations")),
                pct((modes.get("fused") or {}).get("i2t_R@1")),
                pct(get(found, "tasks", "search", "P@5")),
                pct(get(found, "tasks", "grounding", "accuracy")),
                found.name,
            ]
        )
    header = ["path", "R@1 global", "R@1 fused", "R@1 relations", "image→text R@1 fused", "phrase P@5", "grounding"]
    return table([*header, "record"], rows)


def cpu_paths_sentence() -> str:
    """The README's sentence on the CPU paths' speeds, from the latest cpu_runtime record."""
    found = cpu_runtime_record()
    if found is None:
        return NONE
    d = found.data
    default = d["settings"].get("default", "fp32 (torch)")
    rates, ratios, fp32 = d["images_per_s"], d["speed_over_fp32"], d["images_per_s"]["fp32 (torch)"]
    bf16 = next((p for p in rates if p.startswith("bf16")), None)
    if bf16 is not None and not emulated_bf16(d, bf16):
        bf16_words = f", {rates[bf16]:.2f} in bf16 ({ratios[bf16]:.2f}×)"
    else:
        bf16_words = "; bf16 is not measurable here, for want of native bf16"
    high = d["settings"].get("default, high detail")
    high_words = f", and {rates[high]:.2f} at `--detail high` ({ratios[high]:.2f}×)" if high in rates else ""
    if d.get("trust_skipped_in_rounds"):
        per_photo = "per photo: builds without their region trust measurement, a fixed cost per build; "
    elif "per_image" in d:
        per_photo = "per photo: the fixed cost of a build's region trust taken out; "
    else:
        per_photo = ""
    cpu = features_in_words(d["cpu_features"], d.get("int8_probe"))
    return (
        f"On {d['machine']['cpus']} CPU cores with {cpu}, {d['model']} indexed "
        f"synthetic JPEG scenes at {rates[default]:.2f} photos/s along this CPU's default path, {default}, against "
        f"{fp32:.2f} in fp32 ({ratios[default]:.2f}×){high_words}{bf16_words} ({per_photo}record "
        f"`cpu_runtime.jsonl` {d['time']})"
    )


def detail_sentence() -> str:
    """The README's sentence on what high detail costs and buys, beside the default detail."""
    found = cpu_runtime_record()
    high = get(found, "settings", "default, high detail")
    if found is None or high is None:
        return NONE
    d = found.data
    cost = d["speed_over_fp32"][d["settings"]["default"]] / d["speed_over_fp32"][high]
    normal, fine = detail_figures("normal"), detail_figures("high")
    return (
        f"`--detail high` takes {cost:.1f}× the default detail's indexing time per photo (ViT-B-16 along this "
        f"CPU's default path, record `cpu_runtime.jsonl` {d['time']}) for small objects P@5 {fine['small P@5']} "
        f"against {normal['small P@5']}, phrase search P@5 {fine['P@5']} against {normal['P@5']} and box fits "
        f"{fine['grounding']} against {normal['grounding']}"
    )


def minutes_per_1000_photos() -> str:
    """The README's time per 1,000 photos for the default model's architecture on a CPU, along
    this CPU's default path, from the CPU paths' record."""
    found = cpu_runtime_record()
    return per_1000(found.data["images_per_s"][found.data["settings"]["default"]]) if found else NONE
