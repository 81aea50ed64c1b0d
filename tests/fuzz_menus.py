"""The fuzz's menus (tests/test_cli_fuzz.py): for every argument of every command, the values
that should work, the hostile ones a command must refuse naming the argument, and the odd ones
it may take or refuse. Paths are named by kind ("<missing>", "<loop>", ...) and made afresh for
each example that draws one."""

from __future__ import annotations

from dataclasses import dataclass

from .conftest import TEST_MODEL

HUGE = "99999999999999999999"
NOT_NUMBERS = ("nan", "inf", "-inf", "1e400", "", "abc")
STRINGS = (
    "",
    " ",
    "x" * 10_000,
    "红色的圆",
    "🐶🎈",
    "красный круг",
    "[bold]x[/]",
    "caf\udce9",  # a byte that is not UTF-8, as Python passes it on from the command line
    "a\nb",
    "\x1b[31mred",
    "-",
)
PATH_KINDS = [
    "missing",
    "file",
    "folder",
    "loop",
    "dangling",
    "below a file",
    "spaces",
    "newline",
    "not utf-8",
    "too long",
    "read-only",
]


PATHS = tuple(f"<{kind}>" for kind in PATH_KINDS)  # made afresh for every example that draws one
FLAG = "<flag>"  # a flag given without a value


@dataclass(frozen=True)
class Opt:
    """One argument of a command: its flag (None for a positional one), the values that should
    work, the hostile ones (which the command must refuse, naming the argument) and the odd ones
    (strange values it may take or refuse); `always` when every example gives it."""

    flag: str | None
    valid: tuple[str, ...]
    hostile: tuple[str, ...] = ()
    always: bool = False
    repeat: bool = False
    odd: tuple[str, ...] = ()


CONFIGS = tuple(f"<file:{name}>" for name in ("bad.toml", "unknown key.toml", "wrong type.toml", "huge.toml"))
# Paths a command writes to: a new or empty folder, or a name with spaces, a newline or a byte
# that is not UTF-8, may be taken (or refused, naming it); a file, a link loop or a dangling
# link, a path below a file, a name too long, or a read-only folder must be refused.
OUT = ("<missing>", "<folder>", "<spaces>", "<newline>", "<not utf-8>")
NOT_OUT = ("<file>", "<loop>", "<dangling>", "<below a file>", "<too long>", "<read-only>")
# A file a command writes (--record appends, --save-scores replaces): a folder is refused instead.
OUT_FILE = ("<missing>", "<file>", "<spaces>", "<newline>", "<not utf-8>")
NOT_OUT_FILE = ("<folder>", "<loop>", "<dangling>", "<below a file>", "<too long>", "<read-only>")
# An empty --model means the command's default model (refused by those that have none).
BAD_MODELS = ("nope", "nope:random", "x" * 10_000, "local-dir:/nowhere", "<folder>")
MODEL = Opt("--model", (TEST_MODEL,), BAD_MODELS, True, odd=("",))
DEVICE = Opt("--device", ("cpu", "auto"), ("tpu", "cuda:-1", f"cuda:{HUGE}", "x" * 10_000), odd=("",))
DETAIL = Opt("--detail", ("normal", "high"), ("", "bogus", "HIGH"))
REFINE = Opt("--refine", (FLAG,))
REFINE_SCALE = Opt("--refine-scale", ("1", "1.5"), ("0.5", "5", "-1", *NOT_NUMBERS))
WORKERS = Opt("--workers", ("0",), ("-1", "65", HUGE, "nan"), True)  # more workers: each loads the model


BAD_BOXES = ("inverted boxes", "nan boxes", "coco nan", "coco inverted", "list", "garbage")
BAD_INDEX_TYPES = ("Bogus,Thing", "", "HNSW0", "HNSW1", "IVF0,Flat", f"IVF{HUGE},Flat", "IDMap,Flat", "LSH", "PQ7")
BAD_WEIGHTS = ("=,==", "lrc=nan", "lrc=1e300,gr=1e300", "tight=-1", "bogus=1", "1,2,3")
# Every argument of every command (test_every_option_of_every_command_is_fuzzed keeps it so).
MENUS: dict[str, list[Opt]] = {
    "synth": [
        Opt(None, ("<fresh>",), NOT_OUT, True, odd=OUT),
        Opt("--n", ("0", "1", "2"), ("-1", HUGE, *NOT_NUMBERS), True),
        Opt("--seed", ("0", "7"), ("-1", HUGE, "4294967296", *NOT_NUMBERS)),
        Opt("--size", ("32", "40"), ("31", "0", "-1", "4097", HUGE, *NOT_NUMBERS)),
        Opt("--objects", ("mixed", "small", "large"), ("", "bogus", "红色", "x" * 10_000)),
        Opt("--world", ("flat", "photo", "mixed"), ("", "bogus", "PHOTO", "x" * 10_000)),
        Opt("--photos", ("train", "val", "test"), ("", "bogus", "astronaut")),
        Opt("--workers", ("1",), ("0", "-1", "65", HUGE, "nan")),
    ],
    "index": [
        # An empty photo folder gives an empty index.
        Opt(None, ("<scenes images>",), tuple(p for p in PATHS if p != "<folder>"), True, odd=("<folder>",)),
        Opt("--index", ("<fresh>", "<existing index>"), NOT_OUT, odd=OUT),
        MODEL,
        WORKERS,
        Opt("--boxes", ("<file:boxes.json>", "<file:coco.json>"), (*(f"<file:{n}.json>" for n in BAD_BOXES), *PATHS)),
        Opt("--index-type", ("Flat", "HNSW32"), (*BAD_INDEX_TYPES, "红色", "x" * 10_000)),
        DEVICE,
        Opt("--batch-size", ("1", "4", HUGE), ("0", "-1", *NOT_NUMBERS)),
        Opt("--global-only", (FLAG,)),
        Opt("--include-hidden", (FLAG,)),
        Opt("--exclude", ("*.png", "sub/", "!keep.png"), ("!", "a\\", "[z-a]"), repeat=True, odd=("",)),
        Opt("--rebuild", (FLAG,)),
        # The Ray engine starts a cluster (seconds) and is tested on its own (tests/test_ray_engine.py);
        # here its options must be refused or ignored by the local engine.
        Opt("--engine", ("local",), ("", "bogus", "RAY", "x" * 10_000)),
        Opt("--address", ("", "auto", "ray://127.0.0.1:1"), odd=STRINGS[1:]),
        Opt("--num-workers", ("1", "2", HUGE), ("0", "-1", *NOT_NUMBERS)),
        Opt("--gpus-per-worker", ("0", "0.5", HUGE), ("-1", "nan", "inf", "-inf", "abc")),
        DETAIL,
    ],
    "query": [
        Opt(
            None,
            ("red circle", "blue square left of a white ring", "红色的圆", "x" * 10_000),
            ("", " "),
            True,
            odd=STRINGS[4:],  # the other strings that are not blank: any of them is a query
        ),
        Opt("--index", ("<index>", "<index>", "<orphan>"), PATHS),
        Opt("-k", ("1", "3", "1000"), ("0", "-1", "1001", HUGE, *NOT_NUMBERS)),  # at most MAX_K
        Opt("--alpha", ("0", "0.5", "1"), ("-0.1", "1.1", *NOT_NUMBERS)),
        Opt("--min-score", ("0", "-1", "1e308", "-1e308", "auto"), NOT_NUMBERS),
        Opt("--relation-weight", ("0", "0.5", "2"), ("-1", *NOT_NUMBERS)),
        Opt("--no-relations", (FLAG,)),
        REFINE,
        REFINE_SCALE,
        # An empty date is no date.
        Opt("--after", ("2024", "2024-07", "2020-01-15"), ("2024-13", "garbage", "x" * 10_000), odd=("",)),
        Opt("--before", ("2030", "2024-07-15T10:00"), ("2024-02-30", "yesterday"), odd=("",)),
        Opt("--under", (".", "sub"), ("..", "/", "../outside"), repeat=True),
        Opt("--sort", ("score", "date"), ("", "bogus")),
        DEVICE,
        Opt("--image", ("<image>",), ("<not image>", *PATHS)),
        Opt("--not", ("blue", "红色"), repeat=True, odd=STRINGS),  # any text, even none, is a rival to avoid
        Opt("--save-annotated", ("<fresh>",), NOT_OUT, odd=OUT),
        Opt("--global-only", (FLAG,)),
        Opt("--json", (FLAG,)),
    ],
    "info": [
        Opt(None, ("<index>", "<orphan>"), PATHS),
        Opt("--verify", (FLAG,)),
        Opt("--json", (FLAG,)),
    ],
    "bench": [
        Opt("--dataset", ("synthetic", "<scenes>"), ("flickr30k", "mscoco", "", "bogus", "x" * 10_000, *PATHS), True),
        MODEL,
        Opt("--n", ("2", "4"), ("0", "1", "-1", HUGE, "nan"), True),
        # boxcls encodes every class name in many prompts (seconds), so it is drawn less often.
        Opt(
            "--task",
            ("retrieval", "retrieval", "grounding", "search", "search", "boxcls", "compositional"),
            ("", "bogus"),
            True,
            True,
        ),
        Opt("--data-dir", ("<fresh>",), NOT_OUT, odd=OUT),
        Opt("--mode", ("global", "fused", "relations", "all"), ("", "bogus", "both")),
        Opt("--split", ("val", "test"), ("", "bogus")),
        Opt("--objects", ("mixed", "small", "large"), ("", "bogus")),
        Opt("--world", ("flat", "photo"), ("", "bogus", "mixed")),
        REFINE,
        REFINE_SCALE,
        DETAIL,
        Opt("--save-scores", ("<fresh>",), NOT_OUT_FILE, odd=OUT_FILE),
        Opt("--record", ("<fresh>",), NOT_OUT_FILE, odd=OUT_FILE),
        DEVICE,
        Opt("--json", (FLAG,)),
    ],
    "train": [
        Opt("--data", ("<scenes>",), PATHS, True),
        Opt("--out", ("<fresh>",), NOT_OUT, True, odd=OUT),
        MODEL,
        Opt("--epochs", ("1",), ("0", "-1", "nan")),
        Opt("--max-steps", ("1",), ("-1", "nan"), True),  # a valid run stays one step long
        Opt("--batch-size", ("2", "3"), ("0", "1", "-1", HUGE, "nan"), True),
        WORKERS,
        # A loss named twice is the loss once.
        Opt("--losses", ("gc", "gc,lrc,gr", "gc,tight"), ("", "bogus"), odd=("gc,gc",)),
        Opt("--weights", ("lrc=1,gr=1", "lrc=0.5"), BAD_WEIGHTS, odd=("",)),  # empty: the default weights
        Opt("--gr-variant", ("caption", "crop"), ("", "bogus")),
        Opt("--lexeme-source", ("caption", "annotations"), ("bogus",)),
        Opt("--lexeme-mode", ("token", "prompt"), ("bogus",)),
        Opt("--match", ("largest", "skip"), ("bogus",)),
        Opt("--lr", ("1e-3", "1"), ("0", "-1", "2", "1e300", *NOT_NUMBERS)),
        Opt("--seed", ("0", "5"), ("-1", HUGE, *NOT_NUMBERS)),
        Opt("--checkpoint-every", ("1", HUGE), ("0", "-1", "nan")),
        DEVICE,
        Opt("--fresh", (FLAG,)),
    ],
    "demo": [
        Opt(None, ("<fresh>",), NOT_OUT, True, odd=OUT),
        MODEL,
        Opt("--n", ("1",), ("0", "-1", HUGE, "nan"), True),
    ],
    "dupes": [
        Opt(None, ("<index>", "<orphan>"), PATHS),
        Opt("--threshold", ("0.5", "0.9", "1", "-1"), ("2", *NOT_NUMBERS)),
        Opt("--json", (FLAG,)),
    ],
    # `serve` is fuzzed up to the moment it would bind its port, which is always taken: every
    # example must be refused, none may serve (refuse_to_serve).
    "serve": [
        Opt("--index", ("<index>", "<orphan>"), PATHS, True, True),
        # An IPv6 address with the IPv4 socket, a name no resolver takes: refused without a lookup.
        Opt("--host", ("127.0.0.1", "localhost", "0.0.0.0", ""), ("::1", "x" * 10_000)),
        Opt("--port", (), ("<busy port>", "-1", "65536", HUGE, *NOT_NUMBERS), True),
        MODEL,
        DEVICE,
        Opt("--allow-host", ("photos.lan", "example.org"), repeat=True),
        Opt("--allow-origin", ("http://photos.lan:8000",), ("photos.lan", "not an origin"), repeat=True),
        Opt("--require-token", (FLAG,)),
    ],
}
