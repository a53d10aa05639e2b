"""The dynamic batcher's flush policy, with an in-memory model."""

from __future__ import annotations

import threading
import time

import pytest

from worker.batcher import BATCH_OVERHEAD_MS, Batcher, split_plan


def echo(values: list[int]) -> list[int]:
    return [v * 10 for v in values]


def test_full_batch_flushes_at_once() -> None:
    batcher: Batcher[int, int] = Batcher(echo, max_batch=4, max_wait_s=60)
    try:
        start = time.monotonic()
        outs = [f.result(timeout=5) for f in batcher.submit([1, 2, 3, 4])]
        assert time.monotonic() - start < 5  # did not wait for max_wait
        assert [o for o, _ in outs] == [10, 20, 30, 40]
        assert {info.size for _, info in outs} == {4}
    finally:
        batcher.stop()


def test_hard_cap_splits_large_submissions() -> None:
    batcher: Batcher[int, int] = Batcher(echo, max_batch=3, max_wait_s=0.01)
    try:
        outs = [f.result(timeout=5) for f in batcher.submit(list(range(7)))]
        assert [o for o, _ in outs] == [v * 10 for v in range(7)]
        assert [info.size for _, info in outs] == [3, 3, 3, 3, 3, 3, 1]
    finally:
        batcher.stop()


def test_partial_batch_flushes_when_oldest_waited_max_wait() -> None:
    batcher: Batcher[int, int] = Batcher(echo, max_batch=100, max_wait_s=0.2)
    try:
        first = batcher.submit([1])
        late = batcher.submit([2])  # joins the batch the first item opened
        (out, info), (out2, info2) = first[0].result(timeout=5), late[0].result(timeout=5)
        assert (out, out2) == (10, 20)
        assert info.id == info2.id and info.size == 2
        assert info.waited_ms >= 190  # anchored to the oldest item, not the newest
    finally:
        batcher.stop()


def test_requests_from_many_threads_coalesce() -> None:
    batcher: Batcher[int, int] = Batcher(echo, max_batch=8, max_wait_s=0.5)
    go = threading.Barrier(8)
    infos = []

    def client(n: int) -> None:
        go.wait()
        infos.append(batcher.submit([n])[0].result(timeout=5)[1])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len({i.id for i in infos}) == 1 and infos[0].size == 8
    finally:
        batcher.stop()


def test_a_failed_batch_fails_its_futures_not_the_batcher() -> None:
    calls = []

    def flaky(values: list[int]) -> list[int]:
        calls.append(values)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return echo(values)

    batcher: Batcher[int, int] = Batcher(flaky, max_batch=2, max_wait_s=0.01)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            batcher.submit([1, 2])[0].result(timeout=5)
        assert batcher.submit([3])[0].result(timeout=5)[0] == 30
    finally:
        batcher.stop()


def test_gather_gives_up_on_a_stalled_model() -> None:
    from config.errors import ModelStalledError

    release = threading.Event()

    def hung(values: list[int]) -> list[int]:
        release.wait(30)  # a model call that never returns (until the test ends)
        return values

    batcher: Batcher[int, int] = Batcher(hung, max_batch=4, max_wait_s=0)
    try:
        assert batcher.stalled_for() == 0.0  # idle is not stalled
        futures = batcher.submit([1, 2])
        start = time.monotonic()
        with pytest.raises(ModelStalledError, match="INKQ_STALL_TIMEOUT_S"):
            batcher.gather(futures, stall_after_s=0.3, poll_s=0.05)
        assert 0.3 <= time.monotonic() - start < 3
        assert batcher.stalled_for() >= 0.3
    finally:
        release.set()
        batcher.stop()
    assert batcher.stalled_for() == 0.0 and batcher.last_batch_at is not None  # recovered once it returned


def test_gather_waits_on_a_slow_but_live_model() -> None:
    now = [0.0]  # the batcher's clock: each batch takes 0.1 s of it, and no real time is spent waiting
    checked = threading.Event()

    class Watched(Batcher[int, int]):
        def stalled_for(self) -> float:
            stalled = super().stalled_for()
            checked.set()
            return stalled

    def slow(values: list[int]) -> list[int]:
        now[0] += 0.1
        checked.clear()
        assert checked.wait(10), "gather checked for a stall while this batch ran"
        return values

    batcher = Watched(slow, max_batch=1, max_wait_s=0, clock=lambda: now[0])
    try:
        # Eight batches of 0.1 s: longer than the stall limit in all, but each one completes within it,
        # and gather looks for a stall during every one of them.
        outs = batcher.gather(batcher.submit(list(range(8))), stall_after_s=0.25, poll_s=0.01)
        assert [o for o, _ in outs] == list(range(8))
        assert now[0] > 3 * 0.25
    finally:
        batcher.stop()


def test_gather_raises_a_failed_batch_at_once() -> None:
    def broken(values: list[int]) -> list[int]:
        raise KeyError("model exploded")

    batcher: Batcher[int, int] = Batcher(broken, max_batch=4, max_wait_s=0)
    try:
        with pytest.raises(KeyError, match="model exploded"):
            batcher.gather(batcher.submit([1, 2, 3]), stall_after_s=30)
    finally:
        batcher.stop()


# Milliseconds per batch of each bucket, as a compiled bf16 engine measured them on 2 cores.
COSTS = {1: 3.1, 8: 5.3, 32: 13.7, 128: 49.4}


def test_split_plan_runs_a_full_smaller_bucket_when_that_clears_the_backlog_sooner() -> None:
    plan = split_plan(COSTS, 128)
    assert [plan[n] for n in (1, 2, 5, 8, 9, 32, 128)] == [1, 2, 5, 8, 9, 32, 128]  # small backlogs whole
    assert plan[33] == 32 and plan[40] == 32  # 32 then the rest, rather than padded to 128 (49.4 ms)

    def run(k: int) -> float:
        return BATCH_OVERHEAD_MS + COSTS[min(b for b in COSTS if b >= k)]

    def clear(m: int) -> float:
        return 0.0 if m == 0 else run(plan[m]) + clear(m - plan[m])

    for n in range(1, 129):  # never worse than running everything at once
        assert 1 <= plan[n] <= n
        assert clear(n) <= run(n) + 1e-9, n


def test_split_plan_without_costs_runs_everything() -> None:
    assert split_plan({}, 16) == list(range(17))
    flat = split_plan({1: 1.0, 8: 1.0, 32: 1.0}, 32)  # a GPU: a bigger bucket costs no more
    assert flat[9] == 9 and flat[32] == 32


def test_the_batcher_takes_what_the_plan_says() -> None:
    running, release = threading.Event(), threading.Event()
    sizes: list[int] = []

    def gated(values: list[int]) -> list[int]:
        sizes.append(len(values))
        running.set()
        release.wait(5)
        return echo(values)

    batcher: Batcher[int, int] = Batcher(
        gated, max_batch=32, max_wait_s=0.01, size_for=lambda n: 8 if 8 < n < 32 else n
    )
    try:
        first = batcher.submit([0])
        assert running.wait(5)  # the model holds the first image while nine queue behind it
        rest = batcher.submit(list(range(1, 10)))
        release.set()
        outs = [f.result(timeout=5) for f in first + rest]
        assert [o for o, _ in outs] == [v * 10 for v in range(10)]
        assert sizes == [1, 8, 1]
    finally:
        batcher.stop()
