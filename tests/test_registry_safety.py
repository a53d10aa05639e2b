"""The registry's safety rails against a real Redis: fencing, conflicts, rollback watermarks,
retention, version names that never repeat, and the train gate."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis

from config import Settings, VersionNotFoundError
from config.errors import LockLostError, RegistryConflictError
from recognizer import artifact, network
from storage import lock as locking
from storage.connection import connect
from storage.keys import Keys
from storage.labels import Labels
from storage.lock import LockHeldError, acquire
from storage.registry import Registry, VersionInfo, VersionStatus
from storage.retention import to_keep
from tests.conftest import BIN, wait_for
from tests.models import untrained_weights as real_weights
from tests.models import version_meta as meta


@pytest.fixture()
def registry(redis_url: str) -> Registry:
    return Registry(connect(redis_url), Keys("inkq"))


def weights(seed: int) -> bytes:
    """Stand-in weights: the registry stores and checks bytes, it never loads them."""
    return f"weights {seed} ".encode() * 64


def test_two_promotions_from_the_same_parent_are_impossible(registry: Registry) -> None:
    v1 = registry.publish(weights(1), meta(status=VersionStatus.PROMOTED)).version
    # A stalls with the lock (no renewal) until it expires; B takes the lock and promotes a child of v1.
    stalled = acquire(registry.redis, registry.keys.retrain_lock, registry.keys.registry_fence, 0.2, "retrain")
    wait_for(lambda: not registry.redis.exists(registry.keys.retrain_lock), 5, "the stalled lock to expire")
    with registry.lock(30, "retrain") as lease:
        assert lease.token > stalled.token
        child = dict(parent=v1, status=VersionStatus.PROMOTED)
        v2 = registry.publish(weights(2), meta(**child), token=lease.token, expect_current=v1, check_current=True)
        # A wakes up and publishes its own promotion from v1: fenced, nothing written.
        with pytest.raises(LockLostError, match="lost the registry lock"):
            registry.publish(weights(3), meta(**child), token=stalled.token, expect_current=v1, check_current=True)
    assert registry.current() == v2.version
    assert [v.version for v in registry.versions()] == [v1, v2.version]
    # Even without any lock, a promotion judged against v1 cannot land once v1 is no longer current.
    with pytest.raises(RegistryConflictError, match=f"current model is {v2.version}, not {v1}"):
        registry.publish(weights(4), meta(parent=v1), expect_current=v1, check_current=True)
    assert registry.current() == v2.version


def test_rollback_during_a_retrain_is_not_undone(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = registry.publish(weights(1), meta()).version
    v2 = registry.publish(weights(2), meta(parent=v1)).version
    with registry.lock(1.5, "retrain") as retrain:
        with pytest.raises(LockHeldError, match="rollback --force"), registry.lock(30, "rollback"):
            pass  # a plain rollback is refused while the retrain runs
        with registry.lock(30, "rollback", force=True) as rollback:
            registry.set_current(v1, token=rollback.token)
            # The retrain's renewer notices the takeover; its publish is refused either way.
            wait_for(retrain.lost.is_set, 5, "the retrain to notice it lost the lock")
            with pytest.raises(LockLostError):
                retrain.check()
            with pytest.raises(LockLostError):
                registry.publish(
                    weights(3), meta(parent=v2), token=retrain.token, expect_current=v2, check_current=True
                )
            assert registry.redis.get(registry.keys.retrain_lock) == str(rollback.token).encode()
    assert registry.current() == v1
    assert [v.version for v in registry.versions()] == [v1, v2]


def test_rollback_cli_refuses_then_forces(registry: Registry, env: dict[str, str]) -> None:
    v1 = registry.publish(weights(1), meta()).version
    v2 = registry.publish(weights(2), meta(parent=v1)).version

    def rollback(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "trainer"), "rollback", *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    with registry.lock(30, "retrain"):
        refused = rollback()
        assert refused.returncode == 1 and "another train, retrain or rollback is running" in refused.stderr
        assert registry.current() == v2
        forced = rollback("--force")
        assert forced.returncode == 0, forced.stderr
        assert f"current model: {v1} (was {v2})" in forced.stdout
    assert registry.current() == v1


def test_lock_renewal_retries_transient_failures(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locking, "RETRY_S", 0.1)
    failures = [redis.ConnectionError("blip"), redis.TimeoutError("slow")]

    class Flaky(redis.Redis):  # a real client whose first two renewals fail in transit
        def eval(self, script: str, numkeys: int, *args: Any) -> Any:
            if "PEXPIRE" in script and failures:
                raise failures.pop(0)
            return super().eval(script, numkeys, *args)

    client = Flaky.from_url(redis_url)
    with locking.held(client, "inkq:test-lock", "inkq:test-fence", 1.2, "retrain") as lease:
        wait_for(lambda: not failures, 5, "both renewal failures")
        deadline = client.pttl("inkq:test-lock")
        wait_for(lambda: client.pttl("inkq:test-lock") > deadline, 5, "a renewal after the failures")
        assert not lease.lost.is_set()
        lease.check()


def test_a_lock_deleted_under_its_holder_is_lost(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    with locking.held(client, "inkq:test-lock", "inkq:test-fence", 1.5, "train") as lease:
        client.delete("inkq:test-lock")
        wait_for(lease.lost.is_set, 5, "the renewer to notice")
        with pytest.raises(LockLostError, match="lost the lock"):
            lease.check()


def test_rollback_resets_the_label_watermarks(registry: Registry) -> None:
    labels = Labels(registry.redis, registry.keys)
    labels.add([(f"d{i}", b"x", i % 10, f"{i}.png") for i in range(6)], source="test")
    v1 = registry.publish(weights(1), meta(labels_upto=0)).version
    v2 = registry.publish(weights(2), meta(parent=v1, labels_upto=6)).version
    assert (labels.watermark("used"), labels.watermark("tried")) == (6, 6)
    labels.add([("late", b"x", 1, "late.png")], source="test")
    assert registry.set_current(v1).labels_upto == 0
    assert (labels.watermark("used"), labels.watermark("tried")) == (0, 0)
    assert len(labels.since(labels.watermark("used"))) == 7  # what v2 learned is to be learned again
    registry.set_current(v2)
    assert labels.watermark("used") == 6
    # Versions stored before labels_upto existed: it is read from their training record.
    assert VersionInfo.from_json('{"version": "v0", "training": {"labels_upto": 4}}').labels_upto == 4


def test_retention_keeps_current_ancestors_and_newest(registry: Registry) -> None:
    rejected = dict(status=VersionStatus.REJECTED)
    v1 = registry.publish(weights(1), meta()).version
    v2 = registry.publish(weights(2), meta(parent=v1)).version
    v3 = registry.publish(weights(3), meta(parent=v2, **rejected), make_current=False).version
    v4 = registry.publish(weights(4), meta(), make_current=False).version  # unrelated, older than the last
    v5 = registry.publish(weights(5), meta(parent=v2)).version
    v6 = registry.publish(weights(6), meta(parent=v5, **rejected), make_current=False).version
    assert to_keep(registry.versions(), v5, 1) == {v5, v2, v1}
    assert sorted(registry.prune(keep_last=1)) == sorted([v3, v4, v6])
    assert registry.prune(keep_last=1) == []  # idempotent
    listed = {v.version: v for v in registry.versions()}
    assert [listed[v].pruned for v in (v1, v2, v3, v4, v5, v6)] == [False, False, True, True, False, True]
    assert listed[v3].status == VersionStatus.REJECTED and listed[v3].sha256  # metadata stays
    for gone in (v3, v4, v6):
        assert not registry.redis.exists(registry.keys.model_weights(gone))
        with pytest.raises(VersionNotFoundError, match="no weights"):
            registry.set_current(gone)
    registry.weights(v1)  # ancestors still load
    assert registry.current() == v5


def test_version_names_never_repeat_when_the_counter_is_lost(registry: Registry) -> None:
    names = [registry.publish(weights(i), meta()).version for i in (1, 2)]
    registry.redis.delete(registry.keys.model_sequence)
    names.append(registry.publish(weights(3), meta()).version)
    assert names == ["v1", "v2", "v3"]
    assert registry.info("v1").sha256 != registry.info("v3").sha256


@pytest.mark.slow
def test_train_gate(registry: Registry, mnist_root: Path) -> None:
    from trainer.base import accuracy, gate
    from trainer.data import load_split

    test, _ = load_split(mnist_root, train=False, limit=200)
    settings = Settings(base_tolerance=0.01)
    promoted, reason, judged = gate(settings, registry, test, 0.5, False)
    assert promoted and judged is None and "no current model" in reason
    current = registry.publish(real_weights(1), meta()).version
    theirs = accuracy(artifact.load_into(network.build(), real_weights(1)), test)
    promoted, reason, judged = gate(settings, registry, test, theirs - 0.005, False)
    assert (promoted, judged) == (True, current) and f"{theirs:.4f}" in reason
    promoted, reason, _ = gate(settings, registry, test, theirs - 0.02, False)
    assert not promoted and reason.startswith("worse than the current model")
    promoted, reason, _ = gate(settings, registry, test, theirs - 0.02, True)
    assert promoted and "--make-current" in reason
    registry.redis.delete(registry.keys.model_weights(current))  # an unreadable current model
    promoted, reason, _ = gate(settings, registry, test, 0.99, False)
    assert not promoted and "could not be scored" in reason


def test_prune_and_versions_cli(registry: Registry, env: dict[str, str]) -> None:
    v1 = registry.publish(weights(1), meta()).version
    v2 = registry.publish(weights(2), meta(parent=v1, status=VersionStatus.REJECTED), make_current=False).version

    def trainer(*args: str) -> str:
        run = subprocess.run(
            [str(BIN / "trainer"), *args], check=False, env=env, capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        return run.stdout

    assert f"pruned 1 version(s): {v2}" in trainer("prune")
    assert "nothing to prune" in trainer("prune", "--keep", "0")  # the current version always stays
    listed = trainer("versions")
    assert f"{v2} " in listed and "rejected  pruned" in listed
