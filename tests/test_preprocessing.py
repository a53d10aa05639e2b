"""Preprocessing in a pool of real processes: the same inputs as in the caller's thread, in
order, each image's failure its own, and a process that dies costing only its image."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bench.synth import write_digits
from recognizer.preprocessing import (
    FIELD_POOL_MIN_BATCH,
    POOL_MIN_BATCH,
    PROCESS_DIED,
    Outcome,
    Preprocessor,
    _prepare_chunk,
    auto_workers,
)
from tests.conftest import MnistArrays

MAX_BYTES, MAX_PIXELS = 1 << 20, 1 << 22
KILLER = b"kill the process that reads me"


def dies_on_killer(blobs: list[bytes], max_bytes: int, max_pixels: int) -> list[Outcome]:
    """Preprocessing as usual, except that a process handed KILLER dies at once, as a decoder
    crash or the OOM killer would end it."""
    if KILLER in blobs:
        os._exit(3)
    return _prepare_chunk(blobs, max_bytes, max_pixels)


@pytest.fixture(scope="module")
def blobs(mnist_test: MnistArrays, tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    images, labels = mnist_test
    truth = write_digits(tmp_path_factory.mktemp("digits"), images[:40], labels[:40])
    return [Path(path).read_bytes() for path in sorted(truth)]


@pytest.mark.timeout(120)
def test_a_pool_prepares_exactly_what_the_thread_does_in_order(blobs: list[bytes]) -> None:
    batch = [*blobs[:10], b"", b"not an image", *blobs[10:]]
    inline = Preprocessor(0, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS).map(batch)
    pool = Preprocessor(2, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    try:
        pooled = pool.map(batch)
        assert len(pool.pids) == 2 and os.getpid() not in pool.pids
    finally:
        pool.close()
    assert len(pooled) == len(batch)
    assert [o.error for o in pooled] == [o.error for o in inline]
    assert pooled[10].error == "image file is empty" and "not a readable image" in (pooled[11].error or "")
    for a, b in zip(inline, pooled, strict=True):
        if a.input is not None:
            assert isinstance(a.input, np.ndarray) and isinstance(b.input, np.ndarray)
            assert np.array_equal(a.input, b.input)


@pytest.mark.timeout(180)
def test_a_process_that_dies_fails_only_its_image(blobs: list[bytes]) -> None:
    batch = [*blobs[:20], KILLER, *blobs[20:30]]
    pool = Preprocessor(2, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, task=dies_on_killer)
    try:
        first = pool.pids
        outcomes = pool.map(batch)
        assert pool.rebuilds >= 1 and pool.pids.isdisjoint(first)
        again = pool.map(blobs[:POOL_MIN_BATCH])  # the rebuilt pool serves the next batch
    finally:
        pool.close()
    assert [i for i, o in enumerate(outcomes) if o.error] == [20]
    assert outcomes[20].error == PROCESS_DIED.format("its process exited abruptly")
    expected = Preprocessor(0, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS).map(blobs[:30])
    kept = outcomes[:20] + outcomes[21:]
    assert all(np.array_equal(a.input, b.input) for a, b in zip(expected, kept, strict=True))  # type: ignore[arg-type]
    assert all(o.error is None for o in again)


def which_process(blobs: list[bytes], max_bytes: int, max_pixels: int) -> list[Outcome]:
    return [Outcome(None, str(os.getpid()), 0.0) for _ in blobs]


@pytest.mark.timeout(120)
def test_small_batches_stay_in_the_callers_thread() -> None:
    pool = Preprocessor(2, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, task=which_process)
    try:
        small = {o.error for o in pool.map([b"x"] * (POOL_MIN_BATCH - 1))}
        large = {o.error for o in pool.map([b"x"] * POOL_MIN_BATCH * 4)}
    finally:
        pool.close()
    assert small == {str(os.getpid())}
    assert large and {int(pid) for pid in large if pid} <= pool.pids


@pytest.mark.timeout(120)
def test_a_batch_takes_the_task_and_threshold_it_is_given() -> None:
    # How a worker prepares field images: their own task, and the pool from two of them.
    pool = Preprocessor(2, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    try:
        one = {o.error for o in pool.map([b"x"], which_process, FIELD_POOL_MIN_BATCH)}
        two = {o.error for o in pool.map([b"x"] * FIELD_POOL_MIN_BATCH, which_process, FIELD_POOL_MIN_BATCH)}
        first = pool.pids
        batch = [b"", KILLER, b"x" * 10]
        dead = pool.map(batch, dies_on_killer, FIELD_POOL_MIN_BATCH)  # isolation runs the batch's own task
    finally:
        pool.close()
    assert one == {str(os.getpid())} and two and {int(pid or 0) for pid in two} <= first
    assert [o.error for o in dead][1] == PROCESS_DIED.format("its process exited abruptly")
    assert dead[0].error == "image file is empty" and dead[2].error


def test_auto_pool_size_leaves_the_cores_to_the_model_on_a_cpu() -> None:
    assert auto_workers("cpu", cores=16) == 0
    assert auto_workers("cuda", cores=16) == 14
    assert auto_workers("cuda", cores=2) == 1


@pytest.mark.timeout(180)
def test_a_pool_broken_by_the_last_image_of_a_batch_serves_the_next_batch(blobs: list[bytes]) -> None:
    # Every image kills its process: the last one tried alone leaves the pool broken behind it.
    pool = Preprocessor(2, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, task=dies_on_killer)
    try:
        dead = pool.map([KILLER] * POOL_MIN_BATCH)
        again = pool.map(blobs[:POOL_MIN_BATCH])
    finally:
        pool.close()
    assert all(o.error == PROCESS_DIED.format("its process exited abruptly") for o in dead)
    assert len(again) == POOL_MIN_BATCH and all(o.error is None for o in again)
