"""Serving a sequence network: attached to the current version as a child, gated on held-out
fields read as workers read them, current only when it reads more of them exactly. Real Redis,
real (untrained) networks; the promoting case scores with a stand-in so that it needs no
trained line reader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.synth import load_mnist
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


def test_a_line_readers_int8_agreement_is_measured_for_it_and_never_inherited(redis_url: str, mnist_root: Path) -> None:
    """Workers serve int8 lines only on a measured agreement: the child's is its own line
    reader's, measured on the gate's lines with the parent's calibration digits."""
    registry = Registry(connect(redis_url), Keys())
    images, _ = load_mnist(mnist_root, train=True)
    digits = torch.from_numpy(images[:64]).float()[:, None] / 255
    stale = {"val_accuracy": 0.5, "line_int8_agreement": 0.125}  # another line reader's figure
    registry.publish(artifact.dump(network.build(), digits), version_meta(status="promoted", metrics=stale))
    torch.manual_seed(0)
    outcome = seqpublish.publish(
        Settings(redis_url=redis_url), registry, build(), seqpublish.gate_pool(mnist_root, 300), 10
    )
    info, _ = registry.weights(outcome["version"])
    agreement = info.metrics["line_int8_agreement"]
    assert 0.0 <= agreement <= 1.0 and agreement != 0.125
    # Without calibration digits nothing can be measured, and nothing is carried over either.
    registry.publish(untrained_weights(2), version_meta(status="promoted", metrics=stale), make_current=True)
    outcome = seqpublish.publish(
        Settings(redis_url=redis_url), registry, build(), seqpublish.gate_pool(mnist_root, 300), 10
    )
    assert "line_int8_agreement" not in registry.weights(outcome["version"])[0].metrics
