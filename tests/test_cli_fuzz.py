"""The whole command line under hostile input: every command and option, drawn by hypothesis.

Each example runs `harmosearch.cli.main` in this process (loading the tiny test model is the slow
part, about half a second) against a small prebuilt index and scene folder. Whatever the
arguments, a command ends with exit code 0 or 2 (never 1, an internal error), with no traceback
and no Python warning, and a failure is one line, the last, that names the argument it is
about. Typer's own usage errors ("Usage:" and the reason) are accepted as they are, with exit code 2.

Values come from small fixed menus per option (tests/fuzz_menus.py): valid ones, hostile ones
and odd ones. A hostile value must be refused: exit 2, with an error (or Typer's usage box) that
names a hostile argument of the line, not just any. An odd value may be taken or refused.
Hostile and odd values are paths (missing, a file where a folder belongs and the reverse, a
symbolic link loop, a dangling link, a path below a file, names with spaces, newlines or bytes
that are not UTF-8, a name too long for the file system, a folder that cannot be written),
numbers (0, negative, huge, NaN, inf, not a number) and strings (empty, 10,000 characters, other
scripts, markup, control characters). Valid values are kept small (a few scenes, one training
step), so that every example ends in about a second. A folder that cannot be written is made
read-only and, since root writes anywhere (and CI runs as root), the refusal the kernel gives
other users is simulated in the process (conftest.deny_writes). `serve` is fuzzed up to binding
its port, which is always taken, so every example must be refused and none serves.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from harmosearch import cli
from harmosearch.cli.core import line
from harmosearch.config import ENVIRONMENT, SynthConfig, load_config
from harmosearch.indexing import build_index
from harmosearch.synth import generate

from .conftest import TEST_MODEL, Outcome, invoke
from .fuzz_menus import CONFIGS, FLAG, HUGE, MENUS, PATHS, Opt

COMMANDS = ("synth", "index", "query", "info", "bench", "train", "demo", "dupes", "serve")
WORDS = {  # what an error about an option may call it besides its flag
    "--n": ("synth.n",),
    "--seed": ("synth.seed", "train.seed"),
    "--size": ("synth.size",),
    "--workers": ("index.workers", "train.workers"),
    "--batch-size": ("encoder.batch_size", "train.batch_size", "batch"),
    "-k": ("search.k",),
    "--alpha": ("search.alpha", "search.phrase_alpha"),
    "--min-score": ("search.min_score",),
    "--lr": ("train.lr",),
    "--epochs": ("train.epochs",),
    "--max-steps": ("train.max_steps",),
    "--checkpoint-every": ("train.checkpoint_every",),
    "--losses": ("train.losses",),
    "--weights": ("weight",),
    "--gr-variant": ("train.gr_variant",),
    "--lexeme-source": ("train.lexeme_source",),
    "--lexeme-mode": ("encoder.lexeme_mode",),
    "--match": ("train.match",),
    "--device": ("device",),
    "--model": ("model",),
    "--index-type": ("index type",),
    "--task": ("task",),
    "--mode": ("mode",),
    "--split": ("split",),
    "--dataset": ("dataset",),
    "--not": ("query",),
    "--image": ("query image",),
    "--relation-weight": ("search.relation_weight",),
    "--after": ("after", "date"),
    "--before": ("before", "date"),
    "--under": ("under",),
    "--sort": ("sort",),
    "--threshold": ("threshold",),
    "--engine": ("index.engine",),
    "--num-workers": ("ray.workers",),
    "--gpus-per-worker": ("ray.gpus_per_worker",),
    "--objects": ("synth.objects", "object set"),
    "--world": ("synth.world", "world"),
    "--photos": ("synth.photos",),
    "--refine-scale": ("search.refine_scale",),
    "--detail": ("regions.detail",),
}


def shown_warnings(outcome: Outcome) -> list[str]:
    """Warnings Python prints by default (not deprecations, which are for developers)."""
    quiet = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)
    return [f"{w.category.__name__}: {w.message} ({w.filename})" for w in outcome.warnings if w.category not in quiet]


def names_in(args: list[str], environment: bool = True) -> set[str]:
    """What an error line may name to point at one of `args` (an option, its config key, a value)
    or, with `environment`, at a folder the environment names (where indexes are looked for
    without --index)."""
    names = {os.environ[name] for name in ENVIRONMENT if name in os.environ} if environment else set()
    for arg in (a for a in args if a not in COMMANDS):  # "index" would match most messages
        names |= {line(arg), repr(arg)} if len(arg) > 1 else {repr(arg)}
        if not arg.strip():
            names |= {"empty", "blank"}  # "empty query; give some text or --image PATH"
        names |= set(WORDS.get(arg, ()))
    return names


def usage_error(outcome: Outcome) -> bool:
    """Typer's own report of a bad command line: a usage line (mostly) and "Error: " with the reason
    (harmosearch's own errors say "error:")."""
    return outcome.code == 2 and ("Usage:" in outcome.stderr or outcome.stderr.startswith("Error: "))


@dataclass
class Line:
    """A drawn command line: its arguments; those drawn from an option's hostile or odd values
    (each with its flag); and those of them drawn from hostile values, which must be refused."""

    args: list[str]
    hostile: list[str]
    refused: list[str]


def check(line: Line, outcome: Outcome) -> None:
    """The rules every invocation keeps, whatever its arguments; and when a value that must be
    refused was drawn, exit 2 with an error (or Typer's usage box) naming a hostile argument."""
    where = f"harmosearch {' '.join(a[:80] for a in line.args)[:600]}"
    assert outcome.code in (0, 2), f"{where}: exit {outcome.code}\n{outcome.stderr[-2000:]}"
    assert "Traceback" not in outcome.stderr + outcome.stdout, f"{where}:\n{outcome.stderr[-3000:]}"
    assert not shown_warnings(outcome), f"{where}: {shown_warnings(outcome)}"
    if line.refused:
        assert outcome.code == 2, f"{where}: exit {outcome.code}, but {line.refused} must be refused"
    lines = [text for text in outcome.stderr.splitlines() if text.strip()]
    errors = [text for text in lines if text.startswith("error:")]
    if outcome.code == 0:
        assert not errors, f"{where}: exit 0 with {errors}"
        return
    # A refusal names what was refused; any other error names some argument (or the folder the
    # environment points at, for an index looked for without --index).
    names = names_in(line.hostile, environment=False) if line.refused else names_in(line.args)
    if usage_error(outcome):
        assert not line.refused or any(name in outcome.stderr for name in names), (
            f"{where}: the usage error names none of {line.hostile}:\n{outcome.stderr[-2000:]}"
        )
        return
    assert len(errors) == 1 and lines[-1] == errors[0], f"{where}: not one error line:\n{outcome.stderr[-2000:]}"
    named = [name for name in names if name in errors[0]]
    hint = f" of {line.hostile}" if line.refused else ""
    assert named, f"{where}: the error names no argument{hint}: {errors[0][:500]}"


class World:
    """Everything the examples share: scenes, an index of them (also the newest under indexes/,
    for commands given no --index), an index whose photos are gone, files of every kind, a port
    that cannot be bound, and a fresh folder per example for paths that get written."""

    def __init__(self, root: Path, encoder) -> None:
        self.root = root
        self.scenes = root / "scenes"
        generate(self.scenes, SynthConfig(n=6, seed=3, size=48))
        config = load_config(
            overrides={
                "encoder.model": TEST_MODEL,
                "encoder.device": "cpu",
                "index.workers": 0,
                "regions.max_regions": 8,
            }
        )
        self.index = root / "index"
        build_index(self.scenes / "images", self.index, config, encoder=encoder)
        gone = root / "gone"
        shutil.copytree(self.scenes / "images", gone)
        self.orphan = root / "orphan index"
        build_index(gone, self.orphan, config, encoder=encoder)
        shutil.rmtree(gone)
        shutil.copytree(self.index, root / "indexes" / "scenes")  # the fixture's HARMOSEARCH_INDEXES
        # Listening, never accepting: `serve` fails to bind it, so no example ever serves.
        self.busy = socket.create_server(("127.0.0.1", 0))
        self.image = self.scenes / "images" / "000000.png"
        self.not_image = root / "not an image.png"
        self.not_image.write_text("not an image")
        self.files: dict[str, Path] = {}
        for name, text in {
            "boxes.json": json.dumps({"000000.png": [[2, 2, 30, 30]], "000001.png": [[-100, -100, 1e9, 1e9]]}),
            "inverted boxes.json": json.dumps({"000000.png": [[30, 2, 2, 30]]}),
            "nan boxes.json": '{"000000.png": [[NaN, 2, 30, 30]]}',
            "coco.json": json.dumps(
                {
                    "images": [{"id": 1, "file_name": "000001.png"}],
                    "annotations": [{"image_id": 1, "bbox": [1, 1, 9, 9]}],
                }
            ),
            "coco nan.json": '{"images": [{"id": 1, "file_name": "000001.png"}], '
            '"annotations": [{"image_id": 1, "bbox": [1, 1, NaN, 9]}]}',
            "coco inverted.json": json.dumps(
                {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1, "bbox": [1, 1, -5, 9]}]}
            ),
            "list.json": "[1, 2, 3]",
            "garbage.json": "{not json",
            "config.toml": "[search]\nk = 3\n[regions]\nmax_regions = 8\n",
            "bad.toml": "[search\nk = ",
            "unknown key.toml": "[search]\nkk = 3\n",
            "wrong type.toml": "[search]\nk = 'three'\n",
            "huge.toml": f"[synth]\nn = {HUGE}\n[index]\nworkers = {HUGE}\n",
        }.items():
            self.files[name] = root / name
            self.files[name].write_text(text, encoding="utf-8")
        self.examples = root / "examples"
        self.examples.mkdir()
        self.read_only: list[Path] = []  # folders no example may write into

    def sandbox(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.examples))

    def resolve(self, value: str, box: Path) -> str | None:
        """A drawn value with its <placeholder> made real inside the example's folder `box`
        (None: leave the option out)."""
        if not (value.startswith("<") and value.endswith(">")) or value == FLAG:
            return value
        name = value[1:-1]
        if name == "none":
            return None
        if name.startswith("file:"):
            return str(self.files[name.removeprefix("file:")])
        if name == "existing index":
            shutil.copytree(self.index, box / "existing index")
            return str(box / "existing index")
        named = {
            "busy port": self.busy.getsockname()[1],
            "fresh": Path(tempfile.mkdtemp(dir=box)) / "new",
            "scenes": self.scenes,
            "scenes images": self.scenes / "images",
            "index": self.index,
            "orphan": self.orphan,
            "image": self.image,
            "not image": self.not_image,
        }
        return str(named[name]) if name in named else self.path(name, box)

    def path(self, kind: str, box: Path) -> str:
        """A path of `kind`, made in a new folder inside the example's own folder `box`."""
        box = Path(tempfile.mkdtemp(dir=box))
        a_file = box / "a file.txt"
        a_file.write_text("x")
        made = {
            "missing": box / "missing" / "deeper",
            "file": a_file,
            "folder": box / "an empty folder",
            "loop": box / "loop",
            "dangling": box / "dangling",
            "below a file": a_file / "below",
            "spaces": box / "name  with spaces" / "and more",
            "newline": box / "new\nline",
            "too long": box / ("x" * 300),
            "read-only": box / "read-only" / "inside",
        }
        if kind == "not utf-8":
            return os.fsdecode(os.fsencode(box) + b"/caf\xe9")
        if kind == "folder":
            made[kind].mkdir()
        elif kind == "loop":
            os.symlink("loop", made[kind])
        elif kind == "dangling":
            os.symlink(box / "nowhere", made[kind])
        elif kind == "read-only":
            made[kind].parent.mkdir(mode=0o500)
            self.read_only.append(made[kind].parent)
        return str(made[kind])


def refuse_to_serve(server) -> None:
    """WarmServer.run in these tests: a `serve` that got as far as binding a port fails the test
    (its socket closed) instead of serving forever."""
    server.socket.close()
    raise AssertionError(f"harmosearch serve bound {server.url} and would have served")


@pytest.fixture(scope="module")
def world(tmp_path_factory, test_encoder):
    from harmosearch.serve.server import WarmServer

    root = tmp_path_factory.mktemp("fuzz")
    with pytest.MonkeyPatch.context() as patch:
        # Defaults that write (indexes/, the bench cache, samples/demo) land in the sandbox.
        patch.chdir(root)
        patch.setenv("HARMOSEARCH_INDEXES", str(root / "indexes"))
        patch.setenv("HARMOSEARCH_CACHE", str(root / "cache"))
        patch.setattr(WarmServer, "run", refuse_to_serve)
        world = World(root, test_encoder)
        yield world
        world.busy.close()


def draw_args(data, world: World, command: str, opts: list[Opt]) -> Line:
    """A command line with up to two hostile or odd arguments (--config among them) and valid
    others, so that each example fails for a reason of its own, or runs. An option without valid
    values is always given one of its hostile or odd values."""
    box = world.sandbox()
    config = Opt("--config", ("<none>", "<none>", "<file:config.toml>"), (*CONFIGS, *PATHS), always=True)
    everything = [config, *opts]
    strange = [i for i, o in enumerate(everything) if o.hostile or o.odd]
    chosen = data.draw(st.sets(st.sampled_from(strange), max_size=2), label="hostile")
    line = Line([], [], [])
    for i, opt in enumerate(everything):
        picked = i in chosen or not opt.valid
        if not (opt.always or picked or data.draw(st.booleans(), label=f"give {opt.flag}")):
            continue
        pool = (*opt.hostile, *opt.odd) if picked else opt.valid
        for _ in range(data.draw(st.integers(1, 2), label="times") if opt.repeat else 1):
            drawn = data.draw(st.sampled_from(pool), label=opt.flag or "argument")
            value = world.resolve(drawn, box)
            if value is None:
                continue
            given = [value] if opt.flag is None else [opt.flag] if value == FLAG else [opt.flag, value]
            line.args += given
            if picked:
                line.hostile += given
                if drawn in opt.hostile:
                    line.refused += given
        if opt is config:
            line.args.append(command)
    text = line.args[line.args.index(command) + 1 :][:1]
    if command == "query" and "--image" in line.args and text and not text[0].strip() and text[0] in line.refused:
        line.refused.remove(text[0])  # TEXT defaults to "": beside --image, a blank one asks for the image alone
    return line


def fuzz(command: str, examples: int) -> Callable[..., None]:
    """A test running `examples` command lines drawn from MENUS[command]; each runs a whole
    command, so there is no deadline, and no explain phase (it reruns a failure dozens of times).
    In CI the draws are fixed (derandomize), so a landing is decided by the code, not by luck;
    elsewhere each run explores new command lines."""

    @settings(
        max_examples=examples,
        derandomize=bool(os.environ.get("CI")),
        deadline=None,
        phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink),
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def test(world, data):
        line = draw_args(data, world, command, MENUS[command])
        outcome = invoke(line.args, world.read_only)
        event(f"exit {outcome.code}" + (" (refused)" if line.refused else ""))
        check(line, outcome)

    # A name of its own: pytest reports it, and hypothesis keys its example database by it.
    test.__name__ = test.__qualname__ = f"test_{command}"
    return test


# Examples per command: a few minutes in all on two cores; failing examples end in milliseconds,
# valid ones in about a second (bench, train and demo in a few).
test_synth = fuzz("synth", 30)
test_index = fuzz("index", 25)
test_query = fuzz("query", 30)
test_info = fuzz("info", 25)
test_bench = fuzz("bench", 12)
test_train = fuzz("train", 15)
test_demo = fuzz("demo", 5)
test_dupes = fuzz("dupes", 15)
test_serve = fuzz("serve", 20)


def test_each_value_is_valid_hostile_or_odd_not_two_of_them():
    for name, opts in MENUS.items():
        for opt in opts:
            kinds = (set(opt.valid), set(opt.hostile), set(opt.odd))
            assert not any(a & b for a, b in itertools.combinations(kinds, 2)), (name, opt.flag)


def test_check_requires_a_refusal_that_names_the_refused_argument():
    """check() itself: a line holding a value that must be refused fails when the command takes
    it, or when its error names only another argument; a line with an odd value may run."""
    refused = Line(["synth", "out", "--n", "-1"], ["--n", "-1"], ["--n", "-1"])
    odd = Line(["synth", "out", "--n", "1"], ["out"], [])
    accepted = Outcome(0, "wrote 1 scenes\n", "", [])
    elsewhere = Outcome(2, "", "error: cannot create the scenes folder out/images\n", [])
    for outcome in (accepted, elsewhere):
        with pytest.raises(AssertionError):
            check(refused, outcome)
    check(refused, Outcome(2, "", "error: synth.n must lie in [0, 1000000], got -1\n", []))
    check(odd, accepted)
    check(odd, elsewhere)


@pytest.mark.parametrize(
    "args",
    [
        ["no-such-command"],
        ["synth"],
        ["query", "red", "--no-such-option"],
        ["index"],
        ["--config"],
        ["train", "--data", "x"],
        ["synth", "out", "--n", "nan"],
    ],
)
def test_usage_errors_exit_2_without_a_traceback(world, args):
    outcome = invoke(args)
    assert usage_error(outcome) and "Traceback" not in outcome.stderr


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "harmosearch", *args],
        capture_output=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_output_the_terminal_cannot_encode_is_escaped(world):
    """A real process with strict ASCII output: a non-ASCII folder name and one that is not
    UTF-8 print as escapes instead of failing with UnicodeEncodeError."""
    box = world.sandbox()
    ascii_only = {"PYTHONIOENCODING": "ascii"}
    for out in (str(box / "café"), world.path("not utf-8", box)):
        result = run("synth", out, "--n", "1", "--size", "32", env=ascii_only)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        assert b"wrote 1 scenes" in result.stdout and b"\\" in result.stdout
    result = run("query", "caf\u00e9", "--index", str(box / "none"), env=ascii_only)
    assert result.returncode == 2 and result.stderr.startswith(b"error: no index at")


def test_a_failing_command_prints_one_line_in_a_real_process(world):
    box = world.sandbox()
    (box / "below").write_text("x")
    result = run("index", str(world.scenes / "images"), "--index", str(box / "below" / "idx"))
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == [
        f"error: cannot create --index {box / 'below' / 'idx'}: {box / 'below'} is a file, not a folder"
    ]


def test_a_folder_that_cannot_be_written(world):
    box = world.sandbox()
    (box / "locked").mkdir(mode=0o500)
    outcome = invoke(["synth", str(box / "locked" / "out"), "--n", "1"], [box / "locked"])
    assert outcome.code == 2 and "Permission denied" in outcome.stderr
    assert not (box / "locked" / "out").exists()


def test_every_option_of_every_command_is_fuzzed():
    """A new option or argument must get a menu in MENUS; --debug stays out (it shows tracebacks)."""
    group = typer.main.get_command(cli.app)
    assert {p.opts[0] for p in group.params if p.opts[0] != "--help"} == {"--config", "--debug"}
    assert set(group.commands) == set(MENUS) == set(COMMANDS)
    for name, command in group.commands.items():
        options = {min(p.opts, key=len) for p in command.params if p.param_type_name == "option"} - {"--help"}
        arguments = [p for p in command.params if p.param_type_name == "argument"]
        assert {o.flag for o in MENUS[name] if o.flag} == options, name
        assert sum(o.flag is None for o in MENUS[name]) == len(arguments), name
