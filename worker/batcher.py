"""Dynamic batching across requests.

Images from every message a worker holds go into one queue; a single model thread takes them
in batches. A batch is flushed when it holds ``max_batch`` images or when its *oldest* image
has waited ``max_wait`` seconds, whichever comes first, and never exceeds ``max_batch``.

Priorities: each image has a rank (0 high, 1 normal, 2 low). High images that wait beside lower
ones go alone in an express batch (a small one: the model's time grows with the batch), at most
every other batch; otherwise a batch takes the highest ranks first, except that each lower rank
with images waiting is guaranteed ``LOWER_SHARE`` of it. So a high image waits for at most the
batch running and one small batch, and low-priority images still make up at least every other
batch. (An age rule would not do: under a backlog every waiting image is old, and high ones
would queue behind them.)

Waiting is bounded: ``gather`` returns a message's outputs, or raises ``ModelStalledError`` once
the model has completed no batch for ``stall_after_s`` seconds while images wait, so a hung model
call cannot hold a message for ever. ``stalled_for`` tells the heartbeat the same thing.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from dataclasses import dataclass
from typing import Generic, TypeVar

from config.errors import ModelStalledError

log = logging.getLogger(__name__)

# The share of each batch guaranteed to each lower rank that has images waiting.
LOWER_SHARE = 0.25
# What one more batch costs beyond its bucket's compute, timed idle at warm-up: fetching and
# preparing its images, handing out results and, on a CPU, the model's own Python between its
# kernels, which waits for the message threads when the worker is busy (a batch of 8 took 35-48
# ms at 200 single-image jobs/s on 2 cores against 6 ms alone). ``split_plan`` adds it to every
# batch, so it splits only where padding wastes more, at the large buckets (33 -> 32 + 1, not 128).
BATCH_OVERHEAD_MS = 10.0
RANKS = 3
In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(frozen=True)
class BatchInfo:
    id: int
    size: int
    waited_ms: float  # how long the oldest image of the batch waited for it to fill
    run_ms: float


@dataclass
class _Pending(Generic[In, Out]):
    value: In
    future: Future[tuple[Out, BatchInfo]]
    since: float


class Batcher(Generic[In, Out]):
    def __init__(
        self,
        run: Callable[[list[In]], Sequence[Out]],
        *,
        max_batch: int,
        max_wait_s: float,
        name: str = "batcher",
        on_flush: Callable[[str], None] | None = None,
        size_for: Callable[[int], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run = run
        # Told why each batch was flushed (full, deadline or stop), for the worker's metrics.
        self._on_flush = on_flush
        # How many of n waiting images to run now (``split_plan``); all of them by default.
        self.size_for = size_for or (lambda n: n)
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        # Seconds for waits, stalls and batch times; a test's own clock lets it say how long a
        # model call takes without taking that long.
        self._clock = clock
        self._pending = _Ranked[In, Out]()
        self._cond = threading.Condition()
        self._stopped = False
        self._ids = itertools.count(1)
        self._running = 0  # images in the batch the model is working on
        # Monotonic time of the last sign of life: a batch completed, or work arrived at an idle batcher.
        self._progress = clock()
        self.last_batch_at: float | None = None  # wall-clock time of the last completed batch
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, values: Sequence[In], rank: int = 1) -> list[Future[tuple[Out, BatchInfo]]]:
        """Queue values for the model at ``rank`` (0 first); each future resolves to (output, the
        batch it ran in)."""
        now = self._clock()
        pending = [_Pending[In, Out](v, Future(), now) for v in values]
        with self._cond:
            if self._stopped:
                raise RuntimeError("batcher is stopped")
            if not self._pending and not self._running:
                self._progress = now
            self._pending.extend(rank, pending)
            self._cond.notify()
        return [p.future for p in pending]

    def stalled_for(self) -> float:
        """Seconds since the last batch completed while images wait or run; 0 when idle."""
        with self._cond:
            busy = bool(self._pending) or self._running > 0
            return self._clock() - self._progress if busy else 0.0

    def oldest_wait_s(self) -> float:
        """Seconds the oldest image not yet in a batch has waited; 0 when none waits."""
        with self._cond:
            return self._clock() - self._pending.oldest() if self._pending else 0.0

    def gather(
        self, futures: Sequence[Future[tuple[Out, BatchInfo]]], stall_after_s: float, poll_s: float = 1.0
    ) -> list[tuple[Out, BatchInfo]]:
        """The futures' results, in order; raises the first failure, or ``ModelStalledError`` once
        no batch has completed for ``stall_after_s`` while these wait."""
        left = list(futures)
        while left:
            _, undone = wait(left, timeout=min(poll_s, stall_after_s), return_when=FIRST_EXCEPTION)
            if any(f.done() and f.exception() is not None for f in left):
                break  # result() below raises it
            if undone and self.stalled_for() > stall_after_s:
                raise ModelStalledError(
                    f"the model completed no batch for {stall_after_s:g}s (INKQ_STALL_TIMEOUT_S); "
                    "releasing the message to another worker"
                )
            left = list(undone)
        return [f.result(timeout=0) for f in futures]

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=30)

    def _take(self) -> list[_Pending[In, Out]] | None:
        with self._cond:
            while not self._pending and not self._stopped:
                self._cond.wait()
            if not self._pending:
                return None
            deadline = self._pending.oldest() + self.max_wait_s
            while len(self._pending) < self.max_batch and not self._stopped:
                left = deadline - self._clock()
                if left <= 0:
                    break
                self._cond.wait(left)
            ready = min(len(self._pending), self.max_batch)
            batch = self._pending.take(max(1, min(ready, self.size_for(ready))))
            self._running = len(batch)
            full = len(batch) == self.max_batch
            reason = "split" if len(batch) < ready else "full" if full else "stop" if self._stopped else "deadline"
        if self._on_flush is not None:
            self._on_flush(reason)
        return batch

    def _done(self) -> None:
        with self._cond:
            self._running = 0
            self._progress = self._clock()
            self.last_batch_at = time.time()

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            start = self._clock()
            try:
                outputs = self._run([p.value for p in batch])
                if len(outputs) != len(batch):
                    raise RuntimeError(f"model returned {len(outputs)} outputs for {len(batch)} inputs")
            except Exception as exc:  # the waiting messages decide what a failed batch means
                log.exception("batch of %d failed", len(batch))
                self._done()
                for p in batch:
                    p.future.set_exception(exc)
                continue
            self._done()
            info = BatchInfo(
                next(self._ids),
                len(batch),
                (start - min(p.since for p in batch)) * 1000,
                (self._clock() - start) * 1000,
            )
            for p, out in zip(batch, outputs, strict=True):
                p.future.set_result((out, info))
        for p in self._pending.take(len(self._pending)):
            p.future.set_exception(RuntimeError("batcher stopped"))


def split_plan(bucket_ms: dict[int, float], max_batch: int) -> list[int]:
    """``plan[n]``: how many of ``n`` waiting images to run now, so that all ``n`` are done
    soonest given what one batch of each bucket costs (a batch is padded up to its bucket).

    Forty images on buckets 8/32/128 run as 32 then 8 rather than as one batch padded to 128,
    which costs about three batches of 32. Found by a small dynamic programme over 0..max_batch,
    each step taking either everything left or a full smaller bucket; every batch also costs
    ``BATCH_OVERHEAD_MS``, so small backlogs are never cut up. Without costs: all ``n``."""
    plan = list(range(max_batch + 1))
    if not bucket_ms:
        return plan
    sizes = sorted(bucket_ms)

    def cost(k: int) -> float:
        return BATCH_OVERHEAD_MS + bucket_ms[next((b for b in sizes if b >= k), sizes[-1])]

    best = [0.0] * (max_batch + 1)  # time to clear n images
    for n in range(1, max_batch + 1):
        options = [n] + [b for b in sizes if b < n]
        plan[n] = min(options, key=lambda k: (cost(k) + best[n - k], -k))
        best[n] = cost(plan[n]) + best[n - plan[n]]
    return plan


class _Ranked(Generic[In, Out]):
    """Waiting images, one FIFO per rank."""

    def __init__(self) -> None:
        self._queues: list[deque[_Pending[In, Out]]] = [deque() for _ in range(RANKS)]
        self._express_last = False

    def __len__(self) -> int:
        return sum(map(len, self._queues))

    def extend(self, rank: int, pending: list[_Pending[In, Out]]) -> None:
        self._queues[min(max(rank, 0), RANKS - 1)].extend(pending)

    def oldest(self) -> float:
        return min(q[0].since for q in self._queues if q)

    def take(self, n: int) -> list[_Pending[In, Out]]:
        """Up to ``n`` images: an express batch of the high ones, or each lower rank's guaranteed
        share first, then the rest by rank."""
        high, lower = self._queues[0], any(self._queues[1:])
        if high and lower and len(high) < n and not self._express_last:
            self._express_last = True
            return [high.popleft() for _ in range(len(high))]
        self._express_last = False
        batch: list[_Pending[In, Out]] = []
        share = max(1, int(n * LOWER_SHARE)) if n >= RANKS else 0
        for q in self._queues[1:]:
            batch += [q.popleft() for _ in range(min(share, len(q), n - len(batch)))]
        for q in self._queues:
            while len(batch) < n and q:
                batch.append(q.popleft())
        return batch
