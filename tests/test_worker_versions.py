"""A worker's choice of model versions, in process against a real Redis: preprocessing checks,
permanent and transient refusals with backoff, versions told apart by SHA-256, and the eager
fallback reported in the heartbeat."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
import torch

from config import ArtifactCorruptError, Settings
from recognizer import network, scan
from recognizer.engine import Engine
from storage.registry import VersionInfo
from tests.models import untrained_weights as weights
from tests.models import version_meta as meta
from worker import heap
from worker.batchrun import MISSING_IMAGE
from worker.replica import Replica
from worker.upgrade import compiles_beside
from worker.versions import MAX_RETRY_S, Refusals, is_transient


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def replica(redis_url: str) -> Iterator[Replica]:
    settings = Settings(redis_url=redis_url, compile=False, precision="fp32", device="cpu", buckets=(1,), max_batch=1)
    from storage.connection import connect
    from storage.keys import Keys
    from storage.registry import Registry

    Registry(connect(redis_url), Keys()).publish(weights(1), meta())
    worker = Replica(settings)
    worker.hostname = "test-worker"
    yield worker
    worker.close()


def heartbeat(worker: Replica) -> dict[str, object]:
    worker._beat()
    return dict(json.loads(worker.redis.get(worker.keys.worker(worker.hostname)) or b"{}"))


def test_refuses_preprocessing_it_does_not_implement(replica: Replica) -> None:
    v2 = replica.registry.publish(weights(2), meta(preprocess_version="other-box/9")).version
    assert not replica.maybe_switch(None)
    assert replica.engine.version == "v1"
    reason = str(heartbeat(replica)["refused"][v2])  # type: ignore[index]
    assert "PreprocessMismatchError" in reason and "other-box/9" in reason and scan.PREPROCESS_VERSION in reason
    assert not replica.refusals.may_try(v2, replica.registry.info(v2).sha256)  # permanent


def test_corrupt_weights_stay_refused(replica: Replica) -> None:
    clock = Clock()
    replica.refusals = Refusals(clock)
    v2 = replica.registry.publish(weights(2), meta()).version
    replica.redis.setrange(replica.keys.model_weights(v2), 1000, b"\x00" * 64)
    assert not replica.maybe_switch(None)
    clock.now += 10 * MAX_RETRY_S
    assert not replica.refusals.may_try(v2, replica.registry.info(v2).sha256)
    assert "checksum" in replica.refused[v2] and "transient" not in replica.refused[v2]


def test_transient_failure_is_retried_with_backoff(replica: Replica, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    replica.refusals = Refusals(clock)
    v2 = replica.registry.publish(weights(2), meta()).version
    real = replica.registry.weights
    blips = [redis.ConnectionError("connection reset"), redis.TimeoutError("timed out")]

    def flaky(version: str | None = None) -> tuple[VersionInfo, bytes]:
        if blips:
            raise blips.pop(0)
        return real(version)

    monkeypatch.setattr(replica.registry, "weights", flaky)
    assert not replica.maybe_switch(v2)
    assert "transient" in replica.refused[v2] and "attempt 1" in replica.refused[v2]
    assert not replica.maybe_switch(v2)  # backing off: not even tried
    assert len(blips) == 1
    clock.now += 2.5
    assert not replica.maybe_switch(v2)  # second try, fails again; the wait doubles
    assert "attempt 2" in replica.refused[v2]
    clock.now += 2.5
    assert not replica.maybe_switch(v2)  # still backing off (4 s)
    clock.now += 2.0
    assert replica.maybe_switch(v2)
    assert replica.engine.version == v2 and v2 not in heartbeat(replica)["refused"]  # type: ignore[operator]


def test_same_name_other_weights_is_a_new_version(replica: Replica, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis lost everything and the registry starts again at v1: the worker compares weights too."""
    settled: list[str] = []
    monkeypatch.setattr(heap, "settle", settled.append)
    old_sha = replica.serving[1]
    replica.redis.flushdb()
    replica.registry.publish(weights(7), meta())
    assert replica.maybe_switch(None)
    assert replica.serving[0] == "v1" and replica.serving[1] != old_sha
    assert settled == ["serving v1"], "a switch settles the heap, freeing the old engine's cycles"
    assert not replica.maybe_switch(None)  # and then it is the one serving


def test_classification() -> None:
    assert is_transient(redis.ConnectionError("down")) and is_transient(TimeoutError())
    assert not is_transient(ArtifactCorruptError("checksum")) and not is_transient(ValueError("unknown arch"))


def test_eager_fallback_is_in_the_heartbeat(replica: Replica) -> None:
    beat = heartbeat(replica)
    assert beat["compile_fallback"] is None
    assert beat["engine_source"] == "eager" and beat["packages"] is None  # nothing compiled, nothing to package
    engine = Engine(network.build(), compile=False, buckets=(1,), precision="fp32", version="v1")

    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("inductor: no C compiler found\nlong trace")

    engine._forward, engine.compiled = broken, True  # what a failed torch.compile looks like at warm-up
    engine.warm()
    assert not engine.compiled
    replica.engine = engine
    assert heartbeat(replica)["compile_fallback"] == "RuntimeError: inductor: no C compiler found"


def test_a_start_from_packages_switches_to_the_engine_compiled_beside_them(replica: Replica) -> None:
    # worker/upgrade.py: the packages serve first; the compiled engine takes over when it is warm,
    # only while the version it was compiled for still serves.
    replica.engine.source = "aot"  # as if started from packages
    first = replica.engine
    compiled = Engine(network.build(), compile=False, buckets=(1,), precision="fp32", version="v1")
    compiled.source = "compiled"
    replica.upgrade.start("v1", lambda: compiled, lambda e: replica._adopt(e, ("v1", "another sha")))
    assert replica.upgrade.done.wait(30) and replica.engine is first  # another version's compile: ignored
    assert replica.upgrade.status == "v1 no longer serving"
    replica.upgrade.start("v1", lambda: compiled, lambda e: replica._adopt(e, replica.serving))
    assert replica.upgrade.done.wait(30) and replica.engine is compiled
    assert heartbeat(replica)["packages"] == "switched v1 to the compiled engine"
    ((served, _),) = [f.result(timeout=30) for f in replica.batcher.submit(["no such image"])]
    assert served.error == MISSING_IMAGE  # and the batcher goes on serving, now on the new engine


def test_a_failed_compile_beside_the_packages_keeps_them(replica: Replica) -> None:
    replica.engine.source = "aot"
    first = replica.engine

    def broken() -> Engine:
        raise RuntimeError("inductor: no C compiler found")

    replica.upgrade.start("v1", broken, lambda e: replica._adopt(e, replica.serving))
    assert replica.upgrade.done.wait(30) and replica.engine is first
    assert str(replica.upgrade.status).startswith("failed v1 (RuntimeError: inductor: no C compiler found")
    eager = Engine(network.build(), compile=False, buckets=(1,), precision="fp32", version="v1")
    replica.upgrade.start("v1", lambda: eager, lambda e: replica._adopt(e, replica.serving))
    assert replica.upgrade.done.wait(30) and replica.engine is first  # compiling fell back to eager
    assert str(replica.upgrade.status).startswith("kept packages for v1")


@pytest.mark.parametrize(
    ("source", "int8", "beside"), [("aot", False, True), ("aot", True, True), ("compiled", True, False)]
)
def test_a_digit_network_from_packages_is_compiled_beside(source: str, int8: bool, beside: bool) -> None:
    engine = Engine(network.build(), precision="fp32", buckets=(1,), compile=False)
    engine.source, engine.int8 = source, int8
    assert compiles_beside(engine) is beside
