"""The training loop: AdamW, warmup + cosine, grad clipping, autocast, checkpoints and resume.

Runs are reproducible on the CPU: the data order and each sample's caption are functions of
(seed, epoch, index), so a run resumed from a checkpoint ends with the same weights as an
unbroken one. Checkpoints are open_clip local-dir folders plus harmosearch.json, loadable by
`--model PATH`; trainer.pt beside them holds the optimizer and schedule state.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harmosearch.config import Config
from harmosearch.errors import DataError

TRAINER_STATE = "trainer.pt"


@dataclass
class TrainResult:
    out: Path
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


def forward_batch(
    model: Any,
    batch: dict[str, Any],
    dense_mode: str,
    need_crops: bool,
    lexeme_pool: str = "mean",
    lexeme_mode: str = "token",
    need_distractors: bool = False,
) -> dict[str, Any]:
    """Everything the losses need from one batch, in one pass of each tower."""
    import torch
    import torch.nn.functional as F
    from torchvision.ops import roi_align

    from harmosearch.encoder import text_forward, vision_forward
    from harmosearch.regions import pool

    pixels, tokens, valid = batch["pixels"], batch["tokens"], batch["valid"]
    pooled, dense = vision_forward(model, pixels, dense_mode)
    text_pooled, per_token = text_forward(model, tokens)
    boxes = [batch["boxes"][b][valid[b]] for b in range(len(valid))]
    kinds = batch["distractor_boxes"].shape[2] if need_distractors else 0
    if kinds:  # one RoIAlign over each image's object boxes followed by their off-object boxes
        off = [batch["distractor_boxes"][b][valid[b]].reshape(-1, 4) for b in range(len(valid))]
        pooled_per_image = pool(dense.float(), [torch.cat(pair) for pair in zip(boxes, off, strict=True)])
        regions = torch.cat([p[: len(b)] for p, b in zip(pooled_per_image, boxes, strict=True)])
        distractors = torch.cat([p[len(b) :] for p, b in zip(pooled_per_image, boxes, strict=True)])
    else:
        regions = torch.cat(pool(dense.float(), boxes))
    spans = batch["spans"]
    if "lexeme_tokens" in batch:  # every lexeme embedded from its own prompt
        prompt_pooled, prompt_tokens = text_forward(model, batch["lexeme_tokens"][valid])
        if lexeme_mode == "prompt":
            lexemes = prompt_pooled.float()
        else:
            lexemes = _pool_token_spans(prompt_tokens, spans[valid][:, None], lexeme_pool)[:, 0]
    else:
        lexemes = _pool_token_spans(per_token, spans, lexeme_pool)[valid]
    owner = torch.nonzero(valid)[:, 0]
    out = {
        "image": F.normalize(pooled.float(), dim=-1),
        "text": F.normalize(text_pooled.float(), dim=-1),
        "regions": regions.float(),
        "lexemes": F.normalize(lexemes.float(), dim=-1),
        "lexeme_ids": batch["lexeme_ids"][valid],
        "owner": owner,
        "scale": model.logit_scale.exp().clamp(max=100).float(),
    }
    if kinds:
        out["distractors"] = distractors.float().reshape(len(regions), kinds, -1)  # [M, kinds, D]
    if need_crops:
        size = pixels.shape[-1]
        crop_boxes = [batch["crop_boxes"][b][valid[b]] for b in range(len(valid))]
        with torch.no_grad():
            crops = roi_align(pixels, crop_boxes, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
            out["crops"] = (
                F.normalize(vision_forward(model, crops, dense_mode)[0].float(), dim=-1) if len(crops) else crops
            )
    return out


def _pool_token_spans(per_token: Any, spans: Any, pool: str) -> Any:
    """Batched pool_spans: per_token [B, T, D], spans [B, K, 2] -> [B, K, D] (not renormalised)."""
    import torch
    import torch.nn.functional as F

    normed = F.normalize(per_token.float(), dim=-1)
    positions = torch.arange(normed.shape[1], device=normed.device)
    start = spans[..., 1:] - 1 if pool == "last" else spans[..., :1]
    inside = (positions[None, None, :] >= start) & (positions[None, None, :] < spans[..., 1:])
    counts = inside.sum(-1, keepdim=True).clamp(min=1)
    return torch.einsum("bkt,btd->bkd", inside.float(), normed) / counts


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


def train(
    config: Config,
    data: Path,
    out: Path,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = True,
) -> TrainResult:
    """Fine-tune config.encoder.model on `data` with config.train; write checkpoints under `out`."""
    import torch
    from open_clip import get_tokenizer
    from open_clip.transform import image_transform

    from harmosearch.device import autocast_dtype, resolve_device
    from harmosearch.encoder import (
        load_model,
        model_config_of,
        pixels_from_uint8,
        resolve_spec,
        split_transform,
        write_model_bundle,
    )
    from harmosearch.train.data import PixelCache, TrainingSet, load_dataset
    from harmosearch.train.losses import HarmoLoss

    tc, ec = config.train, config.encoder
    out = Path(out)
    torch.manual_seed(tc.seed)
    samples = load_dataset(Path(data))
    if len(samples) < tc.batch_size:
        raise DataError(f"{data} has {len(samples)} samples, fewer than one batch of {tc.batch_size}")
    device = resolve_device(ec.device)
    checkpoint = latest_checkpoint(out) if resume else None
    source = resolve_spec(str(checkpoint) if checkpoint else ec.model)
    base_source = resolve_spec(ec.model)
    model, _ = load_model(source)
    model_cfg = model_config_of(base_source if not checkpoint else source)
    model = model.to(device).train()
    tokenizer = get_tokenizer(source.name)
    image_size = model.visual.image_size
    image_size = int(image_size[0] if isinstance(image_size, tuple | list) else image_size)
    import open_clip

    pre = open_clip.get_model_preprocess_cfg(model)
    transform = image_transform(
        image_size, is_train=False, mean=pre.get("mean"), std=pre.get("std"), resize_mode=ec.resize
    )
    split = split_transform(transform)
    fits = PixelCache.nbytes(len(samples), image_size) <= tc.pixel_cache_mb * 2**20
    cache = PixelCache(len(samples), image_size) if split is not None and fits else None
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
        cache=cache,
    )
    steps_per_epoch = len(samples) // tc.batch_size
    total = steps_per_epoch * tc.epochs
    if tc.max_steps is not None:
        total = min(total, tc.max_steps) if tc.max_steps > 0 else total
    loss_fn = HarmoLoss(tc.losses, tc.w_lrc, tc.w_gr, tc.gr_variant, tc.w_tight)
    optimizer = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.lr, betas=(0.9, 0.98), eps=1e-6)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, tc.warmup_steps, total))
    dtype = autocast_dtype(
        device, tc.precision if tc.precision != "auto" else ("bf16" if device.type == "cpu" else "fp16")
    )
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    step = 0
    if checkpoint:
        state = torch.load(checkpoint / TRAINER_STATE, map_location=device, weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        scaler.load_state_dict(state["scaler"])
        step = int(state["step"])
    resumed_from = step
    out.mkdir(parents=True, exist_ok=True)
    metrics_file = out / "metrics.jsonl"
    if step == 0 and metrics_file.exists():
        metrics_file.unlink()
    else:
        _truncate_metrics(metrics_file, step)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2, default=list))

    def save(tag: str) -> Path:
        target = out / "checkpoints" / tag
        tmp = out / "checkpoints" / f".{tag}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        write_model_bundle(model, model_cfg, tmp, config, {"step": step, "base_model": ec.model})
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "scaler": scaler.state_dict(),
                "step": step,
            },
            tmp / TRAINER_STATE,
        )
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        pointer = out / "checkpoints" / "latest"
        pointer.with_suffix(".tmp").write_text(tag)
        pointer.with_suffix(".tmp").replace(pointer)
        for old in sorted((out / "checkpoints").glob("step_*"))[:-2]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    last: dict[str, float] = {}
    loader_kwargs: dict[str, Any] = {"num_workers": tc.workers, "persistent_workers": False}
    while step < total:
        epoch, position = divmod(step, steps_per_epoch)
        dataset.epoch = epoch
        batches = _batches(len(samples), tc.batch_size, tc.seed, epoch)[position:]
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, **loader_kwargs)
        started = time.perf_counter()
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            if split is not None:
                batch["pixels"] = pixels_from_uint8(batch["pixels"], *split[1])
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                outputs = forward_batch(
                    model,
                    batch,
                    ec.dense_mode,
                    "gr" in tc.losses and tc.gr_variant == "crop",
                    ec.lexeme_pool,
                    ec.lexeme_mode,
                    "tight" in tc.losses,
                )
            terms = loss_fn(outputs)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(terms["total"]).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            step += 1
            elapsed = time.perf_counter() - started
            last = {k: float(v.detach()) for k, v in terms.items()}
            record = {
                "step": step,
                "epoch": epoch,
                "lr": schedule.get_last_lr()[0],
                "samples_per_s": tc.batch_size / max(elapsed, 1e-9),
                **last,
            }
            started = time.perf_counter()
            with metrics_file.open("a") as f:
                f.write(json.dumps(record) + "\n")
            if on_step:
                on_step({**record, "total_steps": total})
            if step % tc.checkpoint_every == 0 and step < total:
                save(f"step_{step:06d}")
            if step >= total:
                break
    final = save(f"step_{step:06d}")
    final_dir = out / "final"
    tmp = out / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(final, tmp, ignore=shutil.ignore_patterns(TRAINER_STATE))
    shutil.rmtree(final_dir, ignore_errors=True)
    tmp.rename(final_dir)
    plot_losses(metrics_file, out / "loss_curve.png")
    return TrainResult(out, final_dir, step, resumed_from, last)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines past the resumed step (written after the checkpoint, before a crash)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


def plot_losses(metrics: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
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
    plt.close(fig)
