"""worker/heap.py: what is garbage when a worker settles is collected, what is alive is frozen
out of the collector's walks, and garbage made afterwards is still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from worker import heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test session collects as usual


def test_settle_collects_garbage_and_freezes_the_living() -> None:
    before = cycle()  # garbage before the settle: collected by it, never frozen
    kept = Node()
    kept.other = kept  # alive: frozen
    heap.settle("test")
    assert before() is None and gc.get_freeze_count() > 0
    assert kept not in gc.get_objects(), "a frozen object is still in the collector's generations"
    after = cycle()  # garbage made later is collected as before
    gc.collect()
    assert after() is None


def test_a_later_settle_reclaims_cycles_that_were_frozen() -> None:
    old = Node()
    old.other = old
    probe = weakref.ref(old)
    heap.settle("first engine")
    del old  # the old engine's last reference goes: its cycle is frozen, so no collection finds it
    gc.collect()
    assert probe() is not None
    heap.settle("second engine")  # a switch: unfreeze, collect, freeze again
    assert probe() is None
