"""Decode and preprocess a batch of images: in the caller's thread, or in a pool of processes.

On a CPU-only host the model needs every core, so a worker preprocesses in the model's own
thread just before each batch (see worker/replica.py). On a GPU host the model needs almost no
CPU, and one thread preparing every image holds a worker to about 3,000 images/s however fast
the GPU (BENCHMARKS.md, GPU run); there a pool of processes prepares each batch in parallel.
Processes, not threads: most of preprocessing is Python and numpy work that holds the GIL.

Each image ends as an ``Outcome``: the network's input or the reason it has none. Field images
(``field_task``) end as a ``FieldInput``: their candidate characters and line, cut here too. A process that
dies on an image (a decoder crash, the kernel's OOM killer) fails that image alone: the pool is
rebuilt and the batch's unfinished images are retried one per task, so the image that kills its
process again is the one failed. torch-free: pool processes import only this and ``scan``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial

import numpy as np

from config.errors import BlankImageError, ImageError, ImageTooLargeError
from recognizer import scan
from recognizer.decoding import decode_colour
from recognizer.fieldprep import FieldInput, prepare_field
from recognizer.fields import ReaderParams

__all__ = [
    "FIELD_POOL_MIN_BATCH",
    "Outcome",
    "Preprocessor",
    "auto_workers",
    "failure_reason",
    "field_task",
    "prepare_field_one",
    "prepare_one",
]

log = logging.getLogger(__name__)

# A batch smaller than this is prepared in the caller's thread: shipping a handful of images to
# other processes and back costs more than preparing them.
POOL_MIN_BATCH = 8
# A field costs tens of times a digit's preparation (rules, cuts, a line), so two already pay.
FIELD_POOL_MIN_BATCH = 2
PROCESS_DIED = "the preprocessing process died while reading this image ({})"


@dataclass(frozen=True)
class Outcome:
    """One image's preprocessing: the network's input (1, 28, 28) or a field's (``FieldInput``),
    or why there is none."""

    input: np.ndarray | FieldInput | None
    error: str | None
    ms: float  # time spent preparing it, in whichever process did
    reason: str | None = None  # the error's short class, for metrics: decode, too_large or blank


def _attempt(prepare: Callable[[], np.ndarray | FieldInput]) -> Outcome:
    """``prepare()``'s result as an Outcome, timed; whatever it raises fails this image alone."""
    start = time.perf_counter()
    try:
        return Outcome(prepare(), None, _ms(start))
    except ImageError as exc:
        return Outcome(None, str(exc), _ms(start), failure_reason(exc))
    except Exception as exc:  # defence in depth: whatever a decoder raises, never the batch
        log.warning("preprocessing raised %s, not ImageError", type(exc).__name__, exc_info=True)
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:300], _ms(start), "decode")


def prepare_one(blob: bytes, max_bytes: int, max_pixels: int) -> Outcome:
    return _attempt(lambda: scan.preprocess(blob, max_bytes=max_bytes, max_pixels=max_pixels))


def prepare_field_one(blob: bytes, max_bytes: int, max_pixels: int, with_line: bool) -> Outcome:
    """A field image decoded in colour (drop-out rules are told apart by it) and prepared for the
    segmenting reader, and for the line reader ``with_line``."""

    def prepare() -> FieldInput:
        image = decode_colour(blob, max_bytes=max_bytes, max_pixels=max_pixels)
        return prepare_field(image, ReaderParams(max_pixels=max_pixels), with_line=with_line)

    return _attempt(prepare)


def failure_reason(exc: ImageError) -> str:
    """A short class of why an image failed, for a metric label (never the error's text)."""
    if isinstance(exc, ImageTooLargeError):
        return "too_large"
    return "blank" if isinstance(exc, BlankImageError) else "decode"


Task = Callable[[list[bytes], int, int], list[Outcome]]


def _prepare_chunk(blobs: list[bytes], max_bytes: int, max_pixels: int) -> list[Outcome]:
    return [prepare_one(blob, max_bytes, max_pixels) for blob in blobs]


def _prepare_field_chunk(blobs: list[bytes], max_bytes: int, max_pixels: int, *, with_line: bool) -> list[Outcome]:
    return [prepare_field_one(blob, max_bytes, max_pixels, with_line) for blob in blobs]


def field_task(with_line: bool) -> Task:
    """The pool's task for field images; ``with_line`` when the served version has a line reader."""
    return partial(_prepare_field_chunk, with_line=with_line)


def _pid(_: int) -> int:
    return os.getpid()


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def auto_workers(device_type: str, cores: int | None = None) -> int:
    """Pool size for ``INKQ_PREPROCESS_WORKERS=-1``: none on a CPU-only host (the model needs the
    cores); on a GPU host every core but two (the model's thread and the message threads)."""
    cores = cores or os.cpu_count() or 1
    return 0 if device_type == "cpu" else max(1, cores - 2)


class Preprocessor:
    """``map(blobs)`` -> one ``Outcome`` per blob, in order; ``workers`` processes (0: inline).
    ``map(blobs, field_task(...), FIELD_POOL_MIN_BATCH)`` prepares field images instead."""

    def __init__(self, workers: int, *, max_bytes: int, max_pixels: int, task: Task | None = None) -> None:
        self.workers = workers
        # What a pool process runs on a chunk of images; tests pass one that can kill its process.
        self.task: Task = task or _prepare_chunk
        self.limits = (max_bytes, max_pixels)
        self._pool: ProcessPoolExecutor | None = None
        self.pids: set[int] = set()
        self._broken = False  # a process died: the pool must be replaced before its next use
        self.rebuilds = 0  # pools replaced after a process died
        if workers > 0:
            self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, never fork: the parent holds CUDA state and threads that a fork would copy broken.
        pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        # Start every process now (imports take a second each), not under the first batch.
        self.pids = set(pool.map(_pid, range(self.workers)))
        return pool

    def map(self, blobs: list[bytes], task: Task | None = None, min_batch: int = POOL_MIN_BATCH) -> list[Outcome]:
        task = task or self.task
        if self._pool is None or len(blobs) < min_batch:
            return task(blobs, *self.limits)
        if self._broken:  # the last batch's last suspect killed its process: a new pool first
            self._replace()
        size = -(-len(blobs) // self.workers)
        chunks = [blobs[i : i + size] for i in range(0, len(blobs), size)]
        try:
            futures = [self._pool.submit(task, chunk, *self.limits) for chunk in chunks]
            return [outcome for future in futures for outcome in future.result()]
        except BrokenProcessPool:
            self._broken = True
            return self._isolate(blobs, task)

    def _isolate(self, blobs: list[bytes], task: Task) -> list[Outcome]:
        """After a process died: the batch again, one image per task, on a new pool; then each
        image whose task was lost with a dying process alone, so only an image that kills its
        process by itself fails."""
        log.warning("a preprocessing process died; retrying the batch's %d images one by one", len(blobs))
        outcomes: list[Outcome | None] = [None] * len(blobs)
        suspects = self._each(blobs, list(range(len(blobs))), outcomes, task)
        for i in suspects:
            if self._each(blobs, [i], outcomes, task):
                outcomes[i] = Outcome(None, PROCESS_DIED.format("its process exited abruptly"), 0.0, "decode")
        return [o for o in outcomes if o is not None]

    def _each(self, blobs: list[bytes], indices: list[int], outcomes: list[Outcome | None], task: Task) -> list[int]:
        """Prepare ``indices`` one per task, on a new pool if a process died, filling ``outcomes``;
        returns those whose task was lost to a process that died."""
        if self._broken or self._pool is None:
            self._replace()
        assert self._pool is not None
        futures: dict[int, Future[list[Outcome]]] = {
            i: self._pool.submit(task, [blobs[i]], *self.limits) for i in indices
        }
        lost = []
        for i, future in futures.items():
            try:
                outcomes[i] = future.result()[0]
            except BrokenProcessPool:
                self._broken = True
                lost.append(i)
        return lost

    def _replace(self) -> None:
        """A new pool in place of one a dying process broke."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self.rebuilds += 1
        self._pool, self._broken = self._new_pool(), False

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
