"""The training loop: AdamW, warmup + cosine, grad clipping, autocast, checkpoints and resume.

Runs are reproducible on the CPU: the data order and each sample's caption are functions of
(seed, epoch, index), so a run resumed from a checkpoint ends with the same weights as an
unbroken one. Checkpoints are open_clip local-dir folders plus harmosearch.json, loadable by
`--model PATH`; trainer.pt beside them holds the optimizer and schedule state. Under torchrun the
processes share each global batch (`train.distributed`) and rank 0 writes.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harmosearch.config import Config
from harmosearch.errors import DataError, TrainingError
from harmosearch.folders import check_folder
from harmosearch.search.contrast import training_vocabulary
from harmosearch.train.forward import forward_batch

TRAINER_STATE = "trainer.pt"


@dataclass
class TrainResult:
    final: Path
    steps: int
    resumed_from: int
    last: dict[str, float]


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup to 1, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on gains, biases, embeddings and the logit scale (as open_clip does)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exclude = param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        exclude = exclude or "embedding" in name or "class_embedding" in name
        (no_decay if exclude else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    import torch

    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    return [order[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def latest_checkpoint(out: Path) -> Path | None:
    pointer = Path(out) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = Path(out) / "checkpoints" / pointer.read_text().strip()
    return path if (path / TRAINER_STATE).is_file() else None


@dataclass
class Trainer:
    """The model and everything one optimisation step needs: `step(batch)` is the training step
    `harmosearch train` runs (and `benchmarks/train_step.py` times)."""

    model: Any
    config: Config
    loss_fn: Any
    optimizer: Any
    schedule: Any
    scaler: Any
    device: Any
    precision: str  # what train.precision resolved to (device.training_precision): fp32, bf16 or fp16
    normalise: Any = None  # (mean, std) when batches carry uint8 pixels
    ranks: Any = None  # train.distributed.Ranks of a run on several processes
    parallel: Any = None  # the forward pass in DistributedDataParallel, on several processes

    def step(self, batch: dict[str, Any]) -> dict[str, float]:
        """Forward under autocast, the loss terms, backward (scaled for fp16), gradient clipping,
        the optimizer and schedule steps, and the logit scale clamped as CLIP clamps it."""
        import torch

        from harmosearch.model.device import autocast_dtype
        from harmosearch.model.encoder import pixels_from_uint8

        tc, ec = self.config.train, self.config.encoder
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if self.normalise is not None:
            batch["pixels"] = pixels_from_uint8(batch["pixels"], *self.normalise)
        options = (
            ec.dense_mode,
            "gr" in tc.losses and tc.gr_variant == "crop",
            ec.lexeme_pool,
            ec.lexeme_mode,
            "tight" in tc.losses,
        )
        dtype = autocast_dtype(self.device, self.precision)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            if self.parallel is not None:
                outputs = self.ranks.gather(self.parallel(batch, *options))
            else:
                outputs = forward_batch(self.model, batch, *options)
        terms = self.loss_fn(outputs)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms["total"]).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(100))
        return {k: float(v.detach()) for k, v in terms.items()}

    def state(self, step: int) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": step,
        }

    def restore(self, state: dict[str, Any]) -> int:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        return int(state["step"])


def make_trainer(
    model: Any, config: Config, total_steps: int, device: Any, normalise: Any = None, ranks: Any = None
) -> Trainer:
    """AdamW with open_clip's betas and weight-decay groups, warmup + cosine, the loss terms of
    config.train, and autocast (`device.training_precision`: fp16 with a grad scaler on GPU, bf16
    on CPUs with native bf16, else fp32, unless set); with `ranks` of several processes, the
    forward pass in DDP and the loss over the global batch."""
    import torch

    from harmosearch.model.device import autocast_dtype, training_precision
    from harmosearch.train.losses import HarmoLoss

    tc = config.train
    optimizer = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.lr, betas=(0.9, 0.98), eps=1e-6)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, tc.warmup_steps, total_steps))
    precision = training_precision(device, tc.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype(device, precision) == torch.float16)
    loss_fn = HarmoLoss(tc.losses, tc.w_lrc, tc.w_gr, tc.gr_variant, tc.w_tight)
    parallel = None
    if ranks is not None and ranks.world > 1:
        from harmosearch.train.distributed import data_parallel

        parallel = data_parallel(model, device)
    return Trainer(model, config, loss_fn, optimizer, schedule, scaler, device, precision, normalise, ranks, parallel)


def training_set(samples: list[Any], model: Any, config: Config) -> tuple[Any, Any]:
    """The dataset of `samples` for `model`, and the (mean, std) its uint8 batches are finished
    with (None when its items are already normalised)."""
    from harmosearch.model.clip_adapter import eval_transform, image_size_of, tokenizer_for
    from harmosearch.model.encoder import split_transform
    from harmosearch.train.data import PixelCache, TrainingSet

    tc, ec = config.train, config.encoder
    image_size = image_size_of(model)
    transform = eval_transform(model, ec.resize)
    split = split_transform(transform)
    fits = PixelCache.nbytes(len(samples), image_size) <= tc.pixel_cache_mb * 2**20
    tokenizer = tokenizer_for(resolve_name(ec.model))
    dataset = TrainingSet(
        samples,
        transform,
        tokenizer,
        int(tokenizer.context_length),
        tuple(model.visual.grid_size),
        image_size,
        ec.resize,
        tc.seed,
        ec.parser,
        tc.match,
        lexeme_source=tc.lexeme_source,
        lexeme_mode=ec.lexeme_mode,
        prompt=ec.lexeme_prompt,
        loose_factor=tc.loose_factor,
        distractors=tc.distractors if "tight" in tc.losses else (),
        split=split,
        cache=PixelCache(len(samples), image_size) if split is not None and fits else None,
    )
    return dataset, split[1] if split is not None else None


def resolve_name(spec: str) -> str:
    from harmosearch.model.loading import resolve_spec

    return resolve_spec(spec).name


def total_steps(n_samples: int, tc: Any) -> tuple[int, int]:
    """(steps per epoch, total steps): full batches only; max_steps caps the total (0: no cap)."""
    per_epoch = n_samples // tc.batch_size
    total = per_epoch * tc.epochs
    if tc.max_steps:
        total = min(total, tc.max_steps)
    return per_epoch, total


def training_data(data: Path, config: Config) -> list[Any]:
    """The samples of a training set, checked to fill at least one batch."""
    from harmosearch.train.data import load_dataset

    samples = load_dataset(Path(data))
    if len(samples) < config.train.batch_size:
        raise DataError(f"{data} has {len(samples)} samples, fewer than one batch of {config.train.batch_size}")
    return samples


def train(
    config: Config,
    data: Path,
    out: Path,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = True,
    samples: list[Any] | None = None,
) -> TrainResult:
    """Fine-tune config.encoder.model on `data` (or its already loaded `samples`) with
    config.train; write checkpoints under `out`. Started by torchrun, the processes train
    together (`train.distributed`); `on_step` is called on rank 0 only."""
    import torch

    from harmosearch.model.device import resolve_device
    from harmosearch.model.loading import canonical_spec
    from harmosearch.train.distributed import join

    out = Path(out)
    check_folder(out, "--out")  # before the model loads
    config = replace(config, encoder=replace(config.encoder, model=canonical_spec(config.encoder.model)))
    samples = samples if samples is not None else training_data(data, config)
    ranks, device = join(resolve_device(config.encoder.device), config.train.batch_size)
    try:
        # Seeded for reproducible runs, inside a fork of the random state so the caller's is untouched.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(config.train.seed)
            return _run(config, samples, out, device, on_step if ranks.main else None, resume, ranks)
    finally:
        ranks.close()


def _run(
    config: Config,
    samples: list[Any],
    out: Path,
    device: Any,
    on_step: Callable[[dict[str, Any]], None] | None,
    resume: bool,
    ranks: Any,
) -> TrainResult:
    import torch

    from harmosearch.model.loading import load_model, model_config_of, resolve_spec

    tc = config.train
    checkpoint = latest_checkpoint(out) if resume else None
    source = resolve_spec(str(checkpoint) if checkpoint else config.encoder.model)
    model, meta = load_model(source)
    model_cfg = model_config_of(source if checkpoint else resolve_spec(config.encoder.model))
    # The phrases the training annotations name, which a search weighs lexemes against
    # (contrast.py); without any, the starting model's own.
    vocabulary = training_vocabulary([link.text for sample in samples for link in sample.links]) or list(
        meta.get("vocabulary") or ()
    )
    model = model.to(device).train()
    dataset, normalise = training_set(samples, model, config)
    per_epoch, total = total_steps(len(samples), tc)
    trainer = make_trainer(model, config, total, device, normalise, ranks)
    step = (
        trainer.restore(torch.load(checkpoint / TRAINER_STATE, map_location=device, weights_only=False))
        if checkpoint
        else 0
    )
    log = _MetricsLog(out, step, config, write=ranks.main)
    last: dict[str, float] = {}
    while step < total:
        epoch, position = divmod(step, per_epoch)
        dataset.epoch = epoch
        batches = [ranks.part(b, tc.batch_size) for b in _batches(len(samples), tc.batch_size, tc.seed, epoch)]
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches[position:], num_workers=tc.workers)
        started = time.perf_counter()
        for batch in loader:
            last = trainer.step(batch)
            step += 1
            if not math.isfinite(last["total"]):
                raise TrainingError(
                    f"training diverged at step {step}: the loss is {last['total']}; lower --lr or the loss "
                    "weights (--weights) and start again with --fresh"
                )
            record = log.write(step, epoch, trainer, last, time.perf_counter() - started)
            started = time.perf_counter()
            if on_step:
                on_step({**record, "total_steps": total})
            if step % tc.checkpoint_every == 0 and step < total:
                _checkpoint(out, f"step_{step:06d}", trainer, (model_cfg, vocabulary), step, ranks)
            if step >= total:
                break
    final = _checkpoint(out, f"step_{step:06d}", trainer, (model_cfg, vocabulary), step, ranks, final=True)
    if ranks.main:
        plot_losses(log.path, out / "loss_curve.png")
    return TrainResult(final, step, log.resumed_from, last)


def _checkpoint(
    out: Path,
    tag: str,
    trainer: Trainer,
    model: tuple[dict[str, Any], list[str]],
    step: int,
    ranks: Any,
    final: bool = False,
) -> Path:
    """A checkpoint (and with `final`, OUT/final) of the model (its open_clip config and its
    vocabulary) written by rank 0 while the other ranks wait, so that every rank resumes from,
    or returns, a complete folder."""
    if ranks.main:
        checkpoint = _save_checkpoint(out, tag, trainer, *model, step)
        if final:
            _publish_final(out, checkpoint)
    ranks.barrier()
    return out / "final" if final else out / "checkpoints" / tag


class _MetricsLog:
    """OUT/metrics.jsonl, one line per step; a resumed run drops lines past its checkpoint.
    Without `write` (the ranks other than 0) it only makes the records."""

    def __init__(self, out: Path, step: int, config: Config, write: bool = True) -> None:
        self.path = out / "metrics.jsonl"
        self.resumed_from = step
        self.enabled = write
        if not write:
            return
        out.mkdir(parents=True, exist_ok=True)
        if step == 0:
            self.path.unlink(missing_ok=True)
        elif self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
            self.path.write_text("".join(line + "\n" for line in kept))
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2, default=list))

    def write(self, step: int, epoch: int, trainer: Trainer, terms: dict[str, float], seconds: float) -> dict[str, Any]:
        record = {
            "step": step,
            "epoch": epoch,
            "lr": trainer.schedule.get_last_lr()[0],
            "samples_per_s": trainer.config.train.batch_size / max(seconds, 1e-9),
            "precision": trainer.precision,
            **terms,
        }
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        return record


def _save_checkpoint(
    out: Path, tag: str, trainer: Trainer, model_cfg: dict[str, Any], vocabulary: list[str], step: int
) -> Path:
    """OUT/checkpoints/TAG (a loadable model folder plus trainer.pt), written beside and renamed;
    the `latest` pointer moves to it; only the two newest step checkpoints are kept."""
    import torch

    from harmosearch.model.loading import write_model_bundle

    folder = out / "checkpoints"
    target, tmp = folder / tag, folder / f".{tag}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    base = trainer.config.encoder.model
    extra = {"step": step, "base_model": base, "vocabulary": vocabulary}
    write_model_bundle(trainer.model, model_cfg, tmp, trainer.config, extra)
    torch.save(trainer.state(step), tmp / TRAINER_STATE)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    pointer = folder / "latest"
    pointer.with_suffix(".tmp").write_text(tag)
    pointer.with_suffix(".tmp").replace(pointer)
    for old in sorted(folder.glob("step_*"))[:-2]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _publish_final(out: Path, checkpoint: Path) -> Path:
    """OUT/final: the last checkpoint without its optimizer state."""
    final, tmp = out / "final", out / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(checkpoint, tmp, ignore=shutil.ignore_patterns(TRAINER_STATE))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def plot_losses(metrics: Path, png: Path) -> None:
    """The loss terms over the steps, as a PNG (matplotlib's object API: no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line] if metrics.exists() else []
    if not rows:
        return
    fig = Figure(figsize=(7, 4), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for key in ("total", "gc", "lrc", "gr", "tight"):
        if key in rows[0]:
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=key, linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("harmosearch train")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png)
