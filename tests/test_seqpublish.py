"""Serving a sequence network: attached to the current version as a child, gated on held-out
fields read as workers read them, current only when it reads more of them exactly. Real Redis,
real (untrained) networks; the promoting case scores with a stand-in so that it needs no
trained line reader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from config.settings import Settings
from recognizer import artifact, network
from recognizer.engine import Engine
from recognizer.sequence import build
from storage.connection import connect
from storage.keys import Keys
from storage.registry import Registry
from tests.models import untrained_weights, version_meta
from trainer import seqpublish


@pytest.fixture()
def registry(redis_url: str) -> Registry:
    registry = Registry(connect(redis_url), Keys())
    registry.publish(untrained_weights(1), version_meta(status="promoted", metrics={"val_accuracy": 0.5}))
    return registry


def test_a_line_reader_that_reads_no_better_is_kept_but_not_served(
    registry: Registry, redis_url: str, mnist_root: Path
) -> None:
    torch.manual_seed(0)
    pool = seqpublish.gate_pool(mnist_root, 300)
    outcome = seqpublish.publish(Settings(redis_url=redis_url), registry, build(), pool, 10)
    assert (outcome["version"], outcome["parent"], outcome["promoted"]) == ("v2", "v1", False)
    assert set(outcome["before"]) == set(outcome["after"]) == {"free", "comb"}
    assert registry.current() == "v1"
    info, data = registry.weights("v2")
    assert info.status == "rejected" and "not better" in info.reason and info.parent == "v1"
    assert info.metrics["val_accuracy"] == 0.5 and "fields_free_exact_before" in info.metrics
    _, parent = registry.weights("v1")
    assert artifact.sequence_state(parent) is None and artifact.sequence_state(data) is not None
    assert artifact.load_into(network.build(), data) is not None  # the digit network, as it was
    assert all(torch.equal(a, b) for a, b in zip(state(parent).values(), state(data).values(), strict=True))


def test_a_better_line_reader_becomes_current_and_workers_build_it(
    registry: Registry, redis_url: str, mnist_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def stand_in(engine: Engine, pool: object, count: int) -> dict[str, float]:
        return {"free": 90.0 if engine.sequence is not None else 60.0, "comb": 85.0}

    monkeypatch.setattr(seqpublish, "score", stand_in)
    outcome = seqpublish.publish(
        Settings(redis_url=redis_url), registry, build(), seqpublish.gate_pool(mnist_root, 50), 10
    )
    assert outcome["promoted"] and registry.current() == "v2"
    info, data = registry.weights()
    assert info.status == "promoted" and "free 60.0% -> 90.0%" in info.reason
    assert Engine.from_weights(data, info.arch, compile=False).sequence is not None


def state(data: bytes) -> dict[str, torch.Tensor]:
    return artifact.load_into(network.build(), data).state_dict()
