"""The configuration tree: one frozen dataclass section per stage, with defaults, and `Config`,
which holds them all and remembers which keys the user gave."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from harmosearch.config.fields import (
    Device,
    Fraction,
    InferencePrecision,
    NonEmpty,
    NonNegative,
    Positive,
    Precision,
    Range,
    Section,
    Seed,
    Workers,
    flatten,
    merge,
    nest,
)
from harmosearch.errors import ConfigError

# The model `index` uses unless told otherwise: a pretrained open_clip ViT-B/16, fetched on first
# use (docs/models.md). The bundled toy model knows only drawn shapes (on flat grounds and over
# photographs); the demo, bench and train start from it. harmo-tiny, the first bundled model
# (flat scenes only), and harmo-tiny-gc (global loss only) stay loadable by name.
DEFAULT_MODEL = "ViT-B-16:laion2b_s34b_b88k"
SHAPES_MODEL = "harmo-mix"
BUNDLED_MODELS = ("harmo-mix", "harmo-tiny", "harmo-tiny-gc")
MAX_LOSS_WEIGHT = 1000.0


@dataclass(frozen=True)
class EncoderConfig(Section):
    SECTION: ClassVar[str] = "encoder"
    model: str = DEFAULT_MODEL  # the model of new indexes (--model); an index keeps its own
    device: Device = "auto"  # auto, cpu, cuda or cuda:N; auto: CUDA when a GPU is visible, else the CPU
    # auto: fp16 on GPU; on CPU bf16 where it is native, int8 where the CPU has VNNI or int8
    # measured faster there (model.int8_probe, once per machine), else fp32
    # (model.device.inference_precision). An index keeps the way its image vectors were made.
    precision: InferencePrecision = "auto"
    # What runs the image and text towers: auto: ONNX Runtime for int8 when installed
    # (harmosearch[onnx]), torch otherwise. An index keeps its own.
    runtime: Literal["auto", "torch", "onnxruntime"] = "auto"
    # How the last block makes the dense map (model.dense_modes): value: CLIPSelf/FineCLIP value
    # path; plain: last block as is; clear / sclip / naclip: training-free maps for stock models
    # (ClearCLIP, SCLIP, NACLIP's ideas); auto: chosen per index when it is built, the mode of
    # highest region trust on the index's own sample (an update keeps it; outside indexing auto
    # means value). The default stays "value" until the benchmarks are re-recorded with auto.
    dense_mode: Literal["value", "plain", "clear", "sclip", "naclip", "auto"] = "value"
    resize: Literal["squash", "shortest"] = "squash"  # squash: whole photo; shortest: centre crop, as CLIP
    lexeme_mode: Literal["token", "prompt"] = "token"  # token: text token space; prompt: lexeme as its own prompt
    lexeme_pool: Literal["last", "mean"] = "last"  # token mode: the span's final token, or the mean of its tokens
    lexeme_prompt: str = "a photo of a {}"  # prompt mode: the lexeme goes where {} is
    parser: Literal["auto", "rules", "spacy"] = "auto"  # auto: spaCy when installed
    batch_size: Positive = 32  # images per forward pass


@dataclass(frozen=True)
class RegionConfig(Section):
    SECTION: ClassVar[str] = "regions"
    # Window side as a fraction of the short side; 1.0 is the whole image.
    scales: Annotated[tuple[Annotated[float, Range(0, 1, low_open=True)], ...], NonEmpty()] = (1.0, 0.5, 0.33, 0.25)
    overlap: Annotated[float, Range(0, 0.95)] = 0.5  # fraction of a window shared with its neighbour
    segments: tuple[Fraction, ...] = (0.3, 0.5, 0.7)  # cosine thresholds for dense-map segment boxes; [] = off
    # Boxes around segments of the picture's own pixels (Felzenszwalb and Huttenlocher's graph
    # segmentation at each of these scales; larger: larger segments), at every detail; they take
    # the place of the dense-map segments, whose 14 x 14 patches cannot find the edges of a small
    # object or tell it from a textured background. [] = off (dense-map segments instead). On
    # the validation scenes at the default detail they lifted the proposal ceiling from 0.76 to
    # 1.00 (flat) and 0.51 to 0.91 (objects over photographs), grounding from 0.55 to 0.95 and
    # 0.24 to 0.43 (benchmarks/proposals_clutter.py).
    pixel_segments: tuple[Annotated[float, Range(0, low_open=True)], ...] = (100.0, 300.0, 1000.0)
    # Regions kept per image after NMS and de-duplication (at high detail 1.5 times it, rounded
    # up). On the validation scenes at the default detail, 128 against 96 gave objects over
    # photographs a fitting box 96.2% of the time against 88.7%, grounding 75.9 against 69.9, for
    # 18% more regions (flat scenes: under a point, for 6% more regions); 192 gained nothing more
    # there (benchmarks/region_cap.py).
    max_regions: Positive = 128
    nms_iou: Annotated[float, Range(0, 1, low_open=True)] = 0.7  # boxes overlapping a kept box more are dropped
    # Region vectors this similar to a kept one are dropped (above 1: never).
    dedup_cosine: Annotated[float, Range(-1)] = 0.98
    # normal: regions pooled from the dense map of the pass that makes the global vector; high:
    # small boxes pooled from a second pass at 1.5 times the input size (HIGH_DETAIL_SCALE in
    # regions/proposals.py), where small objects span several patches, with smaller windows, boxes
    # around segments of the picture's pixels in place of the dense map's segments, and 1.5 times
    # the regions (indexing time and index size: docs/benchmarks.md).
    detail: Literal["normal", "high"] = "normal"


# Regions of a global-only index: the whole image alone (plain CLIP search, the smallest index).
GLOBAL_ONLY_REGIONS = {
    "regions.scales": (1.0,),
    "regions.segments": (),
    "regions.pixel_segments": (),
    "regions.max_regions": 1,
}


@dataclass(frozen=True)
class IndexConfig(Section):
    SECTION: ClassVar[str] = "index"
    index_type: str = "auto"  # auto | any faiss index_factory string
    exact_below: Positive = 200_000  # vectors; above this "auto" picks an approximate index
    # "auto" may pick an HNSW graph (fastest search, slow to build) when it fits in this many MB; 0: never
    hnsw_memory_mb: NonNegative = 0
    shard_size: NonNegative = 0  # vectors per FAISS file; larger indexes are sharded (0: one file)
    include_hidden: bool = False  # also index hidden files and folders (--include-hidden)
    # gitignore patterns of files and folders that are not photos, on top of .harmosearchignore
    exclude: tuple[str, ...] = ()
    workers: Workers = 2  # processes that decode, and on CPU also encode, batches of images (0: the main one alone)
    encode_in: Literal["auto", "main", "workers"] = "auto"  # where images are encoded (auto: workers on CPU)
    engine: Literal["local", "ray"] = "local"  # ray: Ray actors encode shards of the files (the [ray] section)


@dataclass(frozen=True)
class RayConfig(Section):
    """The Ray engine of `harmosearch index` (index.engine = "ray"): actors, each with its own
    model, encode shards of the files to encode and stage them beside the index."""

    SECTION: ClassVar[str] = "ray"
    address: str = ""  # a running cluster ("auto", "ray://host:10001", ...); empty: start a local Ray
    workers: Positive = 2  # actors, one model each
    cpus_per_worker: Annotated[float, Range(0, low_open=True)] = 1.0  # CPU cores Ray reserves for each actor
    gpus_per_worker: Annotated[float, Range(0)] = 0.0  # 0.5: two actors share a GPU
    shard_size: Positive = 256  # files per task; a finished shard is staged, so a re-run resumes
    max_retries: NonNegative = 3  # restarts of a dead actor, and retries of the shard it held


@dataclass(frozen=True)
class MediaConfig(Section):
    """Which frames of a video are indexed: one every `every_s` seconds, plus one whenever the
    picture changes by more than `scene_threshold` (mean absolute difference of small
    thumbnails, 0-1), at most `max_frames` per video."""

    SECTION: ClassVar[str] = "media"
    every_s: Annotated[float, Range(0, low_open=True)] = 2.0  # a frame every this many seconds
    # a cut between shots scores 0.15-0.4, an object filling a fifth of the picture about 0.08
    scene_threshold: Fraction = 0.06
    max_frames: Positive = 200  # a long video's interval widens so that its samples span all of it


@dataclass(frozen=True)
class SearchConfig(Section):
    SECTION: ClassVar[str] = "search"
    k: Positive = 10  # results per query (-k)
    # fused = alpha * global + (1 - alpha) * mean over lexemes of the best region, for a query of
    # several lexemes (a caption); chosen on the validation scenes; `--alpha` sets it and phrase_alpha
    alpha: Fraction = 0.5
    # alpha for a query of one lexeme ("red umbrella"): its global vector says what its lexeme says,
    # while a photo's global vector sums up everything in it, so a small thing counts for more in
    # its regions; chosen on the validation scenes
    phrase_alpha: Fraction = 0.15
    region_candidates: Positive = 200  # regions fetched per lexeme before exact rescoring
    global_candidates: Positive = 100  # images fetched by the global vector before exact rescoring
    # The additive amounts below (box_margin, relation_weight, window_penalty, contrast) are in
    # units of the index's spread: the standard deviation of its calibration's null at alpha 0
    # (search/calibration.py, ranking_unit), how much the best region score of a query for nothing
    # varies on this index, so that one setting serves models whose cosines live in bands of
    # different widths: an amount A takes A x spread off or onto cosines. harmo-tiny's spread on
    # the validation scenes is 0.103 (flat) and 0.107 (photo), so the defaults are the cosine
    # amounts they were chosen as, divided by 0.10 (benchmarks/results/scale_free_val.jsonl); an
    # index without a calibration takes a spread of 0.10 and ranks with exactly those amounts.
    box_margin: Annotated[float, Range(0)] = 0.5  # the box shown: the largest region within this of the best
    # Relations between lexemes ("left of", "near"): their geometric score joins the region part
    # of the fused score with this weight (0: relations ignored): a relation that holds adds up to
    # relation_weight / 2 units, one violated takes as much away; each related lexeme's this many
    # best regions per image are the candidates of the joint box choice.
    relation_weight: Annotated[float, Range(0)] = 5.0
    relation_candidates: Positive = 4  # best regions per related lexeme and image in the joint box choice
    # Taken off a window proposal's score for every lexeme when images are ranked (not when a lone
    # lexeme's box is chosen; search/score.py, RegionTable.penalising_windows), so that boxes around
    # segments, which fit objects, win near-ties against fixed squares; chosen on the validation
    # scenes (as 0.1 in cosine).
    window_penalty: Annotated[float, Range(0, 10)] = 1.0
    # Ranking also weighs each region's score for a lexeme against the vocabulary's other phrases
    # (search/contrast.py): + contrast * spread * log p(the lexeme | the region, among the lexeme
    # and its rivals), so that a red star ranks below a red circle for "red circle"; chosen on the
    # validation scenes (as 0.1 cosine per nat); 0 turns it off. log p itself is free of the
    # band (a log-probability at the model's own logit scale, in nats), but it is added to
    # cosines, and how many cosines a nat is worth is the model's: harmo-tiny-gc's spread is half
    # harmo-tiny's at a logit scale of 16 against 25, so the term is in units of the spread too.
    contrast: Annotated[float, Range(0, 100)] = 1.0
    # The rivals: "everyday" (about 1,500 everyday things shipped with the package, the same for
    # every model; "auto" is its older name), "trained" (the phrases the model was trained on,
    # from its checkpoint; none for other models), "none", or a UTF-8 file with one phrase per line.
    vocabulary: str = "everyday"
    # Refinement (--refine, search/rerank.py): the best `rerank` results (at least k) are encoded again,
    # at the model's input size and at refine_scale times it, where small objects span several
    # patches, and each lexeme's box is searched again near the indexed one. Those results are
    # then reordered by their fused score + crop_weight * the mean over lexemes of how well the
    # square crop around the lexeme's new box, encoded alone, matches the lexeme's text (one more
    # image encoding per lexeme; a result whose picture cannot be read gains nothing). With
    # crop_weight 0 they are reordered by refine_alpha * global +
    # (1 - refine_alpha) * their refined lexeme scores (the relation part as fused). rerank 0
    # refines only the boxes of the k shown, keeping their order and scores. Costs two image
    # encodings per refined result, plus the crops (docs/benchmarks.md has the time per query), so
    # it is off unless asked for; no storage. refine_scale, rerank, crop_weight and refine_boxes were
    # chosen on the validation scenes.
    refine: bool = False
    refine_scale: Annotated[float, Range(1, 4)] = 1.5  # --refine-scale
    rerank: NonNegative = 20  # results refined and reordered (at least k); 0: only the boxes of the k shown
    # The weight of the crops' match in the reordering: a cosine weighed against the fused score,
    # itself made of cosines, so already free of the band's width (a model whose cosines are all
    # c times narrower reorders the same): not in units of the spread.
    crop_weight: Annotated[float, Range(0, 10)] = 1.0
    refine_alpha: Fraction = 0.2  # with crop_weight 0: the weight of the global score in the reordering
    # Whether --refine searches the boxes again: "auto" does at the default detail and keeps the
    # indexed boxes at regions.detail "high", where they already fit (there refinement only looks
    # at crops, with no image encoded again; chosen on the validation scenes), "on" and "off" always.
    refine_boxes: Literal["auto", "on", "off"] = "auto"
    nprobe: Positive = 16  # IVF lists searched per query
    ef_search: Positive = 64  # HNSW search depth
    # FAISS searches on the GPUs (harmosearch[gpu]): a copy of the index on each, or a shard of it
    # on each (for an index larger than one GPU's memory); filtered searches stay on the CPU.
    faiss_gpu: Literal["off", "replicate", "shard"] = "off"
    # Drop results below this fused score; "auto": keep only results the index's calibration
    # finds confident (text queries).
    min_score: Annotated[float, Range()] | Literal["auto"] | None = None
    # Counting and negation (search/count.py): a region holds a thing when its plain score reaches
    # this quantile of the calibration's null at alpha 0; regions overlapping a kept instance by
    # count_overlap of the smaller box are the same object; the count term (log distance between
    # the instances found and the number asked) and a negated lexeme's presence are subtracted
    # with these weights, in units of the null's spread. Chosen on the validation scenes (docs,
    # Benchmarks: Counting and negation): count_quantile and count_overlap by exact-count P@5; count_weight
    # by exact-count P@5 among the weights that keep caption retrieval (whose captions count
    # too: "three shapes: ...") within a point of t2i R@1 without the term; negation_weight by
    # pairs won (the smallest weight within 0.01 of the best: a heavier one also pushes down
    # images that hold what is wanted).
    # count_quantile 0.2 with count_segments (below): 0.667 exact-count P@5 against 0.617 at the
    # former 0.4 (benchmarks/results/counting_val.jsonl, 2026-12-07, pixel segments on).
    count_quantile: Fraction = 0.2
    count_overlap: Annotated[float, Range(0, 1, low_open=True)] = 0.2
    # ... and, with rivals (search.contrast above 0), only when the model gives the lexeme at
    # least this share of the probability against its rivals (a red star is no red circle); 0:
    # off, as chosen on the validation scenes (0.3 and 0.5 lowered exact-count P@5).
    count_rival_share: Fraction = 0.0
    # ... and a region whose box holds a kept instance's centre, or whose centre lies in one, is
    # that instance's object too (halves of one object overlap little). On the validation scenes
    # it raised exact-count P@5 at --detail high (benchmarks/configs/counting_high.toml) and
    # changed nothing at the default detail, where count_overlap already joins such boxes.
    count_centres: bool = False
    # ... and only boxes drawn around something (segments of the picture, user boxes) are
    # instances, not fixed windows (a window straddles two objects or covers part of one). On the
    # validation scenes it raised exact-count P@5 from 0.650 to 0.667 at the default detail and
    # from 0.800 to 0.842 at --detail high (quantile 0.2, overlap 0.2, centres on there).
    count_segments: bool = True
    count_weight: Annotated[float, Range(0)] = 4.0
    # negation_weight with harmo-mix on both worlds' validation pairs (counting_val.jsonl,
    # 2026-12-07): pairs won 0.947 at 10 and 0.953 at 20 over photographs, 0.987 at every weight
    # from 5 on flat scenes; negation P@5 0.391 against 0.379 and 0.499 against 0.477 (20 was
    # harmo-tiny's choice on flat scenes).
    negation_weight: Annotated[float, Range(0)] = 10.0
    # Region trust (regions/trust.py): measured when an index is built, on a sample of its own
    # images, how well each region's vector picks out its own box shown alone, both seen through
    # the everyday vocabulary's phrases (0: chance, 1: always). The region part of the fused score
    # (1 - alpha, and the crops' weight in reordering) is weighed by 0 at or below trust_low, so
    # that regions carrying no signal rank as --global-only, fully from trust_high, linearly
    # between; an index without a measured trust ranks as if fully trusted. Chosen with the first
    # way of measuring (validation scenes, 100, flat and photo world): trust_low at the most
    # random weights of the bundled architecture reached, trust_high well below what harmo-tiny
    # reached on flat scenes. Kept for the second (128 pictures of 300 validation scenes,
    # trust_measures.jsonl): random weights reach 0.04 flat and 0.09 photo, harmo-tiny 0.37 and
    # 0.17 (harmo-tiny-gc, which no choice looks at, measured 0.10 and 0.14).
    trust_low: Fraction = 0.1
    trust_high: Fraction = 0.2

    def alpha_for(self, lexemes: int) -> float:
        """The weight of the global score for a query of this many lexemes."""
        return self.phrase_alpha if lexemes == 1 else self.alpha

    def searches_boxes(self, detail: str) -> bool:
        """Whether refinement searches the boxes again on an index of this regions.detail."""
        return self.refine_boxes == "on" or (self.refine_boxes == "auto" and detail != "high")

    def refines_anything(self, detail: str) -> bool:
        """Whether refinement changes anything there: it searches boxes, or reorders by crops
        (kept boxes give a reordering without crops nothing to go by)."""
        return self.searches_boxes(detail) or bool(self.rerank and self.crop_weight)

    def check(self) -> None:
        if not self.vocabulary.strip():
            raise ConfigError(
                'search.vocabulary must be "everyday", "trained", "none" or a file of phrases, one per line'
            )
        if self.trust_low > self.trust_high:
            raise ConfigError("search.trust_low must not exceed search.trust_high")


MAX_SCENES = 1_000_000  # synthetic scenes in one set: more is hours of drawing and gigabytes


@dataclass(frozen=True)
class SynthConfig(Section):
    SECTION: ClassVar[str] = "synth"
    n: Annotated[int, Range(0, MAX_SCENES)] = 100  # scenes to draw (--n)
    seed: Seed = 0  # the same seed draws byte-identical files
    size: Annotated[int, Range(32, 4096)] = 224  # image side in pixels
    # Object sizes and counts (synth.OBJECT_SETS): mixed, 1-4 objects of 17-36% of the side;
    # small, 2-5 of 22-48 px in 224 px; large, 1-3 of 50-95 px in 224 px.
    objects: Literal["mixed", "small", "large"] = "mixed"
    min_objects: Annotated[int, Range(1, 6)] | None = None  # None: the object set's own count
    max_objects: Annotated[int, Range(1, 6)] | None = None  # None: the object set's own count
    # flat: shapes on drawn textures; photo: shaded, overlapping shapes on cuts of the photographs
    # that ship with scikit-image, with clutter, blur, noise and JPEG; mixed: either, per scene.
    world: Literal["flat", "photo", "mixed"] = "flat"
    # Which photographs the photo world's backgrounds come from (synth.PHOTO_SPLITS): train sets
    # draw from the train ones; the benchmark's val and test sets from photographs of their own.
    photos: Literal["train", "val", "test"] = "train"

    def check(self) -> None:
        if self.min_objects is not None and self.max_objects is not None and self.min_objects > self.max_objects:
            raise ConfigError("synth objects must satisfy 1 <= min_objects <= max_objects <= 6")


Loss = Literal["gc", "lrc", "gr", "tight"]
Distractor = Literal["loose", "part", "shift"]


@dataclass(frozen=True)
class TrainConfig(Section):
    SECTION: ClassVar[str] = "train"
    losses: Annotated[tuple[Loss, ...], NonEmpty()] = ("gc", "lrc", "gr")  # total = GC + w_lrc LRC + w_gr GR (+ TIGHT)
    # Loss weights, at most MAX_LOSS_WEIGHT: beyond it one term drowns the others (and the
    # global loss, whose weight is 1), and training diverges.
    w_lrc: Annotated[float, Range(0, MAX_LOSS_WEIGHT)] = 1.0  # --weights lrc=W
    w_gr: Annotated[float, Range(0, MAX_LOSS_WEIGHT)] = 1.0  # --weights gr=W
    w_tight: Annotated[float, Range(0, MAX_LOSS_WEIGHT)] = 1.0  # --weights tight=W
    loose_factor: Annotated[float, Range(1)] = 2.0  # TIGHT's loose box: the object's box grown this many times
    # TIGHT's off-object boxes, drawn around every linked object: loose (the box grown
    # loose_factor times), part (a random box inside it, 35-65% of each side), shift (the box
    # moved by 50-90% of its size, so it covers part object, part background).
    distractors: Annotated[tuple[Distractor, ...], NonEmpty()] = ("loose", "part", "shift")
    # caption: regions aligned with their image's caption against the batch's other captions;
    # crop: each region distilled towards the global vector of the image cropped to its box
    gr_variant: Literal["caption", "crop"] = "caption"
    lexeme_source: Literal["caption", "annotations"] = "caption"  # caption: its lexemes linked to boxes
    match: Literal["largest", "skip"] = "largest"  # several boxes fit a lexeme equally
    epochs: Positive = 1
    max_steps: Annotated[int, Range(0)] | None = None  # stop after this many steps (None: after the epochs)
    batch_size: Annotated[int, Range(2)] = 64  # contrastive losses need negatives
    lr: Annotated[float, Range(0, 1, low_open=True)] = 5e-4  # above 1 AdamW only diverges
    weight_decay: Annotated[float, Range(0)] = 0.1  # AdamW's; none on gains, biases, embeddings and the logit scale
    warmup_steps: NonNegative = 50  # linear warmup, then cosine decay
    grad_clip: Annotated[float, Range(0, low_open=True)] = 1.0  # gradient norm clipped to this
    seed: Seed = 0
    checkpoint_every: Positive = 200  # steps between checkpoints under OUT/checkpoints/
    workers: Workers = 2  # processes that decode training images
    # Keep the decoded, resized training images in shared memory when they fit in this many MB
    # (the first epoch fills it; 0: decode every epoch).
    pixel_cache_mb: NonNegative = 4096
    precision: Precision = "auto"  # auto: fp16 on GPU, bf16 on CPUs with native bf16, else fp32


@dataclass(frozen=True)
class PathsConfig(Section):
    SECTION: ClassVar[str] = "paths"
    # Where `index` puts new indexes and `query`, `info`, `dupes` and `serve` look for the newest;
    # auto: ./indexes when the current folder has one, else the per-user data folder (indexes.py).
    indexes: str = "auto"
    cache: str = "~/.cache/harmosearch"  # bench datasets and embeddings
    state: str = "~/.local/state/harmosearch"  # what outlives a run: the server's token

    @property
    def indexes_dir(self) -> Path:
        from harmosearch.indexes import indexes_root

        return indexes_root(self.indexes)

    @property
    def cache_dir(self) -> Path:
        return Path(self.cache).expanduser()

    @property
    def state_dir(self) -> Path:
        return Path(self.state).expanduser()


@dataclass(frozen=True)
class Config:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    regions: RegionConfig = field(default_factory=RegionConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    # Dotted keys the user gave (environment, TOML file, flags); not part of the values.
    given: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        sections = (f.name for f in dataclasses.fields(self) if f.name != "given")
        return {name: dataclasses.asdict(getattr(self, name)) for name in sections}

    def to_json(self) -> dict[str, Any]:
        """to_dict() as it reads back from JSON (tuples become lists), for comparisons with manifests."""
        return json.loads(json.dumps(self.to_dict(), default=list))

    def digest(self) -> str:
        """A short stable hash of the resolved values."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def user_keys(self) -> frozenset[str]:
        """Keys the user set: given explicitly, or holding a value other than the default."""
        mine, defaults = flatten(self.to_json()), flatten(Config().to_json())
        return self.given | {key for key, value in mine.items() if value != defaults[key]}

    def over(self, stored: Mapping[str, Any], keys: tuple[str, ...]) -> Config:
        """Stored settings (a manifest's or checkpoint's `config`) for `keys` (dotted keys, or whole
        sections such as "regions"), except where the user set a key: the user's value wins."""
        mine = self.user_keys()
        flat = flatten(dict(stored))
        taken = {
            key: value
            for key, value in flat.items()
            if any(key == k or key.startswith(k + ".") for k in keys) and key not in mine and key in _known_keys()
        }
        return _merge_into(self, taken) if taken else self

    def with_values(self, values: Mapping[str, Any]) -> Config:
        """A copy with dotted keys set, recorded as given by the user."""
        return _merge_into(self, values, given=True)


@functools.cache
def _known_keys() -> frozenset[str]:
    return frozenset(flatten(Config().to_json()))


def _merge_into(config: Config, values: Mapping[str, Any], given: bool = False) -> Config:
    merged = merge(config, nest(values), "")
    if given:
        merged = dataclasses.replace(merged, given=config.given | {k for k, v in values.items() if v is not None})
    return merged
