"""The model registry against a real Redis server: publish, list, current pointer, fresh-process load."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import redis
import torch

from config import ArtifactCorruptError, VersionNotFoundError
from recognizer import artifact, network
from storage.connection import connect
from storage.keys import Keys
from storage.registry import Registry, VersionInfo


@pytest.fixture()
def registry(redis_url: str) -> Registry:
    return Registry(connect(redis_url), Keys("inkq"))


def weights(seed: int) -> bytes:
    torch.manual_seed(seed)
    return artifact.dump(network.build())


def test_empty_registry_has_no_current(registry: Registry) -> None:
    assert registry.current() is None
    assert registry.versions() == []
    with pytest.raises(VersionNotFoundError, match="trainer train"):
        registry.weights()


def test_publish_list_and_current(registry: Registry) -> None:
    v1 = registry.publish(weights(1), VersionInfo(arch=network.DEFAULT_ARCH, metrics={"test_accuracy": 0.9}))
    v2 = registry.publish(weights(2), VersionInfo(parent=v1.version), make_current=False)
    assert (v1.version, v2.version) == ("v1", "v2")
    assert registry.current() == "v1"
    assert [i.version for i in registry.versions()] == ["v1", "v2"]
    assert registry.info("v2").parent == "v1"
    assert registry.info().metrics == {"test_accuracy": 0.9}
    registry.set_current("v2")
    assert registry.current() == "v2"
    with pytest.raises(VersionNotFoundError):
        registry.set_current("v9")
    assert registry.current() == "v2"


def test_publish_announces_the_new_current_version(registry: Registry) -> None:
    pubsub = registry.redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(registry.keys.model_events)
    pubsub.get_message(timeout=1)
    registry.publish(weights(1), VersionInfo())
    message = pubsub.get_message(timeout=5)
    assert message is not None and message["data"] == b"v1"


def test_corrupt_weights_are_refused(registry: Registry) -> None:
    info = registry.publish(weights(1), VersionInfo())
    registry.redis.setrange(registry.keys.model_weights(info.version), 100, b"garbage")
    with pytest.raises(ArtifactCorruptError, match="checksum"):
        registry.weights(info.version)


def test_weights_round_trip_without_pickle() -> None:
    torch.manual_seed(3)
    model = network.build()
    restored = artifact.load_into(network.build(), artifact.dump(model))
    for (k, a), b in zip(model.state_dict().items(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(ArtifactCorruptError):
        artifact.load_into(network.build({"num_classes": 5}), artifact.dump(model))


def test_fresh_process_with_only_the_url_loads_the_current_model(registry: Registry, redis_url: str) -> None:
    torch.manual_seed(4)
    model = network.build().eval()
    registry.publish(artifact.dump(model), VersionInfo(arch=network.DEFAULT_ARCH, temperature=2.0))
    x = torch.randn(2, 1, 28, 28)
    expected = (model(x) / 2.0).tolist()
    script = textwrap.dedent(f"""
        import json, sys, torch
        from config import Settings
        from recognizer.engine import engine_for
        from storage.connection import connect
        from storage.keys import Keys
        from storage.registry import Registry
        settings = Settings(redis_url={redis_url!r}, compile=False, precision="fp32")
        info, weights = Registry(connect(settings.redis_url), Keys()).weights()
        engine = engine_for(info, weights, settings)
        x = torch.tensor(json.loads(sys.stdin.read()))
        print(json.dumps({{"version": info.version, "logits": engine.logits(x).tolist()}}))
    """)
    out = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(x.tolist()),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["version"] == "v1"
    assert torch.allclose(torch.tensor(result["logits"]), torch.tensor(expected), atol=1e-4)


def test_unreachable_redis_is_a_clear_error() -> None:
    from config import StoreUnavailableError

    with pytest.raises(StoreUnavailableError, match="cannot reach Redis"):
        connect("redis://:secret@127.0.0.1:1/0", timeout=0.5)
    try:
        connect("redis://:secret@127.0.0.1:1/0", timeout=0.5)
    except StoreUnavailableError as exc:
        assert "secret" not in str(exc)


def test_redis_client_type() -> None:
    assert isinstance(connect("redis://127.0.0.1:1/0", check=False), redis.Redis)
