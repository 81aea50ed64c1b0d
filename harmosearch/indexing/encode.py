"""The one path from image files to vectors, shared by indexing and the benchmarks.

Files are decoded and resized in DataLoader worker processes (JPEGs in draft mode, every still
format through `media.formats`), batched as uint8 and normalised once per batch; each batch goes
through one forward pass of the image tower, giving global vectors and dense maps, from which
region proposals are pooled and selected. A video is one work item of its own: its worker
samples the frames (`media.video`), and each frame is encoded as an image with its time. On the
CPU the workers can encode their own batches too, each with its share of the cores, which uses
them better than one process whose threads the decoders keep interrupting.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harmosearch.config import Config, IndexConfig, MediaConfig, RegionConfig
from harmosearch.errors import DataError
from harmosearch.media.formats import media_kind, open_still

Progress = Callable[[str, int, int], None]


@dataclass
class Encoded:
    """One image's vectors: the global vector, the selected regions, and the probe boxes'
    vectors (boxes pooled as given, without selection: the benchmarks' ground-truth boxes).
    For a video frame, its time."""

    width: int
    height: int
    global_vector: np.ndarray  # [D]
    boxes: np.ndarray  # [N, 4] pixels
    scales: np.ndarray  # [N]
    vectors: np.ndarray  # [N, D]
    probes: np.ndarray | None = None  # [P, D]
    frame_time: float | None = None  # seconds from the start of a video; None for a still


@dataclass
class _Batch:
    """One batch of files: the decoded pictures (a still's image, a video's frames), and once
    encoded, their vectors."""

    files: int  # files in the batch, decoded or not
    positions: list[int]  # per picture: its file's position in the job's paths
    sizes: list[tuple[int, int]]
    times: list[float | None]  # per picture: its time in the video, None for a still
    failed: list[tuple[int, str]]
    pixels: Any = None  # uint8 [B, S, S, 3] or float [B, 3, S, S]; dropped once encoded
    fine_pixels: Any = None  # the same at the high-detail input size (regions.detail "high")
    segments: list[Any] | None = None  # per picture: its pixel segment boxes (regions.detail "high")
    encoded: list[Encoded] | None = None


class _BatchJob:
    """Dataset of batches for the DataLoader. Workers always decode and resize; with
    `encode_here` they also encode."""

    def __init__(
        self,
        paths: Sequence[Path],
        batches: list[list[int]],
        encoder: Any,
        regions: RegionConfig,
        user_boxes: Sequence[Any] | None,
        probe_boxes: Sequence[Any] | None,
        encode_here: bool,
        crops: Sequence[Any] | None = None,
        media: MediaConfig | None = None,
    ) -> None:
        from harmosearch.model.clip_adapter import eval_transform
        from harmosearch.model.encoder import split_transform
        from harmosearch.regions.proposals import detail_size

        self.paths = paths
        self.batches = batches
        self.encoder = encoder
        self.regions = regions
        self.user_boxes = user_boxes
        self.probe_boxes = probe_boxes
        self.encode_here = encode_here
        self.crops = crops
        self.media = media or MediaConfig()
        self.split = split_transform(encoder.transform)
        self.fine_size = (
            detail_size(regions.detail, encoder.image_size, encoder.image_size // encoder.grid[0])
            if regions.detail != "normal"
            else None
        )
        self.fine_transform = (
            eval_transform(encoder.model, encoder.config.resize, self.fine_size) if self.fine_size else None
        )
        # A runtime that exports the model does so here, once, before the workers start.
        for size in (encoder.image_size, self.fine_size):
            if size:
                encoder.runner.prepare(size)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int) -> _Batch:
        import torch

        from harmosearch.model.encoder import pixels_from_uint8
        from harmosearch.regions.proposals import pixel_segment_boxes

        batch = _Batch(len(self.batches[b]), [], [], [], [])
        arrays, fine, segments = [], [], []
        for i in self.batches[b]:
            try:
                pictures = self._decode(i)
            except DataError as exc:
                batch.failed.append((i, str(exc)))
                continue
            for image, width, height, seconds in pictures:
                if self.split is not None:
                    arrays.append(np.asarray(self.split[0](image), dtype=np.uint8))
                else:
                    arrays.append(self.encoder.transform(image))
                if self.fine_transform is not None:
                    fine.append(self.fine_transform(image))
                if self.regions.pixel_segments:
                    boxes = pixel_segment_boxes(image, width, height, tuple(self.regions.pixel_segments))
                    segments.append(torch.from_numpy(boxes))
                batch.positions.append(i)
                batch.sizes.append((width, height))
                batch.times.append(seconds)
        if arrays:
            if self.split is not None:
                batch.pixels = pixels_from_uint8(torch.from_numpy(np.stack(arrays)), *self.split[1])
            else:
                batch.pixels = torch.stack(arrays)
            if fine:
                batch.fine_pixels = torch.stack(fine)
            if segments:
                batch.segments = segments
        return self.encode(batch) if self.encode_here else batch

    def _decode(self, i: int) -> list[tuple[Any, int, int, float | None]]:
        """(picture, full width, full height, time in the video or None) for file i: a still's
        one image, a video's sampled frames; cropped when the job has a crop for the file."""
        path = self.paths[i]
        if media_kind(path) == "video":
            from harmosearch.media.video import sample_frames

            m = self.media
            frames = sample_frames(
                path, m.every_s, m.scene_threshold, m.max_frames, min_side=self.fine_size or self.encoder.image_size
            )
            pictures = [(f.image, f.width, f.height, f.time) for f in frames]
        else:
            image, width, height = open_still(path, self.fine_size or self.encoder.image_size)
            pictures = [(image, width, height, None)]
        if self.crops is not None and self.crops[i] is not None:
            pictures = [(*crop_part(image, w, h, self.crops[i]), t) for image, w, h, t in pictures]
        return pictures

    def encode(self, batch: _Batch) -> _Batch:
        """Global vectors, selected regions and probe vectors for the decoded pictures of a batch,
        at most encoder.config.batch_size per forward pass (a video may bring many frames)."""
        from harmosearch.regions.proposals import image_regions

        batch.encoded = []
        if batch.pixels is None:
            return batch
        encoder = self.encoder
        step = encoder.config.batch_size
        for lo in range(0, len(batch.positions), step):
            part = slice(lo, lo + step)
            global_vectors, dense = encoder.encode_pixels(batch.pixels[part])
            fine = None
            if batch.fine_pixels is not None and self.fine_size is not None:
                fine = encoder.encode_pixels(batch.fine_pixels[part])[1]
            positions, sizes = batch.positions[part], batch.sizes[part]
            user = [self.user_boxes[i] for i in positions] if self.user_boxes is not None else None
            segments = batch.segments[part] if batch.segments is not None else None
            regions = image_regions(
                dense,
                global_vectors,
                sizes,
                encoder.grid,
                encoder.image_size,
                encoder.config.resize,
                self.regions,
                user,
                fine,
                segments,
            )
            probes = self._probes(dense, positions, sizes, fine)
            for (w, h), g, reg, probe, seconds in zip(
                sizes, global_vectors, regions, probes, batch.times[part], strict=True
            ):
                batch.encoded.append(
                    Encoded(w, h, g.numpy(), reg.boxes.numpy(), reg.scales.numpy(), reg.vectors.numpy(), probe, seconds)
                )
        batch.pixels = batch.fine_pixels = batch.segments = None
        return batch

    def _probes(
        self, dense: Any, positions: list[int], sizes: list[tuple[int, int]], fine: Any
    ) -> list[np.ndarray | None]:
        import torch

        from harmosearch.regions.proposals import pool_detailed, to_grid

        if self.probe_boxes is None:
            return [None] * len(positions)
        encoder, grids = self.encoder, []
        for i, (w, h) in zip(positions, sizes, strict=True):
            boxes = torch.as_tensor(np.asarray(self.probe_boxes[i], dtype=np.float32)).reshape(-1, 4)
            grids.append(to_grid(boxes, w, h, encoder.grid, encoder.image_size, encoder.config.resize))
        return [p.numpy() for p in pool_detailed(dense, grids, fine)]


def crop_part(image: Any, width: int, height: int, box: Sequence[float]) -> tuple[Any, int, int]:
    """The part of a decoded image inside `box` (pixels of the full image, which draft decoding
    may have shrunk), and that part's full-resolution size."""
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise DataError(f"crop box {tuple(box)} lies outside the {width}x{height} image")
    sx, sy = image.width / width, image.height / height
    part = image.crop((round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)))
    return part, round(x1 - x0), round(y1 - y0)


class _EncoderThreads:
    """worker_init_fn for workers that encode: the cores are shared out among them (the
    DataLoader would leave each worker a single thread)."""

    def __init__(self, workers: int) -> None:
        self.threads = max(1, len(os.sched_getaffinity(0)) // max(workers, 1))

    def __call__(self, _: int) -> None:
        import torch

        torch.set_num_threads(self.threads)


def _decoder_priority(_: int) -> None:
    """Workers that only decode yield the cores to the model's threads in the main process and
    use what it leaves idle (e.g. while regions are selected)."""
    with contextlib.suppress(OSError):
        os.nice(10)


def encode_in_workers(config: IndexConfig, device: Any, batches: int) -> bool:
    """Where images are encoded: in the worker processes (CPU, two or more workers and batches)
    or in the main process (GPU, or nothing to share out). index.encode_in forces either."""
    if config.encode_in != "auto":
        return config.encode_in == "workers" and config.workers > 0
    return str(device) == "cpu" and config.workers >= 2 and batches >= 2


def file_batches(paths: Sequence[Path], size: int) -> list[list[int]]:
    """Positions of `paths` in work items: stills in groups of `size`, each video alone (its
    frames make a batch of their own)."""
    batches: list[list[int]] = []
    stills: list[int] = []
    for i, path in enumerate(paths):
        if media_kind(path) == "video":
            batches.append([i])
            continue
        stills.append(i)
        if len(stills) == size:
            batches.append(stills)
            stills = []
    if stills:
        batches.append(stills)
    return batches


def encode_files(
    paths: Sequence[Path],
    encoder: Any,
    config: Config,
    user_boxes: Sequence[Any] | None = None,
    probe_boxes: Sequence[Any] | None = None,
    progress: Progress | None = None,
    crops: Sequence[Any] | None = None,
) -> Iterator[tuple[int, Encoded | str]]:
    """Encode image and video files in batches of config.encoder.batch_size, with config.regions,
    config.media and the workers of config.index; yields (position in `paths`, its Encoded
    vectors or the one-line reason it could not be decoded), batch by batch. A still yields once;
    a video yields once per sampled frame, its frames one after another in time order, each with
    its frame_time (or once, with the reason it failed).
    user_boxes[i] are extra region proposals kept first; probe_boxes[i] are pooled as given;
    crops[i] (pixels, or None) encodes only that part of image i, which then stands for the image."""
    import torch

    if not paths:
        return
    batches = file_batches(paths, config.encoder.batch_size)
    in_workers = encode_in_workers(config.index, encoder.device, len(batches))
    job = _BatchJob(paths, batches, encoder, config.regions, user_boxes, probe_boxes, in_workers, crops, config.media)
    workers = min(config.index.workers, len(batches)) if len(batches) > 1 else 0
    loader = torch.utils.data.DataLoader(
        job,
        batch_size=None,
        num_workers=workers,
        worker_init_fn=_EncoderThreads(workers) if in_workers else _decoder_priority,
    )
    done = 0
    for batch in loader:
        if batch.encoded is None:
            batch = job.encode(batch)
        yield from batch.failed
        yield from zip(batch.positions, batch.encoded or [], strict=True)
        done += batch.files
        if progress:
            progress("encoding", done, len(paths))
