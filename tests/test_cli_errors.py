"""One plain test per finding of the command-line harness (test_cli_fuzz.py): each used to end
in a traceback, a crash, a mangled message or silent damage, and now ends in one line that says
what to do."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from harmosearch.config import load_config
from harmosearch.errors import ConfigError, DataError, IndexStoreError, QueryError
from harmosearch.indexing import build_index, load_user_boxes
from harmosearch.search import Index
from harmosearch.store import IndexReader, build_faiss, check_index_type, faiss_reason, verify

from .conftest import TEST_MODEL, invoke

CONFIG = load_config(
    overrides={"encoder.model": TEST_MODEL, "encoder.device": "cpu", "index.workers": 0, "regions.max_regions": 8}
)


@pytest.fixture(scope="module")
def index(tmp_path_factory, scenes, test_encoder):
    path = tmp_path_factory.mktemp("errors") / "index"
    build_index(scenes / "images", path, CONFIG, encoder=test_encoder)
    return path


def one_error(args: list[str]) -> str:
    """Run `harmosearch ARGS`, expect exit 2 with exactly one line on stderr; return it."""
    outcome = invoke(args)
    assert outcome.code == 2, outcome.stderr
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), outcome.stderr
    return lines[0].removeprefix("error: ")


def index_args(scenes: Path, target: Path, *extra: str) -> list[str]:
    return ["index", str(scenes / "images"), "--index", str(target), "--model", TEST_MODEL, "--workers", "0", *extra]


def test_index_folder_below_a_file_or_in_a_link_loop(scenes, tmp_path):
    (tmp_path / "a file").write_text("x")
    os.symlink("loop", tmp_path / "loop")
    assert (
        one_error(index_args(scenes, tmp_path / "a file")) == f"--index {tmp_path / 'a file'} is a file; give a folder"
    )
    assert one_error(index_args(scenes, tmp_path / "a file" / "idx")) == (
        f"cannot create --index {tmp_path / 'a file' / 'idx'}: {tmp_path / 'a file'} is a file, not a folder"
    )
    assert one_error(index_args(scenes, tmp_path / "loop")) == f"--index {tmp_path / 'loop'}: a symbolic link loop"


def test_save_annotated_into_a_file(index, tmp_path):
    (tmp_path / "a file").write_text("x")
    message = one_error(["query", "red", "--index", str(index), "--save-annotated", str(tmp_path / "a file")])
    assert message == f"--save-annotated {tmp_path / 'a file'} is a file; give a folder"


def test_a_bad_date_is_named_before_options_that_do_not_go_together(scenes, index):
    """Found by the CLI fuzz: --min-score auto with --image is refused, but a bad --after on the
    same line is what the user must mend first, and the filters come first in a query."""
    image = str(next((scenes / "images").iterdir()))
    both = ["query", "red circle", "--index", str(index), "--min-score", "auto", "--image", image]
    assert one_error([*both, "--after", "2024-13"]) == "no such date: '2024-13'"
    assert one_error(both).startswith("--min-score auto does not apply to --image queries")


def test_an_index_faiss_cannot_search_is_one_line_with_the_rebuild(index, monkeypatch):
    import harmosearch.store

    def failing(*args, **kwargs):
        raise RuntimeError("Error in virtual void faiss::IndexIVF::search(...) at x.cpp:3: Error: 'nprobe > 0' failed")

    monkeypatch.setattr(harmosearch.store, "search_vectors", failing)
    message = one_error(["query", "red circle", "--index", str(index)])
    assert message.startswith("FAISS cannot search this index: FAISS's check nprobe > 0 failed; make another")
    assert message.endswith("--index INDEX --index-type SQfp16") and "--rebuild" not in message


@pytest.mark.parametrize(
    ("index_type", "reason"),
    [
        ("Bogus,Thing", "FAISS cannot parse it"),
        ("", "FAISS cannot parse it"),
        ("PQ7", "The dimension of the vector (d) should be a multiple of the number of subquantizers (M)"),
        ("LSH", "FAISS's check metric == METRIC_L2 failed"),
        ("IVF0,Flat", "an IVF index needs at least one list"),  # built and filled, it failed every search
        ("HNSW0", "FAISS crashed building it for 32-d vectors (SIGABRT)"),
        ("HNSW1", "FAISS crashed building it for 32-d vectors (SIGSEGV)"),
    ],
)
def test_bad_index_types_are_refused_in_words_without_crashing(index_type, reason):
    with pytest.raises(IndexStoreError) as caught:
        check_index_type(index_type, 32)
    message = str(caught.value)
    assert message.startswith(f"bad --index-type {index_type!r}: {reason}")
    assert "faiss::" not in message and ".cpp" not in message


STAND_IN_FAISS = """
METRIC_INNER_PRODUCT = 0


class Index:
    is_trained = True

    def add(self, vectors):
        pass

    def search(self, vectors, k):
        raise RuntimeError("Error in void faiss::Thing::search() at x.cpp:1: Error: 'searchable' failed")


def index_factory(dim, text, metric):
    return Index()


def try_extract_index_ivf(index):
    return None
"""


def test_an_index_type_that_holds_vectors_but_cannot_search_is_refused(tmp_path, monkeypatch):
    """The trial's last step, with a stand-in faiss in its child process (no real string is known
    to fail there since IVF0 is refused by its own check): built and filled, but no search."""
    (tmp_path / "faiss.py").write_text(STAND_IN_FAISS)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(IndexStoreError, match="bad --index-type 'Thing': FAISS's check searchable failed"):
        check_index_type("Thing", 32)


def test_a_bad_index_type_is_refused_before_anything_is_encoded(scenes, tmp_path):
    started = time.perf_counter()
    message = one_error(index_args(scenes, tmp_path / "idx", "--index-type", "Bogus,Thing"))
    assert message.startswith("bad --index-type 'Bogus,Thing': FAISS cannot parse it; give an index_factory string")
    assert not list((tmp_path / "idx").glob(".staging/chunk_*")) and not (tmp_path / "idx" / "manifest.json").exists()
    assert time.perf_counter() - started < 30


def test_a_bad_index_type_is_named_before_how_an_index_differs(scenes, tmp_path, test_encoder):
    """An update that asks for a bad index type and other region settings (found by the CLI
    fuzz): the error is the index type's, which the user can mend, not the rebuild advice."""
    config = load_config(overrides={"encoder.model": TEST_MODEL, "index.workers": 0})
    build_index(scenes / "images", tmp_path / "idx", config, encoder=test_encoder)
    bad = index_args(scenes, tmp_path / "idx", "--index-type", "Bogus,Thing", "--global-only")
    assert one_error(bad).startswith("bad --index-type 'Bogus,Thing': FAISS cannot parse it")
    assert "--rebuild" in one_error(index_args(scenes, tmp_path / "idx", "--global-only"))


@pytest.mark.parametrize(
    ("index_type", "reason"),
    [
        ("IDMap,Flat", "add does not make sense with IndexIDMap"),
        ("NSG32", "cannot build a graph smaller than 100"),
        ("PQ16", "Number of training points (8) should be at least as large as number of clusters (256)"),
    ],
)
def test_faiss_errors_while_building_are_translated(index_type, reason):
    vectors = np.random.default_rng(0).standard_normal((8, 32)).astype(np.float32)
    with pytest.raises(IndexStoreError, match=rf"^cannot build a FAISS {index_type!r} index of 8 vectors: ") as caught:
        build_faiss(vectors, index_type)
    assert reason in str(caught.value) and "faiss::" not in str(caught.value)


def test_faiss_reason_strips_the_cpp_location():
    raw = (
        "Error in void faiss::Foo::bar(int) [with T = int] at /project/faiss/Foo.cpp:64: "
        "Error: 'd > 0' failed: d must be positive"
    )
    assert faiss_reason(raw) == "d must be positive"
    assert faiss_reason("Error in f() at /x/y.cpp:1: Error: 'a == b' failed") == "FAISS's check a == b failed"


def test_messages_keep_their_brackets(scenes, index, tmp_path):
    """The console printed messages as rich markup: "[x0, y0, x1, y1]" vanished from the inverted
    box message, and a query holding "[/]" crashed the result table."""
    boxes = tmp_path / "boxes.json"
    boxes.write_text('{"000000.png": [[10, 10, 5, 20]]}')
    message = one_error(index_args(scenes, tmp_path / "idx", "--boxes", str(boxes)))
    assert message == (
        f"boxes file {boxes}: '000000.png' has [10.0, 10.0, 5.0, 20.0], which is not [x0, y0, x1, y1] of finite "
        "numbers with x1 > x0, y1 > y0"
    )
    outcome = invoke(["query", "red [bold]circle[/] [/]", "--index", str(index), "-k", "2"])
    assert outcome.code == 0 and "'red [bold]circle[/] [/]' in" in outcome.stdout


@pytest.mark.parametrize(
    ("bbox", "shown"),
    [("[1, 1, NaN, 9]", "[1, 1, nan, 9]"), ("[1, 1, -5, 9]", "[1, 1, -5, 9]"), ("[1, 1, 5, 0]", "[1, 1, 5, 0]")],
)
def test_coco_boxes_are_checked_like_json_boxes(tmp_path, bbox, shown):
    """A NaN COCO box used to reach the region pooling, which crashed the process."""
    path = tmp_path / "coco.json"
    annotation = f'{{"id": 4, "image_id": 1, "bbox": {bbox}}}'
    path.write_text(f'{{"images": [{{"id": 1, "file_name": "a.png"}}], "annotations": [{annotation}]}}')
    with pytest.raises(DataError) as caught:
        load_user_boxes(path)
    assert str(caught.value) == (
        f"boxes file {path}: annotation 4 of 'a.png' has bbox {shown}, which is not [x, y, w, h] of finite numbers "
        "with w > 0, h > 0"
    )


def test_bench_outputs_are_checked_before_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HARMOSEARCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "a file").write_text("x")
    (tmp_path / "a folder").mkdir()
    bench = ["bench", "--n", "2", "--model", TEST_MODEL, "--task", "retrieval"]
    folder = tmp_path / "a folder"
    assert one_error([*bench, "--record", str(folder)]) == (
        f"--record {folder} is a folder; give a file name, e.g. {folder / 'results.jsonl'}"
    )
    assert one_error([*bench, "--save-scores", str(tmp_path / "a file" / "s.npy")]) == (
        f"the folder of --save-scores {tmp_path / 'a file'} is a file; give a folder"
    )
    assert not (tmp_path / "cache").exists(), "the benchmark ran before its outputs were checked"
    # Only retrieval has score matrices: with other tasks the option would write nothing (the CLI fuzz).
    grounding = [*bench[:-1], "grounding", "--save-scores", str(tmp_path / "s.npy")]
    assert one_error(grounding) == "--save-scores writes the retrieval task's score matrices; add --task retrieval"
    pairs = [*bench[:-1], "compositional", "--objects", "small"]
    assert one_error(pairs).startswith("twin pairs have objects of the default sizes only")
    assert not (tmp_path / "cache" / "bench").exists(), "scenes were drawn before options that do not go together"
    assert "'nope'" in one_error([*pairs, "--model", "nope"])  # a single option's fault first
    assert one_error([*grounding, "--dataset", "flickr30k"]).startswith("--dataset flickr30k")  # named first
    assert "'nope'" in one_error([*grounding, "--model", "nope"])  # so is a model that cannot load
    outcome = invoke([*bench, "--save-scores", str(tmp_path / "new" / "s.npy"), "--json"])
    assert outcome.code == 0 and (tmp_path / "new" / "s.global.npy").is_file()


def test_bench_scene_counts_out_of_range(tmp_path, monkeypatch):
    monkeypatch.setenv("HARMOSEARCH_CACHE", str(tmp_path / "cache"))
    for n in ("0", "99999999999999999999"):
        assert (
            one_error(["bench", "--n", n, "--model", TEST_MODEL]) == f"--n must lie in [2, 1,000,000] scenes, got {n}"
        )


def test_train_errors_come_before_any_progress_bar(scenes, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "a file").write_text("x")
    train = ["train", "--model", TEST_MODEL, "--batch-size", "2", "--max-steps", "1", "--workers", "0"]
    assert one_error([*train, "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "run")]).startswith(
        f"{tmp_path / 'empty'} is not a training set harmosearch knows"
    )
    assert one_error([*train, "--data", str(scenes), "--out", str(tmp_path / "a file")]) == (
        f"--out {tmp_path / 'a file'} is a file; give a folder"
    )


def test_a_diverging_training_run_stops_instead_of_writing_a_broken_model(scenes, tmp_path, monkeypatch):
    from harmosearch.train import losses

    # A loss that overflows (the weights that once made it, 1e300, are refused now: at most 1000).
    real = losses.GlobalContrastive.forward
    monkeypatch.setattr(losses.GlobalContrastive, "forward", lambda self, *a: {"gc": real(self, *a)["gc"] * 1e39})
    args = ["train", "--data", str(scenes), "--out", str(tmp_path / "run"), "--model", TEST_MODEL]
    args += ["--batch-size", "2", "--max-steps", "2", "--workers", "0"]
    assert one_error(args).startswith("training diverged at step 1: the loss is inf; lower --lr or the loss weights")
    assert not (tmp_path / "run" / "final").exists()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        # torch.manual_seed overflowed
        ("train.seed", 2**64, "train.seed must lie in [0, 4294967295], got 18446744073709551616"),
        ("synth.seed", -1, "synth.seed must lie in [0, 4294967295], got -1"),
        ("train.lr", 1e300, "train.lr must lie in (0, 1], got 1e+300"),  # AdamW failed converting the step size
        # the job list exhausted memory
        ("synth.n", 10**20, "synth.n must lie in [0, 1000000], got 100000000000000000000"),
        # forked until memory ran out
        ("index.workers", 10**14, "index.workers must lie in [0, 64], got 100000000000000"),
        ("train.workers", 65, "train.workers must lie in [0, 64], got 65"),
    ],
)
def test_values_that_crashed_or_exhausted_the_machine_are_refused(key, value, message):
    with pytest.raises(ConfigError) as caught:
        load_config(overrides={key: value})
    assert str(caught.value) == message


def test_synth_workers_are_bounded(tmp_path):
    outcome = invoke(["synth", str(tmp_path / "s"), "--workers", "99999999999999"])
    assert outcome.code == 2 and "--workers" in outcome.stderr and "Traceback" not in outcome.stderr


def test_a_huge_min_score_gives_no_results_and_no_numpy_warning(index, test_encoder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Index(index, encoder=test_encoder).search("red", min_score=1e308).results == []


def test_config_errors_name_the_file_and_info_reads_it(index, tmp_path):
    """`info INDEX` ignored --config entirely, and errors inside a file did not say which file."""
    toml = tmp_path / "c.toml"
    toml.write_text("[search]\nkk = 3\n")
    assert one_error(["--config", str(toml), "info", str(index)]).startswith(
        f"config file {toml}: unknown config key 'search.kk'"
    )


def test_names_too_long_for_the_file_system(scenes, tmp_path):
    """pathlib raises for a name longer than the file system allows instead of answering False."""
    long = "x" * 5000
    assert one_error(["index", long]) == f"PHOTOS {long}: the name is too long for the file system"
    assert one_error(index_args(scenes, tmp_path / "idx", "--model", long)).startswith(
        f"model {long!r} names no weights"
    )
    assert one_error(["bench", "--dataset", long, "--model", TEST_MODEL]).startswith(f"unknown dataset {long!r}")


def test_query_text_that_is_not_utf8(index, test_encoder):
    """Undecodable bytes went into the tokenizer and, raw, into --json output."""
    with pytest.raises(QueryError, match="is not valid UTF-8 text"):
        Index(index, encoder=test_encoder).search("caf\udce9")
    with pytest.raises(QueryError, match="is not valid UTF-8 text"):
        Index(index, encoder=test_encoder).search("red", negatives=("caf\udce9",))


def test_an_index_in_a_folder_whose_name_is_not_utf8(scenes, tmp_path, test_encoder):
    """Arrow and FAISS took the index's paths as UTF-8 and failed on such a folder."""
    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9"))
    build_index(scenes / "images", folder, CONFIG, encoder=test_encoder)
    assert verify(folder) == [] and IndexReader(folder).n_images == 12
    assert len(Index(folder, encoder=test_encoder).search("red", k=3).results) == 3


def test_control_characters_in_paths_stay_on_one_line(scenes, tmp_path):
    message = one_error(["index", str(tmp_path / "new\nline\x1b[31m"), "--index", str(tmp_path / "idx")])
    assert message == f"photo folder not found: {tmp_path}/new\\nline\\x1b[31m"


def test_an_unreadable_vocabulary_file(index, tmp_path):
    """search.vocabulary names a file of rival phrases; a missing one is one line, exit 2."""
    config = tmp_path / "rivals.toml"
    config.write_text(f'[search]\nvocabulary = "{tmp_path / "missing.txt"}"\ncontrast = 0.3\n')
    message = one_error(["--config", str(config), "query", "red circle", "--index", str(index)])
    assert message.startswith(f"search.vocabulary: cannot read {tmp_path / 'missing.txt'}: ")
    config.write_text('[search]\nvocabulary = "  "\n')
    assert one_error(["--config", str(config), "query", "red circle", "--index", str(index)]) == (
        f"config file {config}: search.vocabulary must be "
        '"everyday", "trained", "none" or a file of phrases, one per line'
    )


def test_a_data_dir_below_a_file_is_refused_whatever_the_dataset(scenes, tmp_path):
    """Found by the CLI fuzz (one run in a few): with a scene folder as --dataset, which does not
    use --data-dir, a --data-dir below a file passed unnoticed and the bench ran."""
    (tmp_path / "a file").write_text("x")
    below = tmp_path / "a file" / "below"
    bench = ["bench", "--dataset", str(scenes), "--model", TEST_MODEL, "--n", "2", "--task", "retrieval"]
    expected = f"cannot create --data-dir {below}: {tmp_path / 'a file'} is a file, not a folder"
    assert one_error([*bench, "--data-dir", str(below)]) == expected
    assert one_error([*bench, "--data-dir", str(tmp_path / "a file")]) == (
        f"--data-dir {tmp_path / 'a file'} is a file; give a folder"
    )
